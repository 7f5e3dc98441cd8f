// Causal multi-head self-attention, forward and backward, one (batch, head) pair per work item.
//
// Two code paths, chosen by sequence length only (so a given shape always takes the same one):
//  - short sequences (window pairs, n <= kDirectMaxN): direct loops. At n = 2..64 a GEMM call's packing
//    and dispatch overhead would exceed the work, and everything fits in L1.
//  - long sequences (w = 0, the plain transformer, n up to thousands): blocks of kRowBlock query rows
//    through rt::cpu::gemm, writing scores straight into `probs` (the one O(n^2) buffer the contract
//    gives us) and keeping only O(kRowBlock * n) per-thread scratch. Inside the parallel loop over
//    (b, h) those GEMMs run single-threaded (the pool runs nested work serially); with a single (b, h)
//    the loop has one chunk and the GEMMs use the whole pool.
//
// Softmax rows go through one routine in both paths. Reductions use eight float lanes via GCC vector
// extensions (no -ffast-math in the build, so plain float reductions would stay scalar), combined in a
// fixed order; nothing depends on the thread split.
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

namespace rt::cpu {
namespace {

// Without AVX enabled GCC warns that 32-byte vector arguments change the ABI; every function taking one
// here has internal linkage, so no ABI is crossed.
#pragma GCC diagnostic ignored "-Wpsabi"
typedef float f8 __attribute__((vector_size(32)));
typedef int32_t i8 __attribute__((vector_size(32)));
constexpr int kLanes = 8;
#ifdef RT_ATTN_DIRECT_MAX_N  // compile-time override, for measuring the crossover
constexpr int kDirectMaxN = RT_ATTN_DIRECT_MAX_N;
#else
constexpr int kDirectMaxN = 128;
#endif
constexpr int kRowBlock = 64;

inline f8 load8(const float* p) {
  f8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store8(float* p, f8 v) { std::memcpy(p, &v, sizeof v); }
inline f8 splat(float s) { return f8{} + s; }
inline float hsum(f8 v) { return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7])); }
inline float hmax(f8 v) {
  float m = v[0];
  for (int l = 1; l < kLanes; ++l) m = std::max(m, v[l]);
  return m;
}
inline int round_up(int v, int m) { return (v + m - 1) / m * m; }

// exp(x) for x <= 0, exactly 0 below -87.3 (and for -inf). Same construction as in activation.cc
// (range reduction by ln2, degree-6 polynomial fitted on [-ln2/2, ln2/2], exponent-bit scaling); kept
// as a private copy so each kernel file stands alone.
inline f8 exp_nonpos(f8 x) {
  const i8 under = x < splat(-87.3f);
  const f8 xc = under ? splat(-87.3f) : x;
  const f8 nf = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  f8 r = xc - nf * 0.693145751953125f;
  r = r - nf * 1.42860682030941723e-06f;
  f8 p = splat(1.375140790e-03f);
  p = p * r + 8.368916341e-03f;
  p = p * r + 4.166953311e-02f;
  p = p * r + 1.666651846e-01f;
  p = p * r + 4.999998860e-01f;
  p = (p * r) * r + r + 1.0f;
  const i8 bits = (__builtin_convertvector(nf, i8) + 127) << 23;
  const f8 v = p * (f8)bits;
  return under ? splat(0.0f) : v;
}

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
// rt::rng_uniform(key, i) >= p, four lanes at a time: u = k / 2^24 with k = mix64(...) >> 40, so
// u >= p  <=>  k >= ceil(p * 2^24) (p * 2^24 is exact in double), and the comparison stays in integers.
// The scalar form branches on a coin flip and runs ~15 ns per element at p = 0.5; this is ~1 ns.
typedef uint64_t u4 __attribute__((vector_size(32)));
typedef int64_t s4 __attribute__((vector_size(32)));
typedef int32_t i4 __attribute__((vector_size(16)));
typedef float f4 __attribute__((vector_size(16)));

