// Causal multi-head self-attention, forward and backward, one (batch, head) pair per work item.
//
// Each head's six small products (scores, P V; dP, dQ, dK, dV) are register-tiled loops (4 x 16
// accumulators, like a GEMM micro-kernel) rather than GEMM calls: at the window-pair sizes this layer
// runs at (n = 2..64, head size 16..64) a GEMM call's packing and fixed costs exceed the work. Measured
// on Zen 4 against an earlier version that sent row blocks through rt::cpu::gemm: 1.5-2x faster up to
// n = 512; at w = 0, n = 2048, head size 24 about 1.3x faster than the built-in GEMM and ~1.2x slower
// than OpenBLAS. One code path for every n, and no GEMM calls nested inside the parallel loop.
// Query rows go in blocks of kRowBlock, so the scratch besides `probs` (the one O(n^2) buffer the
// contract provides) is O(kRowBlock * n + n * hd) per thread, also for w = 0 and n in the thousands.
//
// Softmax and reductions use eight float lanes via GCC vector extensions (helpers in cpu/simd.h; the
// build has no -ffast-math, so plain float reductions would stay scalar), combined in a fixed order;
// every sum runs in an order fixed by the shape, so nothing depends on the thread split.
//
// Dropout multiplies probabilities by keep/(1-p), keep = rng_uniform(key, ((b*H+h)*n+i)*n+j) >= p;
// backward regenerates the same mask.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "core/thread_pool.h"
#include "cpu/kernels.h"
#include "cpu/simd.h"

