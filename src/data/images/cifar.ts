// The CIFAR-10 binary format (cifar-10-batches-bin/: data_batch_1.bin .. data_batch_5.bin, test_batch.bin).
//
// Each file is a run of 3073-byte records: one label byte (0..9), then the 32x32 image as three 1024-byte
// planes, red, green, blue, each row-major. The paper's sequential-image task reads the image as 1,024
// grey pixels; we convert with ITU-R BT.601 luma, rounded half up, in integers so it is exact:
//
//   Y = floor((299 R + 587 G + 114 B + 500) / 1000)        (0..255; the weights sum to 1000)

/** Bytes per CIFAR-10 record: 1 label + 3 x 1024. */
export const CIFAR_RECORD_BYTES = 3073;
/** Pixels per CIFAR-10 image (32 x 32). */
export const CIFAR_PIXELS = 1024;

/** ITU-R BT.601 luma of one RGB pixel, rounded half up (see the file comment). */
export function luma601(r: number, g: number, b: number): number {
  return Math.floor((299 * r + 587 * g + 114 * b + 500) / 1000);
}

/** Decoded CIFAR records: grey images [count, 1024] and labels [count]. */
export interface CifarRecords {
  images: Uint8Array;
  labels: Uint8Array;
  count: number;
}

/** Decodes CIFAR-10 binary records to grey pixels. `name` is used in errors. */
export function parseCifarBinary(bytes: Uint8Array, name = 'CIFAR-10 data', classes = 10): CifarRecords {
  if (bytes.length === 0 || bytes.length % CIFAR_RECORD_BYTES !== 0) {
    throw new RangeError(`${name}: expected a whole number of ${CIFAR_RECORD_BYTES}-byte records, got ${bytes.length} bytes`);
  }
  const count = bytes.length / CIFAR_RECORD_BYTES;
  const images = new Uint8Array(count * CIFAR_PIXELS);
  const labels = new Uint8Array(count);
  for (let i = 0; i < count; i++) {
    const rec = i * CIFAR_RECORD_BYTES;
    const label = bytes[rec]!;
    if (label >= classes) throw new RangeError(`${name}: record ${i} has label ${label}, expected 0..${classes - 1}`);
    labels[i] = label;
    const r = rec + 1;
    const g = r + CIFAR_PIXELS;
    const b = g + CIFAR_PIXELS;
    const out = i * CIFAR_PIXELS;
    for (let p = 0; p < CIFAR_PIXELS; p++) images[out + p] = luma601(bytes[r + p]!, bytes[g + p]!, bytes[b + p]!);
  }
  return { images, labels, count };
}
