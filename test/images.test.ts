// Sequential image data: the IDX (Fashion-MNIST) and CIFAR-10 binary readers on small synthetic files
// written in each format, the real Fashion-MNIST files when installed, batches the trainer draws, a
// tiny model that learns a synthetic image task, and `rt train --task cifar10`.

import { spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as fsp from 'node:fs/promises'
import * as os from 'node:os'
import * as path from 'node:path'
import { gzipSync } from 'node:zlib'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ensureCli, ROOT } from './cli-build.js'
import { Rng } from '../src/data/rng.js'
import { CIFAR_RECORD_BYTES, luma601, parseCifarBinary } from '../src/data/images/cifar.js'
import { DEBIAN_FASHION_MNIST_DIR, ImageClassData, openCifar10, openFashionMnist } from '../src/data/images/dataset.js'
import { encodeIdx, parseIdx, readIdx } from '../src/data/images/idx.js'
import { RecurrentTransformer } from '../src/model/transformer.js'
import { train } from '../src/train/trainer.js'


let tmp: string
beforeAll(async () => {
  tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'rt-images-test-'))
})
afterAll(async () => {
  await fsp.rm(tmp, { recursive: true, force: true })
})

/** Image i of a synthetic set: pixel p = (base + 7 i + p) mod 256, so every image is different. */
function syntheticImages(count: number, pixels: number, base: number): Uint8Array {
  const a = new Uint8Array(count * pixels)
  for (let i = 0; i < count; i++) for (let p = 0; p < pixels; p++) a[i * pixels + p] = (base + 7 * i + p) % 256
  return a
}

/** A CIFAR-10 record: label, then the red, green and blue planes. */
function cifarRecord(label: number, r: (p: number) => number, g: (p: number) => number, b: (p: number) => number): Uint8Array {
  const rec = new Uint8Array(CIFAR_RECORD_BYTES)
  rec[0] = label
  for (let p = 0; p < 1024; p++) {
    rec[1 + p] = r(p)
    rec[1025 + p] = g(p)
    rec[2049 + p] = b(p)
  }
  return rec
}

describe('IDX files', () => {
  it('round-trips plain and gzipped files: header, shape and bytes', () => {
    const data = syntheticImages(3, 4 * 5, 11)
    const plain = encodeIdx([3, 4, 5], data)
    // The header as the format defines it, byte by byte.
    expect([...plain.subarray(0, 16)]).toEqual([0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5])
    for (const bytes of [plain, new Uint8Array(gzipSync(plain))]) {
      const x = parseIdx(bytes)
      expect(x.shape).toEqual([3, 4, 5])
      expect([...x.data]).toEqual([...data])
    }
  })

  it('refuses a bad magic number, element type, or size, naming the file', () => {
    const good = encodeIdx([2, 3], new Uint8Array(6))
    const badMagic = good.slice()
    badMagic[1] = 1
    expect(() => parseIdx(badMagic, 'x.idx')).toThrow(/x\.idx: expected an IDX file/)
    const float = good.slice()
    float[2] = 0x0d
    expect(() => parseIdx(float, 'f.idx')).toThrow(/f\.idx: expected element type 0x08.*got 0x0d/)
    expect(() => parseIdx(good.subarray(0, good.length - 1), 't.idx')).toThrow(/t\.idx: shape \[2, 3\] needs 6 bytes of data, the file has 5/)
    expect(() => parseIdx(good.subarray(0, 6), 'h.idx')).toThrow(/h\.idx: header of 2 dimensions needs 12 bytes/)
    expect(() => encodeIdx([2, 2], new Uint8Array(3))).toThrow(/encodeIdx data: expected 4 bytes/)
  })
})

