// The launcher when the first worker to fail exits with PEER_FAILURE_EXIT_CODE (75: "another rank failed"):
// it waits a short grace period for the rank that really failed and names that one (its code, its stderr),
// then stops the rest; a real failure first still stops the rest at once, and a hang still ends.
// Fake ranks (plain node scripts, no addon): the order of exits is forced through the ranks' stdin, written
// by the test when it sees rank 0's exit, so nothing here depends on timing or load.
import type { ChildProcess } from 'node:child_process'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { beforeAll, describe, expect, it } from 'vitest'
import { launch, PEER_FAILURE_EXIT_CODE, type LaunchResult } from '../src/distributed/launcher.js'

const RANK = `
  const mode = process.argv[2]
  const rank = Number(process.env.RT_RANK)
  const hang = () => setInterval(() => {}, 1000)
  // Runs fn once the test writes to this rank's stdin (it does so when it sees rank 0 exit).
  const onGo = (fn) => process.stdin.once('data', fn)
  const peer = () => { process.stderr.write('rank ' + rank + ': stopped because rank 1 failed\\n'); process.exit(${PEER_FAILURE_EXIT_CODE}) }
  const real = () => { process.stderr.write('rank ' + rank + ': the real failure\\n'); process.exit(1) }
  if (mode === 'peer-first') {
    if (rank === 0) peer()
    else if (rank === 1) onGo(real)
    else hang()
  } else if (mode === 'peer-first-signal') {
    if (rank === 0) peer()
    else if (rank === 1) onGo(() => process.kill(process.pid, 'SIGKILL'))
    else hang()
  } else if (mode === 'peer-hang') {
    if (rank === 0) peer()
    else hang()
  } else if (mode === 'peer-all') {
    if (rank === 0) peer()
    else onGo(peer)
  } else if (mode === 'real-first') {
    if (rank === 1) real()
    else hang()
  }
`

async function run(script: string, mode: string, peerFailureGraceMs?: number) {
  const children = new Map<number, ChildProcess>()
  const stderr = new Map<number, string>()
  const exitedAt = new Map<number, number>()
  const t0 = Date.now()
  const result: LaunchResult = await launch({
    gpus: 3, script, args: [mode], execArgv: [], stdio: 'pipe', killAfterMs: 2000,
    ...(peerFailureGraceMs !== undefined ? { peerFailureGraceMs } : {}),
    onSpawn: (rank: number, child: ChildProcess) => {
      children.set(rank, child)
      stderr.set(rank, '')
      child.stderr!.on('data', (d) => stderr.set(rank, stderr.get(rank)! + String(d)))
      child.stdin!.on('error', () => {}) // a rank that is gone when the test writes to it
      // Registered before the launcher's own listener: rank 0's exit is seen by the launcher before any
      // other rank is told to go on.
      child.once('exit', () => {
        exitedAt.set(rank, Date.now())
        if (rank === 0) for (const [r, c] of children) if (r !== 0 && c.exitCode === null && c.signalCode === null) c.stdin!.write('go\n')
      })
    },
  })
  return { result, stderr, exitedAt, seconds: (Date.now() - t0) / 1000 }
}

const codes = (r: LaunchResult) => r.exits.map((e) => [e.rank, e.code, e.signal])

describe('launcher: a peer-failure exit (75) first is not taken for the cause', () => {
  let script: string
  beforeAll(() => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rt-launch-peer-'))
    script = path.join(dir, 'rank.mjs')
    fs.writeFileSync(script, RANK)
  })

  it('names the rank that really failed (code 1) although rank 0 exited with 75 first, then stops the rest', async () => {
    // A long grace: the real failure must end the wait at once, not the timer.
    const { result, stderr, exitedAt, seconds } = await run(script, 'peer-first', 20_000)
    expect(exitedAt.get(0)! <= exitedAt.get(1)!).toBe(true)
    expect(result.code).toBe(1)
    expect(result.failed).toEqual({ rank: 1, localRank: 1, code: 1, signal: null })
    expect(result.message).toBe('rank 1 (local rank 1) exited with code 1; stopped the other 2 workers on this host')
    expect(codes(result)).toEqual([[0, PEER_FAILURE_EXIT_CODE, null], [1, 1, null], [2, null, 'SIGTERM']])
    expect(stderr.get(1)).toBe('rank 1: the real failure\n')
    expect(seconds).toBeLessThan(15)
  })

  it('a rank killed by a signal during the wait is the cause too', async () => {
    const { result } = await run(script, 'peer-first-signal', 20_000)
    expect(result.failed).toEqual({ rank: 1, localRank: 1, code: null, signal: 'SIGKILL' })
    expect(result.message).toBe('rank 1 (local rank 1) was killed by SIGKILL; stopped the other 2 workers on this host')
    expect(result.exits.find((e) => e.rank === 2)!.signal).toBe('SIGTERM')
  })

  it('when no real failure comes, the others are stopped after the grace period and rank 0\'s 75 is reported', async () => {
    const { result, exitedAt, seconds } = await run(script, 'peer-hang', 400)
    expect(result.code).toBe(1)
    expect(result.failed).toEqual({ rank: 0, localRank: 0, code: PEER_FAILURE_EXIT_CODE, signal: null })
    expect(result.message).toBe(`rank 0 (local rank 0) exited with code ${PEER_FAILURE_EXIT_CODE}; stopped the other 2 workers on this host`)
    expect(codes(result)).toEqual([[0, PEER_FAILURE_EXIT_CODE, null], [1, null, 'SIGTERM'], [2, null, 'SIGTERM']])
    // Not stopped before the grace period was over (timers never fire early; 1 ms of rounding allowed).
    for (const r of [1, 2]) expect(exitedAt.get(r)! - exitedAt.get(0)!).toBeGreaterThanOrEqual(399)
    expect(seconds).toBeLessThan(15)
  })

  it('when every other rank exits with 75 too, the job ends without waiting out the grace period', async () => {
    const { result, seconds } = await run(script, 'peer-all', 20_000)
    expect(result.code).toBe(1)
    expect(result.failed).toMatchObject({ rank: 0, code: PEER_FAILURE_EXIT_CODE })
    expect(codes(result)).toEqual([[0, 75, null], [1, 75, null], [2, 75, null]])
    expect(seconds).toBeLessThan(15)
  })

  it('a real failure first still stops the others at once', async () => {
    const { result, seconds } = await run(script, 'real-first', 20_000)
    expect(result.failed).toEqual({ rank: 1, localRank: 1, code: 1, signal: null })
    expect(result.message).toBe('rank 1 (local rank 1) exited with code 1; stopped the other 2 workers on this host')
    expect(codes(result)).toEqual([[0, null, 'SIGTERM'], [1, 1, null], [2, null, 'SIGTERM']])
    expect(seconds).toBeLessThan(15)
  })

  it('rejects a bad peerFailureGraceMs', async () => {
    await expect(launch({ gpus: 1, script, peerFailureGraceMs: -1 })).rejects.toThrow(/peerFailureGraceMs: expected a number of milliseconds >= 0, got -1/)
  })
})
