// Typed tensors over native storage. A Tensor is immutable from JavaScript once made (toArray() copies
// out), so a forward running on a worker thread never sees its input change.
import { loadNative, type Device, type NativeAddon, type NativeTensor } from './native.js';

export type DType = 'float32' | 'int32';
export type TypedArrayOf<D extends DType> = D extends 'float32' ? Float32Array : Int32Array;

const registry = new FinalizationRegistry<NativeTensor>((handle) => {
  // Backstop for tensors dropped without dispose(): free the native memory once the wrapper is collected.
  if (!handle.disposed) handle.free();
});

function checkShape(shape: readonly number[], what: string): number {
  if (!Array.isArray(shape)) throw new TypeError(`${what}: expected an array of non-negative integers`);
  let n = 1;
  shape.forEach((s, i) => {
    if (typeof s !== 'number' || !Number.isSafeInteger(s) || s < 0) {
      throw new TypeError(`${what}[${i}]: expected a non-negative integer, got ${String(s)}`);
    }
    n *= s;
  });
  if (n > 2 ** 34) throw new RangeError(`${what}: ${shape.join('x')} has more than 2^34 elements`);
  return n;
}

export class Tensor {
  readonly dtype: DType;
  readonly shape: readonly number[];
  /** Where the data lives: 'cpu', or 'cuda' for the outputs and parameters of a layer on the GPU. */
  readonly device: Device;
  #handle: NativeTensor | undefined;

  /** @internal Wraps a native tensor; use the static constructors. */
  constructor(handle: NativeTensor) {
    this.#handle = handle;
    this.dtype = handle.dtype;
    this.shape = Object.freeze([...handle.shape]);
    this.device = handle.device ?? 'cpu';
    registry.register(this, handle, this);
  }

  /** A tensor holding a copy of `data`, laid out row-major in `shape`. */
  static fromArray(data: ArrayLike<number>, shape: readonly number[], dtype: DType = 'float32', device: Device = 'cpu'): Tensor {
    if (dtype !== 'float32' && dtype !== 'int32') {
      throw new TypeError(`dtype: expected 'float32' or 'int32', got ${String(dtype)}`);
    }
    const n = checkShape(shape, 'shape');
    if (data === null || typeof data !== 'object' || typeof data.length !== 'number') {
      throw new TypeError('data: expected an array or typed array of numbers');
    }
    if (data.length !== n) {
      throw new RangeError(`data: has ${data.length} elements but shape [${shape.join(', ')}] needs ${n}`);
    }
    const typed = dtype === 'float32' ? Float32Array.from(data) : Int32Array.from(data);
    if (dtype === 'int32') {
      for (let i = 0; i < n; i++) {
        if (!Number.isInteger(data[i])) throw new TypeError(`data[${i}]: expected an integer for an int32 tensor`);
      }
    }
    return onDevice(new (loadNative(device).TensorHandle)(dtype, [...shape], typed), device);
  }

  /** A zero-filled tensor on `device` (default 'cpu'). */
  static zeros(shape: readonly number[], dtype: DType = 'float32', device: Device = 'cpu'): Tensor {
    checkShape(shape, 'shape');
    return onDevice(new (loadNative(device).TensorHandle)(dtype, [...shape]), device);
  }

  /** Number of elements. */
  get size(): number {
    return this.shape.reduce((a, b) => a * b, 1);
  }

  get disposed(): boolean {
    return this.#handle === undefined || this.#handle.disposed;
  }

  /** A copy of the data, row-major. */
  toArray(): Float32Array | Int32Array {
    return this.handle('toArray').read();
  }

  /**
   * A copy of this tensor on `device` (always a new tensor, to be disposed on its own). 'cuda' needs the
   * CUDA build of the addon and a GPU; toArray() of a CUDA tensor copies back to the host by itself.
   */
  to(device: Device): Tensor {
    if (device !== 'cpu' && device !== 'cuda') throw new TypeError(`device: expected 'cpu' or 'cuda', got ${String(device)}`);
    const addon = loadNative(device);
    return new Tensor(adoptHandle(this, addon, 'to').to(device));
  }

  /** Frees the native memory now (the finalizer would do it later). Idempotent. */
  dispose(): void {
    if (this.#handle) {
      registry.unregister(this);
      this.#handle.free();
      this.#handle = undefined;
    }
  }

  /** @internal The native handle; throws when disposed. */
  handle(op = 'tensor'): NativeTensor {
    if (!this.#handle || this.#handle.disposed) throw new Error(`${op}: the tensor has been disposed`);
    return this.#handle;
  }

  toString(): string {
    return `Tensor(${this.dtype}, [${this.shape.join(', ')}], ${this.device}${this.disposed ? ', disposed' : ''})`;
  }
}

// A tensor made in host memory, moved to `device` (the host copy is freed at once).
function onDevice(host: NativeTensor, device: Device): Tensor {
  if (device === 'cpu') return new Tensor(host);
  if (device !== 'cuda') throw new TypeError(`device: expected 'cpu' or 'cuda', got ${String(device)}`);
  try {
    return new Tensor(host.to(device));
  } finally {
    host.free();
  }
}

/**
 * @internal This tensor's native handle as `addon` can take it. The CPU and CUDA builds are two binaries
 * whose handles do not mix; a handle from the other one (a CPU tensor made before the CUDA build was
 * loaded) is copied across through the host. A layer then moves the copy to its device itself.
 */
export function adoptHandle(t: Tensor, addon: NativeAddon, op: string): NativeTensor {
  const h = t.handle(op);
  if (Object.getPrototypeOf(h) === addon.TensorHandle.prototype) return h;
  return new addon.TensorHandle(t.dtype, [...t.shape], h.read());
}