describe('Fashion-MNIST folder (synthetic, in the IDX format)', () => {
  let dir: string
  const rows = 3
  const cols = 4
  const trainImages = syntheticImages(20, rows * cols, 0)
  const trainLabels = Uint8Array.from({ length: 20 }, (_, i) => i % 10)
  const testImages = syntheticImages(6, rows * cols, 100)
  const testLabels = Uint8Array.from({ length: 6 }, (_, i) => 9 - i)

  beforeAll(async () => {
    dir = path.join(tmp, 'fmnist')
    await fsp.mkdir(dir)
    // Train gzipped, test plain: both spellings are read.
    await fsp.writeFile(path.join(dir, 'train-images-idx3-ubyte.gz'), gzipSync(encodeIdx([20, rows, cols], trainImages)))
    await fsp.writeFile(path.join(dir, 'train-labels-idx1-ubyte.gz'), gzipSync(encodeIdx([20], trainLabels)))
    await fsp.writeFile(path.join(dir, 't10k-images-idx3-ubyte'), encodeIdx([6, rows, cols], testImages))
    await fsp.writeFile(path.join(dir, 't10k-labels-idx1-ubyte'), encodeIdx([6], testLabels))
  })

  it('opens both splits with their sizes, and batches are the drawn images and labels', async () => {
    const data = await openFashionMnist(dir)
    expect(data.describe()).toMatchObject({ kind: 'image', name: 'fmnist', pixels: 12, classes: 10, train: 20, test: 6 })
    expect(data.maxSeqLen).toBe(12)
    expect(data.vocabSize).toBe(256)
    for (const split of ['train', 'val'] as const) {
      const rng = new Rng(5)
      const twin = rng.clone()
      const b = data.batch(rng, 8, split, {})
      expect([b.batch, b.seqLen, b.positions]).toEqual([8, 12, 1])
      const [images, labels, n] = split === 'train' ? [trainImages, trainLabels, 20] : [testImages, testLabels, 6]
      for (let r = 0; r < 8; r++) {
        const i = twin.int(0, n - 1)
        expect([...b.tokens.subarray(r * 12, (r + 1) * 12)]).toEqual([...images.subarray(i * 12, (i + 1) * 12)])
        expect(b.targets[r]).toBe(labels[i])
      }
    }
  })

  it('names the missing file and a label/image count mismatch', async () => {
    const bad = path.join(tmp, 'fmnist-bad')
    await fsp.mkdir(bad)
    await expect(openFashionMnist(bad)).rejects.toThrow(/train-images-idx3-ubyte\.gz, train-images-idx3-ubyte found in .*fmnist-bad/)
    for (const f of await fsp.readdir(dir)) await fsp.copyFile(path.join(dir, f), path.join(bad, f))
    await fsp.writeFile(path.join(bad, 't10k-labels-idx1-ubyte'), encodeIdx([5], new Uint8Array(5)))
    await expect(openFashionMnist(bad)).rejects.toThrow(/5 labels for 6 images/)
  })
})

describe('Fashion-MNIST as installed by Debian', () => {
  const present = fs.existsSync(path.join(DEBIAN_FASHION_MNIST_DIR, 'train-labels-idx1-ubyte.gz'))
  if (!present) console.warn(`SKIP: ${DEBIAN_FASHION_MNIST_DIR} not found (apt-get install dataset-fashion-mnist)`)
  it.skipIf(!present)('has the published headers, 6,000 / 1,000 images per class, and an ankle boot (9) first', async () => {
    const labels = await readIdx(path.join(DEBIAN_FASHION_MNIST_DIR, 'train-labels-idx1-ubyte.gz'))
    expect(labels.shape).toEqual([60000])
    expect(labels.data[0]).toBe(9)
    const counts = new Array(10).fill(0)
    for (const l of labels.data) counts[l]++
    expect(counts).toEqual(new Array(10).fill(6000))
    const data = await openFashionMnist()
    expect(data.describe()).toMatchObject({ pixels: 784, classes: 10, train: 60000, test: 10000 })
    const testCounts = new Array(10).fill(0)
    for (let i = 0; i < 10000; i++) testCounts[data.example('val', i).label]++
    expect(testCounts).toEqual(new Array(10).fill(1000))
    expect(data.example('val', 0).label).toBe(9)
    // Grey levels span the byte range (a decoding error would give a narrow or constant range).
    const px = data.example('train', 0).tokens
    expect(Math.min(...px)).toBe(0)
    expect(Math.max(...px)).toBeGreaterThan(200)
  })
})

