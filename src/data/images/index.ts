// Sequential image classification data: IDX (Fashion-MNIST) and CIFAR-10 binary readers, and the dataset.
export { parseIdx, readIdx, encodeIdx, isGzip, type IdxArray } from './idx.js';
export { parseCifarBinary, luma601, CIFAR_RECORD_BYTES, CIFAR_PIXELS, type CifarRecords } from './cifar.js';
export {
  ImageClassData,
  openFashionMnist,
  openCifar10,
  PIXEL_LEVELS,
  DEBIAN_FASHION_MNIST_DIR,
  type ImageSplit,
  type ImageClassDataOptions,
} from './dataset.js';
