// A minimal PNG decoder for screenshots: 8-bit RGB or RGBA, not interlaced (what Chromium writes).

import { inflateSync } from 'node:zlib'

export interface Image {
  width: number
  height: number
  /** Channels per pixel (3 or 4). */
  channels: number
  data: Uint8Array
}

function paeth(a: number, b: number, c: number): number {
  const p = a + b - c
  const pa = Math.abs(p - a)
  const pb = Math.abs(p - b)
  const pc = Math.abs(p - c)
  return pa <= pb && pa <= pc ? a : pb <= pc ? b : c
}

export function decodePng(buf: Uint8Array): Image {
  const sig = [137, 80, 78, 71, 13, 10, 26, 10]
  if (!sig.every((b, i) => buf[i] === b)) throw new Error('decodePng: not a PNG file')
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength)
  let at = 8
  let width = 0
  let height = 0
  let channels = 0
  const idat: Uint8Array[] = []
  while (at < buf.length) {
    const len = view.getUint32(at)
    const type = String.fromCharCode(...buf.subarray(at + 4, at + 8))
    const body = buf.subarray(at + 8, at + 8 + len)
    if (type === 'IHDR') {
      const bv = new DataView(body.buffer, body.byteOffset, body.byteLength)
      width = bv.getUint32(0)
      height = bv.getUint32(4)
      const depth = body[8]
      const color = body[9]
      if (depth !== 8 || (color !== 2 && color !== 6) || body[12] !== 0) throw new Error(`decodePng: unsupported depth ${depth} / colour type ${color} / interlace ${body[12]}`)
      channels = color === 2 ? 3 : 4
    } else if (type === 'IDAT') {
      idat.push(body)
    } else if (type === 'IEND') {
      break
    }
    at += 12 + len
  }
  const raw = inflateSync(Buffer.concat(idat))
  const stride = width * channels
  const data = new Uint8Array(height * stride)
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)]
    const src = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1))
    const row = y * stride
    for (let x = 0; x < stride; x++) {
      const a = x >= channels ? data[row + x - channels] : 0
      const b = y > 0 ? data[row - stride + x] : 0
      const c = x >= channels && y > 0 ? data[row - stride + x - channels] : 0
      const v = src[x]
      data[row + x] = (filter === 0 ? v : filter === 1 ? v + a : filter === 2 ? v + b : filter === 3 ? v + ((a + b) >> 1) : v + paeth(a, b, c)) & 255
    }
  }
  return { width, height, channels, data }
}