describe('CIFAR-10 binary format (synthetic)', () => {
  it('converts with BT.601 luma, rounded: Y = floor((299 R + 587 G + 114 B + 500) / 1000)', () => {
    // By hand: 0.299*255 = 76.245; 0.587*255 = 149.685; 0.114*255 = 29.07; 2.99 + 11.74 + 3.42 = 18.15.
    expect(luma601(255, 0, 0)).toBe(76)
    expect(luma601(0, 255, 0)).toBe(150)
    expect(luma601(0, 0, 255)).toBe(29)
    expect(luma601(10, 20, 30)).toBe(18)
    expect(luma601(255, 255, 255)).toBe(255)
    expect(luma601(0, 0, 0)).toBe(0)
  })

  it('reads records: label byte, then red, green and blue planes in that order', () => {
    const a = cifarRecord(3, (p) => (p === 5 ? 255 : 0), () => 0, () => 0)
    const b = cifarRecord(7, () => 0, (p) => (p === 1023 ? 255 : 0), (p) => (p === 0 ? 255 : 0))
    const out = parseCifarBinary(new Uint8Array([...a, ...b]))
    expect(out.count).toBe(2)
    expect([...out.labels]).toEqual([3, 7])
    expect(out.images[5]).toBe(76)
    expect(out.images[4]).toBe(0)
    expect(out.images[1024 + 1023]).toBe(150)
    expect(out.images[1024 + 0]).toBe(29)
    expect(out.images.length).toBe(2048)
  })

  it('refuses a partial record and a label outside 0..9', () => {
    expect(() => parseCifarBinary(new Uint8Array(3072), 'x.bin')).toThrow(/x\.bin: expected a whole number of 3073-byte records, got 3072 bytes/)
    const rec = cifarRecord(10, () => 0, () => 0, () => 0)
    expect(() => parseCifarBinary(rec, 'y.bin')).toThrow(/y\.bin: record 0 has label 10, expected 0\.\.9/)
  })

  it('opens a cifar-10-batches-bin folder: the training batches present, in order, and the test batch', async () => {
    const top = path.join(tmp, 'cifar')
    const dir = path.join(top, 'cifar-10-batches-bin')
    await fsp.mkdir(dir, { recursive: true })
    const grey = (v: number) => () => v
    const batch = (labels: number[], base: number) => new Uint8Array(labels.flatMap((l, i) => [...cifarRecord(l, grey(base + i), grey(base + i), grey(base + i))]))
    await fsp.writeFile(path.join(dir, 'data_batch_1.bin'), batch([0, 1, 2], 10))
    await fsp.writeFile(path.join(dir, 'data_batch_2.bin'), batch([3, 4], 20))
    await fsp.writeFile(path.join(dir, 'test_batch.bin'), batch([9], 200))
    const data = await openCifar10(top)
    expect(data.describe()).toMatchObject({ name: 'cifar10', pixels: 1024, classes: 10, train: 5, test: 1 })
    // Grey in = grey out (the weights sum to 1): images keep their order across files.
    expect([0, 1, 2, 3, 4].map((i) => data.example('train', i).tokens[17])).toEqual([10, 11, 12, 20, 21])
    expect([0, 1, 2, 3, 4].map((i) => data.example('train', i).label)).toEqual([0, 1, 2, 3, 4])
    const b = data.batch(new Rng(1), 4, 'val', {})
    expect([...b.targets]).toEqual([9, 9, 9, 9])
    expect(b.tokens.every((t) => t === 200)).toBe(true)
    await expect(openCifar10(path.join(tmp, 'nowhere'))).rejects.toThrow(/CIFAR-10: no data_batch_1\.bin in .*nowhere/)
  })
})

describe('ImageClassData', () => {
  it('checks its arguments', () => {
    const split = { images: new Uint8Array(8), labels: new Uint8Array(2), count: 2 }
    expect(() => new ImageClassData({ name: 'x', pixels: 4, classes: 1, train: split, test: split })).toThrow(/classes: expected an integer in \[2, 256\]/)
    expect(() => new ImageClassData({ name: 'x', pixels: 5, classes: 2, train: split, test: split })).toThrow(/train\.images: expected 2 x 5 = 10 bytes, got 8/)
    const badLabel = { ...split, labels: Uint8Array.from([0, 2]) }
    expect(() => new ImageClassData({ name: 'x', pixels: 4, classes: 2, train: split, test: badLabel })).toThrow(/test\.labels\[1\]: expected a class in 0\.\.1, got 2/)
    const data = new ImageClassData({ name: 'x', pixels: 4, classes: 2, train: split, test: split })
    expect(() => data.batch(new Rng(0), 0, 'train', {})).toThrow(/size: expected an integer >= 1/)
    expect(() => data.example('train', 2)).toThrow(/index: expected an integer in \[0, 1\]/)
  })

  it('trains a small recurrent classifier (random widths) to high test accuracy on a synthetic task', async () => {
    // Class = which half of a 16-pixel image is bright; noise elsewhere. Chance is 50%.
    const make = (count: number, seed: number) => {
      const rng = new Rng(seed)
      const images = new Uint8Array(count * 16)
      const labels = new Uint8Array(count)
      for (let i = 0; i < count; i++) {
        const c = rng.int(0, 1)
        labels[i] = c
        for (let p = 0; p < 16; p++) images[i * 16 + p] = (p < 8) === (c === 0) ? rng.int(200, 255) : rng.int(0, 55)
      }
      return { images, labels, count }
    }
    const data = new ImageClassData({ name: 'halves', pixels: 16, classes: 2, train: make(512, 1), test: make(256, 2) })
    const model = new RecurrentTransformer({ vocabSize: 256, d: 16, heads: 2, windowRange: [2, 6], variant: 'forget', maxLen: 16, head: { classify: 2 } })
    try {
      const evals: Record<string, unknown>[] = []
      const r = await train({ model, data, steps: 150, batchSize: 32, optimizer: { lr: 3e-3 }, evalEvery: 150, evalBatches: 8, seed: 3, onEvent: (e) => { if (e.type === 'eval') evals.push(e) } })
      expect(r.lastEval).not.toBeNull()
      expect(r.lastEval!.accuracy).toBeGreaterThan(0.9)
      // A forget model has no alpha to report.
      expect(evals).toHaveLength(1)
      expect('alpha' in evals[0]!).toBe(false)
    } finally {
      model.dispose()
    }
  })
})