namespace rt::cpu {
namespace {

using simd::exp_nonpos;
using simd::f4;
using simd::f8;
using simd::hmax;
using simd::hsum;
using simd::i4;
using simd::i8;
using simd::load8;
using simd::splat;
using simd::store8;
using simd::u4;

constexpr int kLanes = 8;
constexpr int kRowBlock = 64;  // query rows per block (a multiple of kTileR)

RT_INLINE int round_up(int v, int m) { return (v + m - 1) / m * m; }

// In place over s[0, n): softmax of s[0, len) (len >= 1), zeros in s[len, n). s must have room for
// round_up(n, 8) floats (the last block is processed whole).
void softmax_row(float* s, int len, int n) {
  const i8 iota = {0, 1, 2, 3, 4, 5, 6, 7};
  const f8 ninf = splat(-std::numeric_limits<float>::infinity());
  const int full = len / kLanes * kLanes;
  f8 mx = ninf;
  for (int j = 0; j < full; j += kLanes) {
    const f8 v = load8(s + j);
    mx = v > mx ? v : mx;
  }
  if (full < len) {
    const f8 v = load8(s + full);
    const f8 vm = (iota < len - full) ? v : ninf;
    mx = vm > mx ? vm : mx;
  }
  const float m = hmax(mx);
  f8 acc = {};
  const int blocks = round_up(len, kLanes);
  for (int j = 0; j < blocks; j += kLanes) {
    f8 v = load8(s + j);
    v = (iota < len - j) ? v : ninf;  // exp(-inf) = 0 masks the future
    const f8 e = exp_nonpos(v - m);
    acc += e;
    store8(s + j, e);
  }
  const float inv = 1.0f / hsum(acc);
  for (int j = 0; j < blocks; j += kLanes) store8(s + j, load8(s + j) * inv);
  if (blocks < n) std::memset(s + blocks, 0, sizeof(float) * (n - blocks));
}

// Dropout multipliers keep/(1-p) for mask indices [base, base + len); 1 when p == 0. Bit-exact with
// rt::rng_uniform(key, i) >= p, four lanes at a time through simd::keep4 (see cpu/simd.h).
void dropout_row(float* mult, int len, float p, uint64_t key, uint64_t base) {
  if (p == 0.0f) {
    std::fill(mult, mult + len, 1.0f);
    return;
  }
  const float scale = 1.0f / (1.0f - p);
  const int64_t threshold = simd::keep_threshold(p);
  u4 z = simd::keep_counter(key, base);
  const f4 on = f4{} + scale, off = f4{};
  for (int j = 0; j < len; j += 4) {
    const i4 keep = simd::keep4(z, threshold);
    const f4 m = keep ? on : off;
    if (j + 4 <= len) {
      std::memcpy(mult + j, &m, sizeof m);
    } else {
      std::memcpy(mult + j, &m, sizeof(float) * (len - j));
    }
    simd::keep_step(z);
  }
}

// Per-thread scratch, grown on demand and kept: attention runs every window step.
struct Scratch {
  std::vector<float> a, b, c, d;
  static float* get(std::vector<float>& v, size_t n) {
    if (v.size() < n) v.resize(n);
    return v.data();
  }
};
Scratch& scratch() {
  thread_local Scratch s;
  return s;
}

struct Dims {
  int B, n, d, H, hd, ld;  // ld = 3d, the row stride of qkv and dqkv
  float scale;
};

// ---------------------------------------------------------------------------------------------------
// The products of one head, as register-tiled loops: 4 rows x 16 columns of accumulators, like a GEMM
// micro-kernel (one accumulator chain per output would leave the loops waiting on FMA latency). Query
// rows are processed in blocks of kRowBlock, so besides `probs` a head needs O(kRowBlock * n + n * hd)
// scratch whatever n is.

constexpr int kTileR = 4;   // rows per register tile
constexpr int kTileC = 16;  // columns per register tile (two vectors)

// Two-input lane shuffle with constant indices (GCC and Clang spell it differently).
#if defined(__clang__)
#define RT_SHUF(a, b, i0, i1, i2, i3, i4, i5, i6, i7) __builtin_shufflevector(a, b, i0, i1, i2, i3, i4, i5, i6, i7)
#else
#define RT_SHUF(a, b, i0, i1, i2, i3, i4, i5, i6, i7) __builtin_shuffle(a, b, i8{i0, i1, i2, i3, i4, i5, i6, i7})
#endif

// KT[c * np + j] = K[j][c] for j < n, zero-padded to np columns (np a multiple of 8). 8x8 blocks are
// transposed in registers (the unpack / shuffle / 128-bit permute network): element-wise strided
// stores cost about as much as all the arithmetic of a 32-token head.
void transpose_head(const float* K, int ld, int n, int hd, int np, float* KT) {
  int c0 = 0;
  for (; c0 + 8 <= hd; c0 += 8) {
    for (int j0 = 0; j0 < np; j0 += 8) {
      f8 r[8];
      for (int k = 0; k < 8; ++k)
        r[k] = j0 + k < n ? load8(K + static_cast<size_t>(j0 + k) * ld + c0) : f8{};
      const f8 t0 = RT_SHUF(r[0], r[1], 0, 8, 1, 9, 4, 12, 5, 13), t1 = RT_SHUF(r[0], r[1], 2, 10, 3, 11, 6, 14, 7, 15);
      const f8 t2 = RT_SHUF(r[2], r[3], 0, 8, 1, 9, 4, 12, 5, 13), t3 = RT_SHUF(r[2], r[3], 2, 10, 3, 11, 6, 14, 7, 15);
      const f8 t4 = RT_SHUF(r[4], r[5], 0, 8, 1, 9, 4, 12, 5, 13), t5 = RT_SHUF(r[4], r[5], 2, 10, 3, 11, 6, 14, 7, 15);
      const f8 t6 = RT_SHUF(r[6], r[7], 0, 8, 1, 9, 4, 12, 5, 13), t7 = RT_SHUF(r[6], r[7], 2, 10, 3, 11, 6, 14, 7, 15);
      const f8 u0 = RT_SHUF(t0, t2, 0, 1, 8, 9, 4, 5, 12, 13), u1 = RT_SHUF(t0, t2, 2, 3, 10, 11, 6, 7, 14, 15);
      const f8 u2 = RT_SHUF(t1, t3, 0, 1, 8, 9, 4, 5, 12, 13), u3 = RT_SHUF(t1, t3, 2, 3, 10, 11, 6, 7, 14, 15);
      const f8 u4 = RT_SHUF(t4, t6, 0, 1, 8, 9, 4, 5, 12, 13), u5 = RT_SHUF(t4, t6, 2, 3, 10, 11, 6, 7, 14, 15);
      const f8 u6 = RT_SHUF(t5, t7, 0, 1, 8, 9, 4, 5, 12, 13), u7 = RT_SHUF(t5, t7, 2, 3, 10, 11, 6, 7, 14, 15);
      float* o = KT + static_cast<size_t>(c0) * np + j0;
      store8(o + 0 * static_cast<size_t>(np), RT_SHUF(u0, u4, 0, 1, 2, 3, 8, 9, 10, 11));
      store8(o + 1 * static_cast<size_t>(np), RT_SHUF(u1, u5, 0, 1, 2, 3, 8, 9, 10, 11));
      store8(o + 2 * static_cast<size_t>(np), RT_SHUF(u2, u6, 0, 1, 2, 3, 8, 9, 10, 11));
      store8(o + 3 * static_cast<size_t>(np), RT_SHUF(u3, u7, 0, 1, 2, 3, 8, 9, 10, 11));
      store8(o + 4 * static_cast<size_t>(np), RT_SHUF(u0, u4, 4, 5, 6, 7, 12, 13, 14, 15));
      store8(o + 5 * static_cast<size_t>(np), RT_SHUF(u1, u5, 4, 5, 6, 7, 12, 13, 14, 15));
      store8(o + 6 * static_cast<size_t>(np), RT_SHUF(u2, u6, 4, 5, 6, 7, 12, 13, 14, 15));
      store8(o + 7 * static_cast<size_t>(np), RT_SHUF(u3, u7, 4, 5, 6, 7, 12, 13, 14, 15));
    }
  }
  for (int c = c0; c < hd; ++c) {  // hd not a multiple of 8
    float* o = KT + static_cast<size_t>(c) * np;
    for (int j = 0; j < n; ++j) o[j] = K[static_cast<size_t>(j) * ld + c];
    for (int j = n; j < np; ++j) o[j] = 0.0f;
  }
}

// S[r][j0, j0+16) = scale * sum_c A[r][c] * BT[c][j] for r < rows (A: rows of stride lda; BT: a
// zero-padded transposed operand with row stride ldbt).
void tile_abt(const float* A, int lda, const float* BT, int ldbt, int hd, int rows, int j0, float* S, int lds,
              float scale) {
  const float* a[kTileR];
  for (int r = 0; r < kTileR; ++r) a[r] = A + static_cast<size_t>(std::min(r, rows - 1)) * lda;
  f8 c00 = {}, c01 = {}, c10 = {}, c11 = {}, c20 = {}, c21 = {}, c30 = {}, c31 = {};
  const float* bt = BT + j0;
  for (int c = 0; c < hd; ++c, bt += ldbt) {
    const f8 b0 = load8(bt), b1 = load8(bt + 8);
    const float a0 = a[0][c], a1 = a[1][c], a2 = a[2][c], a3 = a[3][c];
    c00 += a0 * b0; c01 += a0 * b1;
    c10 += a1 * b0; c11 += a1 * b1;
    c20 += a2 * b0; c21 += a2 * b1;
    c30 += a3 * b0; c31 += a3 * b1;
  }
  const f8 acc[kTileR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}};
  for (int r = 0; r < rows; ++r) {
    float* srow = S + static_cast<size_t>(r) * lds + j0;
    store8(srow, acc[r][0] * scale);
    store8(srow + 8, acc[r][1] * scale);
  }
}

// C[r][c0, c0+w) = sum_{j < jlen} W[r][j] * X[j][c0, c0+w) for r < rows, w = 8 * NV.
template <int NV>
void tile_wx(const float* W, int ldw, const float* X, int ldx, int rows, int jlen, int c0, float* C, int ldc) {
  const float* w[kTileR];
  for (int r = 0; r < kTileR; ++r) w[r] = W + static_cast<size_t>(std::min(r, rows - 1)) * ldw;
  f8 c00 = {}, c01 = {}, c10 = {}, c11 = {}, c20 = {}, c21 = {}, c30 = {}, c31 = {};
  const float* x = X + c0;
  for (int j = 0; j < jlen; ++j, x += ldx) {
    const f8 x0 = load8(x);
    const f8 x1 = NV == 2 ? load8(x + 8) : f8{};
    const float w0 = w[0][j], w1 = w[1][j], w2 = w[2][j], w3 = w[3][j];
    c00 += w0 * x0; c10 += w1 * x0; c20 += w2 * x0; c30 += w3 * x0;
    if (NV == 2) {
      c01 += w0 * x1; c11 += w1 * x1; c21 += w2 * x1; c31 += w3 * x1;
    }
  }
  const f8 acc[kTileR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}};
  for (int r = 0; r < rows; ++r) {
    float* crow = C + static_cast<size_t>(r) * ldc + c0;
    store8(crow, acc[r][0]);
    if (NV == 2) store8(crow + 8, acc[r][1]);
  }
}

