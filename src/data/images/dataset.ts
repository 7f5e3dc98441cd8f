// Sequential image classification (the paper's grey CIFAR-10, and Fashion-MNIST): each image is a
// sequence of pixel tokens (256 grey levels, row-major) and the target is its class, scored at the last
// position by a `{ classify: C }` head.
//
// Splits are the datasets' own: 'train' draws from the training images, 'val' from the test images.
// Batch (random draws, per row in order: one rng.int(0, n - 1) for the image index, with replacement):
//   tokens [batch, pixels] = the image's grey levels;  targets [batch, 1] = its class.
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Batch, TrainData } from '../../train/data.js';
import type { Rng } from '../rng.js';
import { CIFAR_PIXELS, parseCifarBinary } from './cifar.js';
import { readIdx } from './idx.js';

/** One split of an image set: `count` images of `pixels` grey bytes each, and their labels. */
export interface ImageSplit {
  images: Uint8Array;
  labels: Uint8Array;
  count: number;
}

export interface ImageClassDataOptions {
  /** A short name stored in checkpoints ('fmnist', 'cifar10', ...). */
  name: string;
  /** Pixels per image (the sequence length). */
  pixels: number;
  classes: number;
  train: ImageSplit;
  test: ImageSplit;
  /** Where the data came from (stored in checkpoints). */
  source?: string;
}

/** Pixel tokens take 256 grey levels: the model's vocabulary size. */
export const PIXEL_LEVELS = 256;

/** Where Debian's `dataset-fashion-mnist` package puts the files. */
export const DEBIAN_FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist';

function checkSplit(name: string, s: ImageSplit, pixels: number, classes: number): void {
  if (!Number.isSafeInteger(s.count) || s.count < 1) throw new RangeError(`${name}.count: expected an integer >= 1, got ${String(s.count)}`);
  if (!(s.images instanceof Uint8Array) || s.images.length !== s.count * pixels) {
    throw new RangeError(`${name}.images: expected ${s.count} x ${pixels} = ${s.count * pixels} bytes, got ${s.images?.length}`);
  }
  if (!(s.labels instanceof Uint8Array) || s.labels.length !== s.count) {
    throw new RangeError(`${name}.labels: expected ${s.count} bytes, got ${s.labels?.length}`);
  }
  for (let i = 0; i < s.count; i++) {
    if (s.labels[i]! >= classes) throw new RangeError(`${name}.labels[${i}]: expected a class in 0..${classes - 1}, got ${s.labels[i]}`);
  }
}

/** An image classification set as a TrainData: random batches of pixel sequences and class targets. */
export class ImageClassData implements TrainData {
  readonly name: string;
  readonly pixels: number;
  readonly classes: number;
  readonly source: string | undefined;
  readonly #train: ImageSplit;
  readonly #test: ImageSplit;

  constructor(opts: ImageClassDataOptions) {
    if (opts === null || typeof opts !== 'object') throw new TypeError('ImageClassData: expected an options object');
    if (typeof opts.name !== 'string' || opts.name === '') throw new TypeError('ImageClassData name: expected a non-empty string');
    if (!Number.isSafeInteger(opts.pixels) || opts.pixels < 1) throw new RangeError(`ImageClassData pixels: expected an integer >= 1, got ${String(opts.pixels)}`);
    if (!Number.isSafeInteger(opts.classes) || opts.classes < 2 || opts.classes > 256) {
      throw new RangeError(`ImageClassData classes: expected an integer in [2, 256], got ${String(opts.classes)}`);
    }
    checkSplit('ImageClassData train', opts.train, opts.pixels, opts.classes);
    checkSplit('ImageClassData test', opts.test, opts.pixels, opts.classes);
    this.name = opts.name;
    this.pixels = opts.pixels;
    this.classes = opts.classes;
    this.source = opts.source;
    this.#train = opts.train;
    this.#test = opts.test;
  }

  /** Sequence length of every batch (= pixels; the model's maxLen must cover it). */
  get maxSeqLen(): number {
    return this.pixels;
  }

  /** Vocabulary size of the pixel tokens. */
  get vocabSize(): number {
    return PIXEL_LEVELS;
  }