describe('rt train --task fmnist|cifar10', () => {
  const rt = (args: string[]) => {
    const r = spawnSync(process.execPath, [path.join(ROOT, 'dist/cli/rt.js'), ...args], { cwd: tmp, encoding: 'utf8', timeout: 110_000 })
    return { code: r.status, stdout: r.stdout, stderr: r.stderr }
  }
  beforeAll(ensureCli)

  it('trains a classify model on CIFAR-10 files and logs eval accuracy, samples and FLOPs', async () => {
    const dir = path.join(tmp, 'cifar-cli')
    await fsp.mkdir(dir)
    const rec = (l: number) => cifarRecord(l, (p) => (p * l) % 256, () => 40, () => 90)
    await fsp.writeFile(path.join(dir, 'data_batch_1.bin'), new Uint8Array([0, 1, 2, 3].flatMap((l) => [...rec(l)])))
    await fsp.writeFile(path.join(dir, 'test_batch.bin'), new Uint8Array([1, 2].flatMap((l) => [...rec(l)])))
    const out = path.join(tmp, 'cifar-run')
    const r = rt(['train', '--task', 'cifar10', '--data', dir, '--d', '16', '--heads', '2', '--window-range', '16,48', '--steps', '4', '--batch', '2', '--eval-every', '2', '--eval-batches', '1', '--json', '--out', out])
    expect(r.stderr).toBe('')
    expect(r.code).toBe(0)
    const log = fs.readFileSync(path.join(out, 'log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>)
    const header = log[0] as { type: string; model: Record<string, unknown>; data: Record<string, unknown>; seqLen: number }
    expect(header.type).toBe('config')
    expect(header.model).toMatchObject({ vocabSize: 256, maxLen: 1024, head: { classify: 10 }, windowRange: [16, 48], window: 32, variant: 'forget' })
    expect(header.data).toMatchObject({ kind: 'image', name: 'cifar10', train: 4, test: 2 })
    const evals = log.filter((l) => l.type === 'eval')
    expect(evals.map((e) => [e.step, e.samples, e.window])).toEqual([[2, 4, 32], [4, 8, 32]])
    expect(evals.every((e) => typeof e.accuracy === 'number' && (e.accuracy as number) >= 0 && (e.accuracy as number) <= 1)).toBe(true)
    const steps = log.filter((l) => l.type === 'step')
    expect(steps.every((s, i) => i === 0 || (s.flops as number) > (steps[i - 1]!.flops as number))).toBe(true)
    const summary = log[log.length - 1] as Record<string, unknown>
    expect(summary.type).toBe('summary')
    expect(summary.flops).toBe(steps[steps.length - 1]!.flops)
    expect(summary.samples).toBe(8)
    expect(summary.bestAccuracy).toBe(Math.max(...evals.map((e) => e.accuracy as number)))
    expect(summary.bestLoss).toBe(Math.min(...evals.map((e) => e.loss as number)))
    expect(summary.flopsPerSample).toEqual((header as unknown as { flopsPerSample: unknown }).flopsPerSample)
  })

  it('--task cifar10 without --data exits 2 naming the flag', () => {
    const r = rt(['train', '--task', 'cifar10'])
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(/--data DIR: required for --task cifar10/)
  })
})