// C[r][c0, c0+w) += sum_{i < icount} W[i][r] * X[i][c0, c0+w) for r < rows: the transposed weights.
// W[i][0..3] are contiguous (the caller guarantees four readable, zero where beyond the causal range),
// so one row of W feeds all four outputs.
template <int NV>
void tile_wtx(const float* W, int ldw, const float* X, int ldx, int rows, int icount, int c0, float* C, int ldc) {
  f8 c00 = {}, c01 = {}, c10 = {}, c11 = {}, c20 = {}, c21 = {}, c30 = {}, c31 = {};
  for (int i = 0; i < icount; ++i) {
    const float* x = X + static_cast<size_t>(i) * ldx + c0;
    const float* wr = W + static_cast<size_t>(i) * ldw;
    const f8 x0 = load8(x);
    const f8 x1 = NV == 2 ? load8(x + 8) : f8{};
    const float w0 = wr[0], w1 = wr[1], w2 = wr[2], w3 = wr[3];
    c00 += w0 * x0; c10 += w1 * x0; c20 += w2 * x0; c30 += w3 * x0;
    if (NV == 2) {
      c01 += w0 * x1; c11 += w1 * x1; c21 += w2 * x1; c31 += w3 * x1;
    }
  }
  const f8 acc[kTileR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}};
  for (int r = 0; r < rows; ++r) {
    float* crow = C + static_cast<size_t>(r) * ldc + c0;
    store8(crow, load8(crow) + acc[r][0]);
    if (NV == 2) store8(crow + 8, load8(crow + 8) + acc[r][1]);
  }
}