  /** Images in a split ('val' is the test set). */
  size(split: 'train' | 'val'): number {
    return (split === 'train' ? this.#train : this.#test).count;
  }

  /** Image `index` of a split as tokens, and its label. */
  example(split: 'train' | 'val', index: number): { tokens: Uint8Array; label: number } {
    const s = split === 'train' ? this.#train : this.#test;
    if (!Number.isSafeInteger(index) || index < 0 || index >= s.count) throw new RangeError(`example index: expected an integer in [0, ${s.count - 1}], got ${String(index)}`);
    return { tokens: s.images.subarray(index * this.pixels, (index + 1) * this.pixels), label: s.labels[index]! };
  }

  batch(rng: Rng, size: number, split: 'train' | 'val', _ctx: { noise?: number } = {}): Batch {
    if (!Number.isSafeInteger(size) || size < 1) throw new RangeError(`ImageClassData.batch size: expected an integer >= 1, got ${String(size)}`);
    if (split !== 'train' && split !== 'val') throw new RangeError(`ImageClassData.batch split: expected 'train' or 'val', got ${String(split)}`);
    const s = split === 'train' ? this.#train : this.#test;
    const P = this.pixels;
    const tokens = new Int32Array(size * P);
    const targets = new Int32Array(size);
    for (let b = 0; b < size; b++) {
      const i = rng.int(0, s.count - 1);
      // Int32Array.set widens the bytes: 0..255 grey levels become token ids directly.
      tokens.set(s.images.subarray(i * P, (i + 1) * P), b * P);
      targets[b] = s.labels[i]!;
    }
    return { tokens, targets, batch: size, seqLen: P, positions: 1 };
  }

  describe(): Record<string, unknown> {
    return { kind: 'image', name: this.name, pixels: this.pixels, classes: this.classes, train: this.#train.count, test: this.#test.count, source: this.source ?? null };
  }
}

function findFile(dir: string, names: readonly string[], what: string): string {
  for (const n of names) {
    const p = join(dir, n);
    if (existsSync(p)) return p;
  }
  throw new Error(`${what}: none of ${names.join(', ')} found in ${dir}`);
}

async function idxSplit(dir: string, prefix: string): Promise<{ split: ImageSplit; pixels: number }> {
  const imgPath = findFile(dir, [`${prefix}-images-idx3-ubyte.gz`, `${prefix}-images-idx3-ubyte`], 'Fashion-MNIST images');
  const lblPath = findFile(dir, [`${prefix}-labels-idx1-ubyte.gz`, `${prefix}-labels-idx1-ubyte`], 'Fashion-MNIST labels');
  const [img, lbl] = await Promise.all([readIdx(imgPath), readIdx(lblPath)]);
  if (img.shape.length !== 3) throw new RangeError(`${imgPath}: expected 3 dimensions [count, rows, cols], got [${img.shape.join(', ')}]`);
  if (lbl.shape.length !== 1) throw new RangeError(`${lblPath}: expected 1 dimension [count], got [${lbl.shape.join(', ')}]`);
  const [count, rows, cols] = img.shape as [number, number, number];
  if (lbl.shape[0] !== count) throw new RangeError(`${lblPath}: ${lbl.shape[0]} labels for ${count} images in ${imgPath}`);
  return { split: { images: img.data, labels: lbl.data, count }, pixels: rows * cols };
}

/**
 * Fashion-MNIST (or MNIST) from a folder of IDX files, plain or gzipped: train-images-idx3-ubyte(.gz),
 * train-labels-idx1-ubyte(.gz), t10k-images-idx3-ubyte(.gz), t10k-labels-idx1-ubyte(.gz).
 * 28 x 28 = 784 pixel tokens, 10 classes. Default folder: Debian's dataset-fashion-mnist.
 */
export async function openFashionMnist(dir: string = DEBIAN_FASHION_MNIST_DIR): Promise<ImageClassData> {
  if (typeof dir !== 'string' || dir === '') throw new TypeError('openFashionMnist dir: expected a folder path');
  const [train, test] = await Promise.all([idxSplit(dir, 'train'), idxSplit(dir, 't10k')]);
  if (train.pixels !== test.pixels) throw new RangeError(`Fashion-MNIST in ${dir}: train images have ${train.pixels} pixels, test images ${test.pixels}`);
  return new ImageClassData({ name: 'fmnist', pixels: train.pixels, classes: 10, train: train.split, test: test.split, source: dir });
}

function concat(parts: ImageSplit[]): ImageSplit {
  const count = parts.reduce((n, p) => n + p.count, 0);
  const images = new Uint8Array(count * CIFAR_PIXELS);
  const labels = new Uint8Array(count);
  let at = 0;
  for (const p of parts) {
    images.set(p.images, at * CIFAR_PIXELS);
    labels.set(p.labels, at);
    at += p.count;
  }
  return { images, labels, count };
}

/**
 * Grey CIFAR-10 from the binary distribution: `dir` holds data_batch_1.bin .. data_batch_5.bin and
 * test_batch.bin (or is the folder above cifar-10-batches-bin/). The training files present are used
 * in order (at least data_batch_1.bin). 1,024 pixel tokens (BT.601 luma, see cifar.ts), 10 classes.
 */
export async function openCifar10(dir: string): Promise<ImageClassData> {
  if (typeof dir !== 'string' || dir === '') throw new TypeError('openCifar10 dir: expected a folder path');
  const base = existsSync(join(dir, 'cifar-10-batches-bin')) ? join(dir, 'cifar-10-batches-bin') : dir;
  const trainFiles = [1, 2, 3, 4, 5].map((i) => join(base, `data_batch_${i}.bin`)).filter((p) => existsSync(p));
  if (trainFiles.length === 0) throw new Error(`CIFAR-10: no data_batch_1.bin in ${base}`);
  const testFile = findFile(base, ['test_batch.bin'], 'CIFAR-10 test set');
  const load = async (p: string): Promise<ImageSplit> => parseCifarBinary(new Uint8Array(await readFile(p)), p);
  const train = concat(await Promise.all(trainFiles.map(load)));
  const test = await load(testFile);
  return new ImageClassData({ name: 'cifar10', pixels: CIFAR_PIXELS, classes: 10, train, test, source: base });
}