inline u4 mix64x4(u4 z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

void dropout_row(float* mult, int len, float p, uint64_t key, uint64_t base) {
  if (p == 0.0f) {
    std::fill(mult, mult + len, 1.0f);
    return;
  }
  const float scale = 1.0f / (1.0f - p);
  const int64_t threshold = static_cast<int64_t>(std::ceil(static_cast<double>(p) * 16777216.0));
  constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ULL;  // rng_uniform's index multiplier
  u4 z = key + (base + u4{0, 1, 2, 3}) * kGolden;
  const f4 on = f4{} + scale, off = f4{};
  for (int j = 0; j < len; j += 4) {
    const s4 k = (s4)(mix64x4(z) >> 40);
    const i4 keep = __builtin_convertvector(k >= threshold, i4);
    const f4 m = keep ? on : off;
    if (j + 4 <= len) {
      std::memcpy(mult + j, &m, sizeof m);
    } else {
      std::memcpy(mult + j, &m, sizeof(float) * (len - j));
    }
    z += 4 * kGolden;
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
// Direct path: the six small products of one head written as register-tiled loops (4 rows x 16
// columns of accumulators, like a GEMM micro-kernel) over per-thread scratch matrices of n x np floats,
// np = round_up(n, 16). One accumulator chain per output would leave the loops waiting on FMA latency.
//
// Every output element is a complete sum (never accumulated across tiles), so results do not depend
// on anything but the inputs, and dqkv is written, not added to.

constexpr int kTileR = 4;   // rows per register tile
constexpr int kTileC = 16;  // columns per register tile (two vectors)

// KT[c * np + j] = K[j][c] for j < n, zero-padded to np columns.
void transpose_head(const float* K, int ld, int n, int hd, int np, float* KT) {
  // Rows of K are read contiguously; the scattered writes stay inside KT, which is small and in L1.
  for (int j = 0; j < n; ++j) {
    const float* kj = K + static_cast<size_t>(j) * ld;
    for (int c = 0; c < hd; ++c) KT[static_cast<size_t>(c) * np + j] = kj[c];
  }
  for (int c = 0; c < hd; ++c)
    for (int j = n; j < np; ++j) KT[static_cast<size_t>(c) * np + j] = 0.0f;
}

// S[i][j0, j0+16) = scale * sum_c A[i][c] * BT[c][j] for the rows i of [i0, i0+rows).
// A rows have stride lda (q or dO inside their big buffers); BT is a zero-padded transposed operand.
void tile_abt(const float* A, int lda, const float* BT, int ldbt, int hd, int i0, int rows, int j0, float* S,
              int lds, float scale) {
  const float* a[kTileR];
  for (int r = 0; r < kTileR; ++r) a[r] = A + static_cast<size_t>(i0 + std::min(r, rows - 1)) * lda;
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
    float* srow = S + static_cast<size_t>(i0 + r) * lds + j0;
    store8(srow, acc[r][0] * scale);
    store8(srow + 8, acc[r][1] * scale);
  }
}

// C[i][c0, c0+w) = sum_{j < jlen} W[i][j] * X[j][c0, c0+w) for rows i of [i0, i0+rows), w = 8 * NV.
template <int NV>
void tile_wx(const float* W, int ldw, const float* X, int ldx, int i0, int rows, int jlen, int c0, float* C,
             int ldc) {
  const float* w[kTileR];
  for (int r = 0; r < kTileR; ++r) w[r] = W + static_cast<size_t>(i0 + std::min(r, rows - 1)) * ldw;
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
    float* crow = C + static_cast<size_t>(i0 + r) * ldc + c0;
    store8(crow, acc[r][0]);
    if (NV == 2) store8(crow + 8, acc[r][1]);
  }
}

// C[j][c0, c0+w) = sum_{i in [ibeg, n)} W[i][j] * X[i][c0, c0+w) for j of [j0, j0+rows): the transposed
// weights. W[i][j0 .. j0+3] are contiguous, so a row of W feeds all four outputs.
template <int NV>
void tile_wtx(const float* W, int ldw, const float* X, int ldx, int j0, int rows, int ibeg, int n, int c0,
              float* C, int ldc) {
  f8 c00 = {}, c01 = {}, c10 = {}, c11 = {}, c20 = {}, c21 = {}, c30 = {}, c31 = {};
  for (int i = ibeg; i < n; ++i) {
    const float* x = X + static_cast<size_t>(i) * ldx + c0;
    const float* wr = W + static_cast<size_t>(i) * ldw + j0;  // ldw >= j0 + 4 (np is a multiple of 16)
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
    float* crow = C + static_cast<size_t>(j0 + r) * ldc + c0;
    store8(crow, acc[r][0]);
    if (NV == 2) store8(crow + 8, acc[r][1]);
  }
}

// The column tail of hd that is not a multiple of 8, one element at a time.
void tail_wx(const float* W, int ldw, const float* X, int ldx, int i0, int rows, int jlen, int c0, int c1, float* C,
             int ldc) {
  for (int r = 0; r < rows; ++r) {
    const float* w = W + static_cast<size_t>(i0 + r) * ldw;
    for (int c = c0; c < c1; ++c) {
      float acc = 0.0f;
      for (int j = 0; j < jlen; ++j) acc += w[j] * X[static_cast<size_t>(j) * ldx + c];
      C[static_cast<size_t>(i0 + r) * ldc + c] = acc;
    }
  }
}
void tail_wtx(const float* W, int ldw, const float* X, int ldx, int j0, int rows, int ibeg, int n, int c0, int c1,
              float* C, int ldc) {
  for (int r = 0; r < rows; ++r)
    for (int c = c0; c < c1; ++c) {
      float acc = 0.0f;
      for (int i = ibeg; i < n; ++i) acc += W[static_cast<size_t>(i) * ldw + j0 + r] * X[static_cast<size_t>(i) * ldx + c];
      C[static_cast<size_t>(j0 + r) * ldc + c] = acc;
    }
}

// out rows [i0, i0+rows) = W[., 0:jlen) X, over all hd columns.
void rows_wx(const float* W, int ldw, const float* X, int ldx, int i0, int rows, int jlen, int hd, float* C, int ldc) {
  int c0 = 0;
  for (; c0 + 16 <= hd; c0 += 16) tile_wx<2>(W, ldw, X, ldx, i0, rows, jlen, c0, C, ldc);
  for (; c0 + 8 <= hd; c0 += 8) tile_wx<1>(W, ldw, X, ldx, i0, rows, jlen, c0, C, ldc);
  if (c0 < hd) tail_wx(W, ldw, X, ldx, i0, rows, jlen, c0, hd, C, ldc);
}
void rows_wtx(const float* W, int ldw, const float* X, int ldx, int j0, int rows, int ibeg, int n, int hd, float* C,
              int ldc) {
  int c0 = 0;
  for (; c0 + 16 <= hd; c0 += 16) tile_wtx<2>(W, ldw, X, ldx, j0, rows, ibeg, n, c0, C, ldc);
  for (; c0 + 8 <= hd; c0 += 8) tile_wtx<1>(W, ldw, X, ldx, j0, rows, ibeg, n, c0, C, ldc);
  if (c0 < hd) tail_wtx(W, ldw, X, ldx, j0, rows, ibeg, n, c0, hd, C, ldc);
}

struct HeadPtrs {
  const float *Q, *K, *V;
};
HeadPtrs head_ptrs(const float* qkv, const Dims& D, int b, int h) {
  const float* base = qkv + static_cast<size_t>(b) * D.n * D.ld;
  return {base + h * D.hd, base + D.d + h * D.hd, base + 2 * D.d + h * D.hd};
}

void forward_direct(const float* qkv, float* probs, float* out, const Dims& D, int bh, float p, uint64_t key) {
  const int b = bh / D.H, h = bh % D.H, n = D.n, hd = D.hd;
  const int np = round_up(n, kTileC);
  const HeadPtrs X = head_ptrs(qkv, D, b, h);
  Scratch& S = scratch();
  float* KT = Scratch::get(S.a, static_cast<size_t>(hd) * np);
  float* P = Scratch::get(S.b, static_cast<size_t>(n) * np);
  float* mult = Scratch::get(S.c, np);
  transpose_head(X.K, D.ld, n, hd, np, KT);

  // Scores: row block [i0, i0+rows) needs columns [0, i0+rows) only.
  for (int i0 = 0; i0 < n; i0 += kTileR) {
    const int rows = std::min(kTileR, n - i0);
    for (int j0 = 0; j0 < i0 + rows; j0 += kTileC) tile_abt(X.Q, D.ld, KT, np, hd, i0, rows, j0, P, np, D.scale);
  }
  for (int i = 0; i < n; ++i) {
    float* row = P + static_cast<size_t>(i) * np;
    softmax_row(row, i + 1, np);  // zeros up to np: the products below read whole tiles
    std::memcpy(probs + (static_cast<size_t>(bh) * n + i) * n, row, sizeof(float) * n);
    if (p > 0.0f) {
      dropout_row(mult, i + 1, p, key, (static_cast<uint64_t>(bh) * n + i) * n);
      for (int j = 0; j <= i; ++j) row[j] *= mult[j];
    }
  }
  float* O = out + static_cast<size_t>(b) * n * D.d + h * hd;
  for (int i0 = 0; i0 < n; i0 += kTileR) {
    const int rows = std::min(kTileR, n - i0);
    rows_wx(P, np, X.V, D.ld, i0, rows, i0 + rows, hd, O, D.d);
  }
}

void backward_direct(const float* qkv, const float* probs, const float* dout, float* dqkv, const Dims& D, int bh,
                     float p, uint64_t key) {
  const int b = bh / D.H, h = bh % D.H, n = D.n, hd = D.hd;
  const int np = round_up(n, kTileC);
  const HeadPtrs X = head_ptrs(qkv, D, b, h);
  float* dbase = dqkv + static_cast<size_t>(b) * n * D.ld;
  float* dQ = dbase + h * hd;
  float* dK = dbase + D.d + h * hd;
  float* dV = dbase + 2 * D.d + h * hd;
  const float* dO = dout + static_cast<size_t>(b) * n * D.d + h * hd;
  Scratch& S = scratch();
  float* VT = Scratch::get(S.a, static_cast<size_t>(hd) * np);
  float* Pd = Scratch::get(S.b, static_cast<size_t>(n) * np);
  float* dS = Scratch::get(S.c, static_cast<size_t>(n) * np);
  float* M = p > 0.0f ? Scratch::get(S.d, static_cast<size_t>(n) * np) : nullptr;
  transpose_head(X.V, D.ld, n, hd, np, VT);

  // P_drop with zeros past the diagonal (whole rows of np: the tiles read them).
  for (int i = 0; i < n; ++i) {
    const float* prow = probs + (static_cast<size_t>(bh) * n + i) * n;
    float* pr = Pd + static_cast<size_t>(i) * np;
    if (M) {
      float* mr = M + static_cast<size_t>(i) * np;
      dropout_row(mr, i + 1, p, key, (static_cast<uint64_t>(bh) * n + i) * n);
      for (int j = 0; j <= i; ++j) pr[j] = prow[j] * mr[j];
    } else {
      std::memcpy(pr, prow, sizeof(float) * (i + 1));
    }
    std::fill(pr + i + 1, pr + np, 0.0f);
  }
  // dP_drop = dO V^T (rows i, columns j <= i).
  for (int i0 = 0; i0 < n; i0 += kTileR) {
    const int rows = std::min(kTileR, n - i0);
    for (int j0 = 0; j0 < i0 + rows; j0 += kTileC) tile_abt(dO, D.d, VT, np, hd, i0, rows, j0, dS, np, 1.0f);
  }
  // dS = P * (dP - rowsum(dP * P)) * scale with dP = mask * dP_drop; zero past the diagonal.
  for (int i = 0; i < n; ++i) {
    const int len = i + 1;
    const float* prow = probs + (static_cast<size_t>(bh) * n + i) * n;
    float* dr = dS + static_cast<size_t>(i) * np;
    if (M) {
      const float* mr = M + static_cast<size_t>(i) * np;
      for (int j = 0; j < len; ++j) dr[j] *= mr[j];
    }
    f8 acc = {};
    int j = 0;
    for (; j + kLanes <= len; j += kLanes) acc += load8(dr + j) * load8(prow + j);
    float t = hsum(acc);
    for (; j < len; ++j) t += dr[j] * prow[j];
    for (j = 0; j < len; ++j) dr[j] = prow[j] * (dr[j] - t) * D.scale;
    std::fill(dr + len, dr + np, 0.0f);
  }
  for (int i0 = 0; i0 < n; i0 += kTileR) {
    const int rows = std::min(kTileR, n - i0);
    // dQ[i] = sum_{j <= i} dS[i][j] K[j]
    rows_wx(dS, np, X.K, D.ld, i0, rows, i0 + rows, hd, dQ, D.ld);
    // dK[j] = sum_{i >= j} dS[i][j] Q[i];  dV[j] = sum_{i >= j} P_drop[i][j] dO[i]
    rows_wtx(dS, np, X.Q, D.ld, i0, rows, i0, n, hd, dK, D.ld);
    rows_wtx(Pd, np, dO, D.d, i0, rows, i0, n, hd, dV, D.ld);
  }
}

// ---------------------------------------------------------------------------------------------------
// Blocked path (long sequences).

void forward_blocked(const float* qkv, float* probs, float* out, const Dims& D, int bh, float p, uint64_t key) {
  const int b = bh / D.H, h = bh % D.H, n = D.n, hd = D.hd;
  const float* base = qkv + static_cast<size_t>(b) * n * D.ld;
  const float* Q = base + h * hd;
  const float* K = base + D.d + h * hd;
  const float* V = base + 2 * D.d + h * hd;
  float* P = probs + static_cast<size_t>(bh) * n * n;
  Scratch& S = scratch();
  // softmax_row processes whole blocks of 8: one spare row of slack covers the last row of P.
  float* tmp = Scratch::get(S.a, static_cast<size_t>(round_up(n, kLanes)));
  float* pd = p > 0.0f ? Scratch::get(S.b, static_cast<size_t>(kRowBlock) * n) : nullptr;

  for (int i0 = 0; i0 < n; i0 += kRowBlock) {
    const int i1 = std::min(n, i0 + kRowBlock), rb = i1 - i0;
    // Scores for rows [i0, i1) against keys [0, i1) (causality: nothing beyond i1 is needed).
    gemm(false, true, rb, i1, hd, D.scale, Q + static_cast<size_t>(i0) * D.ld, D.ld, K, D.ld, 0.0f,
         P + static_cast<size_t>(i0) * n, n);
    for (int r = 0; r < rb; ++r) {
      const int i = i0 + r;
      float* row = P + static_cast<size_t>(i) * n;
      // The row has n floats but softmax_row may touch up to round_up(n, 8): go through tmp.
      std::memcpy(tmp, row, sizeof(float) * (i + 1));
      softmax_row(tmp, i + 1, n);
      std::memcpy(row, tmp, sizeof(float) * n);
      if (pd) {
        float* pr = pd + static_cast<size_t>(r) * i1;
        dropout_row(pr, i + 1, p, key, (static_cast<uint64_t>(bh) * n + i) * n);
        for (int j = 0; j <= i; ++j) pr[j] *= row[j];
        std::fill(pr + i + 1, pr + i1, 0.0f);
      }
    }
    const float* A = pd ? pd : P + static_cast<size_t>(i0) * n;
    const int lda = pd ? i1 : n;
    gemm(false, false, rb, hd, i1, 1.0f, A, lda, V, D.ld, 0.0f,
         out + (static_cast<size_t>(b) * n + i0) * D.d + h * hd, D.d);
  }
}

void backward_blocked(const float* qkv, const float* probs, const float* dout, float* dqkv, const Dims& D, int bh,
                      float p, uint64_t key) {
  const int b = bh / D.H, h = bh % D.H, n = D.n, hd = D.hd;
  const float* base = qkv + static_cast<size_t>(b) * n * D.ld;
  const float* Q = base + h * hd;
  const float* K = base + D.d + h * hd;
  const float* V = base + 2 * D.d + h * hd;
  float* dbase = dqkv + static_cast<size_t>(b) * n * D.ld;
  float* dQ = dbase + h * hd;
  float* dK = dbase + D.d + h * hd;
  float* dV = dbase + 2 * D.d + h * hd;
  const float* P = probs + static_cast<size_t>(bh) * n * n;
  const float* dO = dout + static_cast<size_t>(b) * n * D.d + h * hd;
  Scratch& S = scratch();
  float* mult = Scratch::get(S.a, static_cast<size_t>(kRowBlock) * n);
  float* pd = p > 0.0f ? Scratch::get(S.b, static_cast<size_t>(kRowBlock) * n) : nullptr;
  float* ds = Scratch::get(S.c, static_cast<size_t>(kRowBlock) * n);
  for (int j = 0; j < n; ++j) {
    std::fill(dK + static_cast<size_t>(j) * D.ld, dK + static_cast<size_t>(j) * D.ld + hd, 0.0f);
    std::fill(dV + static_cast<size_t>(j) * D.ld, dV + static_cast<size_t>(j) * D.ld + hd, 0.0f);
  }

  for (int i0 = 0; i0 < n; i0 += kRowBlock) {
    const int i1 = std::min(n, i0 + kRowBlock), rb = i1 - i0;
    if (pd) {
      for (int r = 0; r < rb; ++r) {
        const int i = i0 + r;
        float* mr = mult + static_cast<size_t>(r) * i1;
        float* pr = pd + static_cast<size_t>(r) * i1;
        const float* prow = P + static_cast<size_t>(i) * n;
        dropout_row(mr, i + 1, p, key, (static_cast<uint64_t>(bh) * n + i) * n);
        for (int j = 0; j <= i; ++j) pr[j] = prow[j] * mr[j];
        std::fill(pr + i + 1, pr + i1, 0.0f);
      }
    }
    const float* A = pd ? pd : P + static_cast<size_t>(i0) * n;
    const int lda = pd ? i1 : n;
    const float* dOb = dO + static_cast<size_t>(i0) * D.d;
    // dV[0, i1) += P_drop^T dO
    gemm(true, false, i1, hd, rb, 1.0f, A, lda, dOb, D.d, 1.0f, dV, D.ld);
    // dP_drop = dO V^T
    gemm(false, true, rb, i1, hd, 1.0f, dOb, D.d, V, D.ld, 0.0f, ds, i1);
    for (int r = 0; r < rb; ++r) {
      const int i = i0 + r, len = i + 1;
      const float* prow = P + static_cast<size_t>(i) * n;
      float* dr = ds + static_cast<size_t>(r) * i1;
      if (pd) {
        const float* mr = mult + static_cast<size_t>(r) * i1;
        for (int j = 0; j < len; ++j) dr[j] *= mr[j];
      }
      f8 acc = {};
      int j = 0;
      for (; j + kLanes <= len; j += kLanes) acc += load8(dr + j) * load8(prow + j);
      float t = hsum(acc);
      for (; j < len; ++j) t += dr[j] * prow[j];
      for (j = 0; j < len; ++j) dr[j] = prow[j] * (dr[j] - t) * D.scale;
      std::fill(dr + len, dr + i1, 0.0f);
    }
    // dQ rows [i0, i1) = dS K[0, i1);  dK[0, i1) += dS^T Q rows [i0, i1)
    gemm(false, false, rb, hd, i1, 1.0f, ds, i1, K, D.ld, 0.0f, dQ + static_cast<size_t>(i0) * D.ld, D.ld);
    gemm(true, false, i1, hd, rb, 1.0f, ds, i1, Q + static_cast<size_t>(i0) * D.ld, D.ld, 1.0f, dK, D.ld);
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
  const bool direct = n <= kDirectMaxN;
  parallel_for(static_cast<size_t>(B) * H, head_grain(D), [&](size_t a, size_t e) {
    for (size_t bh = a; bh < e; ++bh) {
      if (direct)
        forward_direct(qkv, probs, out, D, static_cast<int>(bh), p, key);
      else
        forward_blocked(qkv, probs, out, D, static_cast<int>(bh), p, key);
    }
  });
}

void attention_backward(const float* qkv, const float* probs, const float* dout, float* dqkv, int B, int n, int d,
                        int H, float p, uint64_t seed, uint64_t stream) {
  const Dims D = check_dims("attention_backward", B, n, d, H, p);
  if (B == 0 || n == 0) return;
  const uint64_t key = rng_key(seed, stream);
  const bool direct = n <= kDirectMaxN;
  parallel_for(static_cast<size_t>(B) * H, head_grain(D), [&](size_t a, size_t e) {
    for (size_t bh = a; bh < e; ++bh) {
      if (direct)
        backward_direct(qkv, probs, dout, dqkv, D, static_cast<int>(bh), p, key);
      else
        backward_blocked(qkv, probs, dout, dqkv, D, static_cast<int>(bh), p, key);
    }
  });
}

}  // namespace rt::cpu