// The columns of hd beyond its last multiple of 8, one element at a time.
void tail_wx(const float* W, int ldw, const float* X, int ldx, int rows, int jlen, int c0, int c1, float* C, int ldc) {
  for (int r = 0; r < rows; ++r)
    for (int c = c0; c < c1; ++c) {
      float acc = 0.0f;
      for (int j = 0; j < jlen; ++j) acc += W[static_cast<size_t>(r) * ldw + j] * X[static_cast<size_t>(j) * ldx + c];
      C[static_cast<size_t>(r) * ldc + c] = acc;
    }
}
void tail_wtx(const float* W, int ldw, const float* X, int ldx, int rows, int icount, int c0, int c1, float* C,
              int ldc) {
  for (int r = 0; r < rows; ++r)
    for (int c = c0; c < c1; ++c) {
      float acc = 0.0f;
      for (int i = 0; i < icount; ++i) acc += W[static_cast<size_t>(i) * ldw + r] * X[static_cast<size_t>(i) * ldx + c];
      C[static_cast<size_t>(r) * ldc + c] += acc;
    }
}

// Rows [0, rows) of C = W[., 0:jlen) X over all hd columns (written).
void rows_wx(const float* W, int ldw, const float* X, int ldx, int rows, int jlen, int hd, float* C, int ldc) {
  int c0 = 0;
  for (; c0 + 16 <= hd; c0 += 16) tile_wx<2>(W, ldw, X, ldx, rows, jlen, c0, C, ldc);
  for (; c0 + 8 <= hd; c0 += 8) tile_wx<1>(W, ldw, X, ldx, rows, jlen, c0, C, ldc);
  if (c0 < hd) tail_wx(W, ldw, X, ldx, rows, jlen, c0, hd, C, ldc);
}
// Rows [0, rows) of C += W[0:icount, 0:rows)^T X over all hd columns.
void rows_wtx(const float* W, int ldw, const float* X, int ldx, int rows, int icount, int hd, float* C, int ldc) {
  int c0 = 0;
  for (; c0 + 16 <= hd; c0 += 16) tile_wtx<2>(W, ldw, X, ldx, rows, icount, c0, C, ldc);
  for (; c0 + 8 <= hd; c0 += 8) tile_wtx<1>(W, ldw, X, ldx, rows, icount, c0, C, ldc);
  if (c0 < hd) tail_wtx(W, ldw, X, ldx, rows, icount, c0, hd, C, ldc);
}

