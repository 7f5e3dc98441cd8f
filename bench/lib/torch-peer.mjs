// Runs the PyTorch peer (bench/peers/torch_layer.py) as a child process.
//
// The peer needs Debian's python3-torch under /usr/bin/python3 and the OpenMP build of OpenBLAS
// unpacked by bench/peers/setup-torch.sh into bench/peers/.openblas-openmp (put on LD_LIBRARY_PATH
// of the child only; Debian's torch otherwise falls back to a BLAS that makes the peer 2-40x slower,
// which would prove nothing). Overrides: RT_TORCH_PYTHON (the interpreter), RT_TORCH_BLAS_DIR (the
// directory for LD_LIBRARY_PATH).
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const peersDir = join(dirname(fileURLToPath(import.meta.url)), '..', 'peers');
export const peerScript = join(peersDir, 'torch_layer.py');

function findFile(dir, name, depth = 6) {
  if (depth < 0 || !existsSync(dir)) return undefined;
  for (const e of readdirSync(dir)) {
    const p = join(dir, e);
    if (e === name && p.includes('openblas-openmp')) return p;
    if (statSync(p, { throwIfNoEntry: false })?.isDirectory()) {
      const f = findFile(p, name, depth - 1);
      if (f) return f;
    }
  }
  return undefined;
}

/**
 * Where and how the peer can run: { ok: true, python, blasDir, torch } or { ok: false, why }.
 */
export function locateTorchPeer() {
  const python = process.env.RT_TORCH_PYTHON || '/usr/bin/python3';
  const probe = spawnSync(python, ['-c', 'import torch; print(torch.__version__)'], { encoding: 'utf8' });
  if (probe.status !== 0) {
    return { ok: false, why: `python3-torch is not installed for ${python} (run bench/peers/setup-torch.sh)` };
  }
  let blasDir = process.env.RT_TORCH_BLAS_DIR;
  if (!blasDir) {
    const lib = findFile(join(peersDir, '.openblas-openmp'), 'libblas.so.3');
    if (!lib) {
      return {
        ok: false,
        why: 'the OpenMP OpenBLAS for the torch peer is missing (run bench/peers/setup-torch.sh)',
      };
    }
    blasDir = dirname(lib);
  }
  return { ok: true, python, blasDir, torch: probe.stdout.trim() };
}

/**
 * Runs one timing of the peer; returns its parsed JSON line.
 * @param {ReturnType<typeof locateTorchPeer>} peer
 * @param {Record<string, string|number|boolean>} args  e.g. { d: 384, heads: 6, window: 16, ... }
 */
export function runTorchPeer(peer, args) {
  const argv = [peerScript];
  for (const [k, v] of Object.entries(args)) {
    if (v === true) argv.push(`--${k}`);
    else if (v !== false && v !== undefined) argv.push(`--${k}`, String(v));
  }
  const threads = String(args.threads ?? 2);
  const env = {
    ...process.env,
    LD_LIBRARY_PATH: [peer.blasDir, process.env.LD_LIBRARY_PATH].filter(Boolean).join(':'),
    OMP_NUM_THREADS: threads,
  };
  const out = execFileSync(peer.python, argv, { env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  const line = out.trim().split('\n').pop();
  return JSON.parse(line);
}