struct HeadPtrs {
  const float *Q, *K, *V;
};
HeadPtrs head_ptrs(const float* qkv, const Dims& D, int b, int h) {
  const float* base = qkv + static_cast<size_t>(b) * D.n * D.ld;
  return {base + h * D.hd, base + D.d + h * D.hd, base + 2 * D.d + h * D.hd};
}

void forward_head(const float* qkv, float* probs, float* out, const Dims& D, int bh, float p, uint64_t key) {
  const int b = bh / D.H, h = bh % D.H, n = D.n, hd = D.hd;
  const int np = round_up(n, kTileC);
  const HeadPtrs X = head_ptrs(qkv, D, b, h);
  Scratch& S = scratch();
  float* KT = Scratch::get(S.a, static_cast<size_t>(hd) * np);
  float* P = Scratch::get(S.b, static_cast<size_t>(std::min(n, kRowBlock)) * np);
  float* mult = Scratch::get(S.c, np);
  float* O = out + static_cast<size_t>(b) * n * D.d + h * hd;
  transpose_head(X.K, D.ld, n, hd, np, KT);

  for (int i0 = 0; i0 < n; i0 += kRowBlock) {
    const int rb = std::min(kRowBlock, n - i0);
    // Scores: rows [i, i+rows) need columns [0, i+rows) only.
    for (int t = 0; t < rb; t += kTileR) {
      const int rows = std::min(kTileR, rb - t), i = i0 + t;
      for (int j0 = 0; j0 < i + rows; j0 += kTileC)
        tile_abt(X.Q + static_cast<size_t>(i) * D.ld, D.ld, KT, np, hd, rows, j0, P + static_cast<size_t>(t) * np,
                 np, D.scale);
    }
    const int jcap = std::min(np, round_up(i0 + rb, kTileC));  // the columns this block touches
    for (int r = 0; r < rb; ++r) {
      const int i = i0 + r;
      float* row = P + static_cast<size_t>(r) * np;
      softmax_row(row, i + 1, jcap);  // zeros up to jcap: the products below read whole tiles
      std::memcpy(probs + (static_cast<size_t>(bh) * n + i) * n, row, sizeof(float) * std::min(n, jcap));
      if (jcap < n) std::memset(probs + (static_cast<size_t>(bh) * n + i) * n + jcap, 0, sizeof(float) * (n - jcap));
      if (p > 0.0f) {
        dropout_row(mult, i + 1, p, key, (static_cast<uint64_t>(bh) * n + i) * n);
        for (int j = 0; j <= i; ++j) row[j] *= mult[j];
      }
    }
    for (int t = 0; t < rb; t += kTileR) {
      const int rows = std::min(kTileR, rb - t), i = i0 + t;
      rows_wx(P + static_cast<size_t>(t) * np, np, X.V, D.ld, rows, i + rows, hd, O + static_cast<size_t>(i) * D.d,
              D.d);
    }
  }
}

void backward_head(const float* qkv, const float* probs, const float* dout, float* dqkv, const Dims& D, int bh,
                   float p, uint64_t key) {
  const int b = bh / D.H, h = bh % D.H, n = D.n, hd = D.hd;
  const int np = round_up(n, kTileC);
  const HeadPtrs X = head_ptrs(qkv, D, b, h);
  float* dbase = dqkv + static_cast<size_t>(b) * n * D.ld;
  float* dQ = dbase + h * hd;
  float* dK = dbase + D.d + h * hd;
  float* dV = dbase + 2 * D.d + h * hd;
  const float* dO = dout + static_cast<size_t>(b) * n * D.d + h * hd;
  const size_t blk = static_cast<size_t>(std::min(n, kRowBlock)) * np;
  Scratch& S = scratch();
  float* VT = Scratch::get(S.a, static_cast<size_t>(hd) * np);
  float* Pd = Scratch::get(S.b, blk);
  float* dS = Scratch::get(S.c, blk);
  float* M = p > 0.0f ? Scratch::get(S.d, blk) : nullptr;
  transpose_head(X.V, D.ld, n, hd, np, VT);
  // dK and dV are sums over query rows, accumulated block by block (in order: deterministic).
  for (int j = 0; j < n; ++j) {
    std::fill(dK + static_cast<size_t>(j) * D.ld, dK + static_cast<size_t>(j) * D.ld + hd, 0.0f);
    std::fill(dV + static_cast<size_t>(j) * D.ld, dV + static_cast<size_t>(j) * D.ld + hd, 0.0f);
  }

  for (int i0 = 0; i0 < n; i0 += kRowBlock) {
    const int rb = std::min(kRowBlock, n - i0), i1 = i0 + rb;
    const int jcap = std::min(np, round_up(i1, kTileC));
    // P_drop, zero past the diagonal up to jcap (the tiles read whole groups of 4 and 16 columns).
    for (int r = 0; r < rb; ++r) {
      const int i = i0 + r;
      const float* prow = probs + (static_cast<size_t>(bh) * n + i) * n;
      float* pr = Pd + static_cast<size_t>(r) * np;
      if (M) {
        float* mr = M + static_cast<size_t>(r) * np;
        dropout_row(mr, i + 1, p, key, (static_cast<uint64_t>(bh) * n + i) * n);
        for (int j = 0; j <= i; ++j) pr[j] = prow[j] * mr[j];
      } else {
        std::memcpy(pr, prow, sizeof(float) * (i + 1));
      }
      std::fill(pr + i + 1, pr + jcap, 0.0f);
    }
    // dP_drop = dO V^T (rows i, columns j <= i).
    for (int t = 0; t < rb; t += kTileR) {
      const int rows = std::min(kTileR, rb - t), i = i0 + t;
      for (int j0 = 0; j0 < i + rows; j0 += kTileC)
        tile_abt(dO + static_cast<size_t>(i) * D.d, D.d, VT, np, hd, rows, j0, dS + static_cast<size_t>(t) * np, np,
                 1.0f);
    }
    // dS = P * (dP - rowsum(dP * P)) * scale with dP = mask * dP_drop; zero past the diagonal.
    for (int r = 0; r < rb; ++r) {
      const int i = i0 + r, len = i + 1;
      const float* prow = probs + (static_cast<size_t>(bh) * n + i) * n;
      float* dr = dS + static_cast<size_t>(r) * np;
      if (M) {
        const float* mr = M + static_cast<size_t>(r) * np;
        for (int j = 0; j < len; ++j) dr[j] *= mr[j];
      }
      f8 acc = {};
      int j = 0;
      for (; j + kLanes <= len; j += kLanes) acc += load8(dr + j) * load8(prow + j);
      float t = hsum(acc);
      for (; j < len; ++j) t += dr[j] * prow[j];
      for (j = 0; j < len; ++j) dr[j] = prow[j] * (dr[j] - t) * D.scale;
      std::fill(dr + len, dr + jcap, 0.0f);
    }
    // dQ[i] = sum_{j <= i} dS[i][j] K[j]: complete within the block, written.
    for (int t = 0; t < rb; t += kTileR) {
      const int rows = std::min(kTileR, rb - t), i = i0 + t;
      rows_wx(dS + static_cast<size_t>(t) * np, np, X.K, D.ld, rows, i + rows, hd, dQ + static_cast<size_t>(i) * D.ld,
              D.ld);
    }
    // dK[j] += sum_{i in block} dS[i][j] Q[i];  dV[j] += sum_{i in block} P_drop[i][j] dO[i], for j < i1.
    // Rows i < j contribute zero, so each group of four j starts at i = max(i0, j0).
    for (int j0 = 0; j0 < i1; j0 += kTileR) {
      const int rows = std::min(kTileR, i1 - j0);
      const int ib = std::max(i0, j0), icount = i1 - ib;
      const size_t woff = static_cast<size_t>(ib - i0) * np + j0;
      rows_wtx(dS + woff, np, X.Q + static_cast<size_t>(ib) * D.ld, D.ld, rows, icount, hd,
               dK + static_cast<size_t>(j0) * D.ld, D.ld);
      rows_wtx(Pd + woff, np, dO + static_cast<size_t>(ib) * D.d, D.d, rows, icount, hd,
               dV + static_cast<size_t>(j0) * D.ld, D.ld);
    }
  }
}

Dims check_dims(const char* who, int B, int n, int d, int H, float p) {
  const std::string w(who);
  RT_CHECK(B >= 0 && n >= 0, w + ": B and n must be >= 0, got B=" + std::to_string(B) + " n=" + std::to_string(n));
  RT_CHECK(H > 0 && d > 0 && d % H == 0,
           w + ": d must be a positive multiple of the head count H, got d=" + std::to_string(d) +
               " H=" + std::to_string(H));
  RT_CHECK(p >= 0.0f && p < 1.0f, w + ": dropout rate p must be in [0, 1), got " + std::to_string(p));
  const int hd = d / H;
  return Dims{B, n, d, H, hd, 3 * d, 1.0f / std::sqrt(static_cast<float>(hd))};
}

// Work per (b, h) is ~n^2 * hd; aim for chunks of at least ~64K multiply-adds.
size_t head_grain(const Dims& D) {
  const double per = static_cast<double>(D.n) * D.n * D.hd;
  return static_cast<size_t>(std::max(1.0, std::ceil(65536.0 / std::max(per, 1.0))));
}

}  // namespace

void attention_forward(const float* qkv, float* probs, float* out, int B, int n, int d, int H, float p,
                       uint64_t seed, uint64_t stream) {
  const Dims D = check_dims("attention_forward", B, n, d, H, p);
  if (B == 0 || n == 0) return;
  const uint64_t key = rng_key(seed, stream);
  parallel_for(static_cast<size_t>(B) * H, head_grain(D), [&](size_t a, size_t e) {
    for (size_t bh = a; bh < e; ++bh) forward_head(qkv, probs, out, D, static_cast<int>(bh), p, key);
  });
}

void attention_backward(const float* qkv, const float* probs, const float* dout, float* dqkv, int B, int n, int d,
                        int H, float p, uint64_t seed, uint64_t stream) {
  const Dims D = check_dims("attention_backward", B, n, d, H, p);
  if (B == 0 || n == 0) return;
  const uint64_t key = rng_key(seed, stream);
  parallel_for(static_cast<size_t>(B) * H, head_grain(D), [&](size_t a, size_t e) {
    for (size_t bh = a; bh < e; ++bh) backward_head(qkv, probs, dout, dqkv, D, static_cast<int>(bh), p, key);
  });
}

}  // namespace rt::cpu
