// GEMM and the linear layer built on it.
//
// Parallelism: every GEMM is split over rows of C (or columns when C has few rows) across rt's pool,
// each chunk being an independent single-threaded GEMM. The chunks depend only on the shape and the
// thread count, so results are the same bits on every run. Splitting over M or N does not change the
// order in which any element of C sums over K; the built-in engine is therefore bit-identical for any
// thread count. OpenBLAS is too for row splits (see kUnitM), but its column edges may round differently.
//
// Two single-threaded engines:
//  - RT_OPENBLAS: cblas_sgemm with OpenBLAS's own threading switched off (see thread_pool.h for why).
//  - built-in: a packed, cache-blocked GEMM (Goto/BLIS structure) around a 6x16 AVX2/FMA register
//    kernel, with a portable kernel of identical arithmetic when AVX2/FMA are not enabled.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>

#include "core/error.h"
#include "core/thread_pool.h"
#include "cpu/kernels.h"

#ifdef RT_OPENBLAS
#include <cblas.h>
#endif
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define RT_GEMM_AVX2 1
#endif

namespace rt::cpu {
namespace {

#pragma GCC diagnostic ignored "-Wpsabi"  // vector arguments of internal-linkage functions only
typedef float f4 __attribute__((vector_size(16)));
typedef double d4 __attribute__((vector_size(32), may_alias));

// Below this many flops a GEMM runs on the caller alone: waking the pool costs more than it saves.
constexpr double kMinParallelFlops = 1.5e6;
// Each parallel chunk should have at least this much work (~10 us), so that the hand-off (~1 us) and
// the per-call packing of the shared operand stay small next to it.
constexpr double kMinChunkFlops = 8e5;

// Scales C by beta, where beta == 0 means "overwrite" (NaN/Inf in C are discarded, as BLAS does).
void scale_c(int M, int N, float beta, float* C, int ldc) {
  for (int i = 0; i < M; ++i) {
    float* c = C + static_cast<size_t>(i) * ldc;
    if (beta == 0.0f) {
      std::memset(c, 0, sizeof(float) * N);
    } else if (beta != 1.0f) {
      for (int j = 0; j < N; ++j) c[j] *= beta;
    }
  }
}

#ifndef RT_OPENBLAS
// ------------------------------------------------------------------------------------------------
// Built-in engine.
//
// Blocking for Zen 4 / Skylake-class caches: one MR x KC sliver of A (6 KB) and one KC x NR sliver of
// B (16 KB) live in L1 during the register kernel; the packed MC x KC block of A (~144 KB) in L2; the
// packed KC x NC panel of B in L3.
constexpr int MR = 6;
constexpr int NR = 16;
constexpr int KC = 256;
constexpr int MC = 144;  // multiple of MR
constexpr int NC = 3072; // multiple of NR

// Stores one MR x NR tile: C = alpha*acc (+ beta*C). With the AVX2 kernel, elements are computed as
// fma(beta, C, alpha*acc) in both the vector and this scalar path, so a given element gets the same bits
// whether it falls in a full tile or an edge tile (which depends on how the GEMM was split across
// threads). The portable kernel stores every tile through here, so it needs no such care, and must not
// call std::fma: without hardware FMA that is a slow library routine.
inline float combine(float acc, float alpha, float beta, float c) {
  const float t = alpha * acc;
#ifdef RT_GEMM_AVX2
  return beta == 0.0f ? t : std::fma(beta, c, t);
#else
  return beta == 0.0f ? t : beta * c + t;
#endif
}

void store_edge(const float* acc, int m, int n, float alpha, float beta, float* C, int ldc) {
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) {
      float* c = C + static_cast<size_t>(i) * ldc + j;
      *c = combine(acc[i * NR + j], alpha, beta, *c);
    }
}

#ifdef RT_GEMM_AVX2
// 6x16 register kernel: 12 accumulators + 2 B vectors + 1 broadcast = 15 of the 16 ymm registers.
// a: kc groups of MR floats; b: kc groups of NR floats (both packed, zero-padded).
void micro_kernel(int kc, const float* __restrict a, const float* __restrict b, float* C, int ldc, int m,
                  int n, float alpha, float beta) {
  __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps();
  __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
  __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();
  __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
  __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps();
  __m256 c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
#define RT_STEP(K)                                            \
  {                                                           \
    const __m256 b0 = _mm256_load_ps(b + (K)*NR);             \
    const __m256 b1 = _mm256_load_ps(b + (K)*NR + 8);         \
    __m256 av = _mm256_broadcast_ss(a + (K)*MR + 0);          \
    c00 = _mm256_fmadd_ps(av, b0, c00);                       \
    c01 = _mm256_fmadd_ps(av, b1, c01);                       \
    av = _mm256_broadcast_ss(a + (K)*MR + 1);                 \
    c10 = _mm256_fmadd_ps(av, b0, c10);                       \
    c11 = _mm256_fmadd_ps(av, b1, c11);                       \
    av = _mm256_broadcast_ss(a + (K)*MR + 2);                 \
    c20 = _mm256_fmadd_ps(av, b0, c20);                       \
    c21 = _mm256_fmadd_ps(av, b1, c21);                       \
    av = _mm256_broadcast_ss(a + (K)*MR + 3);                 \
    c30 = _mm256_fmadd_ps(av, b0, c30);                       \
    c31 = _mm256_fmadd_ps(av, b1, c31);                       \
    av = _mm256_broadcast_ss(a + (K)*MR + 4);                 \
    c40 = _mm256_fmadd_ps(av, b0, c40);                       \
    c41 = _mm256_fmadd_ps(av, b1, c41);                       \
    av = _mm256_broadcast_ss(a + (K)*MR + 5);                 \
    c50 = _mm256_fmadd_ps(av, b0, c50);                       \
    c51 = _mm256_fmadd_ps(av, b1, c51);                       \
  }
  int k = 0;
  for (; k + 4 <= kc; k += 4) {
    _mm_prefetch(reinterpret_cast<const char*>(b + 8 * NR), _MM_HINT_T0);
    RT_STEP(0) RT_STEP(1) RT_STEP(2) RT_STEP(3)
    a += 4 * MR;
    b += 4 * NR;
  }
  for (; k < kc; ++k) {
    RT_STEP(0)
    a += MR;
    b += NR;
  }
#undef RT_STEP
  const __m256 acc[MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
  if (m == MR && n == NR) {
    const __m256 va = _mm256_set1_ps(alpha);
    if (beta == 0.0f) {
      for (int i = 0; i < MR; ++i) {
        float* c = C + static_cast<size_t>(i) * ldc;
        _mm256_storeu_ps(c, _mm256_mul_ps(va, acc[i][0]));
        _mm256_storeu_ps(c + 8, _mm256_mul_ps(va, acc[i][1]));
      }
    } else {
      const __m256 vb = _mm256_set1_ps(beta);
      for (int i = 0; i < MR; ++i) {
        float* c = C + static_cast<size_t>(i) * ldc;
        _mm256_storeu_ps(c, _mm256_fmadd_ps(vb, _mm256_loadu_ps(c), _mm256_mul_ps(va, acc[i][0])));
        _mm256_storeu_ps(c + 8, _mm256_fmadd_ps(vb, _mm256_loadu_ps(c + 8), _mm256_mul_ps(va, acc[i][1])));
      }
    }
  } else {
    alignas(32) float tmp[MR * NR];
    for (int i = 0; i < MR; ++i) {
      _mm256_store_ps(tmp + i * NR, acc[i][0]);
      _mm256_store_ps(tmp + i * NR + 8, acc[i][1]);
    }
    store_edge(tmp, m, n, alpha, beta, C, ldc);
  }
}
#else
// Portable kernel (no AVX2/FMA at compile time): the same packed layout, with the tile held in vector
// types of 16 bytes (SSE2, NEON) so that it vectorizes at -O2 too. The 16 columns are done as two
// halves of 8: a 6 x 8 tile is 12 accumulators, which fits the 16 registers of SSE2.
typedef float v4 __attribute__((vector_size(16)));
void micro_kernel(int kc, const float* __restrict a, const float* __restrict b, float* C, int ldc, int m,
                  int n, float alpha, float beta) {
  alignas(16) float out[MR * NR];
  for (int half = 0; half < 2; ++half) {
    // Named accumulators, not an array: at -O2 GCC keeps an indexed array in memory.
    v4 c00 = {}, c01 = {}, c10 = {}, c11 = {}, c20 = {}, c21 = {};
    v4 c30 = {}, c31 = {}, c40 = {}, c41 = {}, c50 = {}, c51 = {};
    const float* ak = a;
    const float* bk = b + half * 8;
    for (int k = 0; k < kc; ++k, ak += MR, bk += NR) {
      v4 b0, b1;
      std::memcpy(&b0, bk, sizeof b0);
      std::memcpy(&b1, bk + 4, sizeof b1);
      c00 += ak[0] * b0; c01 += ak[0] * b1;
      c10 += ak[1] * b0; c11 += ak[1] * b1;
      c20 += ak[2] * b0; c21 += ak[2] * b1;
      c30 += ak[3] * b0; c31 += ak[3] * b1;
      c40 += ak[4] * b0; c41 += ak[4] * b1;
      c50 += ak[5] * b0; c51 += ak[5] * b1;
    }
    const v4 acc[MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
    for (int i = 0; i < MR; ++i) std::memcpy(out + i * NR + half * 8, acc[i], sizeof acc[i]);
  }
  store_edge(out, m, n, alpha, beta, C, ldc);
}
#endif

// Packs op(A)[i0:i0+mc, p0:p0+kc] as ceil(mc/MR) slivers of kc x MR, zero-padding the last.
void pack_a(bool transA, const float* A, int lda, int i0, int mc, int p0, int kc, float* out) {
  for (int ir = 0; ir < mc; ir += MR) {
    const int m = std::min(MR, mc - ir);
    float* o = out + static_cast<size_t>(ir) * kc;
    if (!transA) {
      const float* rows[MR];
      for (int r = 0; r < MR; ++r)
        rows[r] = A + static_cast<size_t>(i0 + ir + std::min(r, m - 1)) * lda + p0;
      if (m == MR) {
        for (int k = 0; k < kc; ++k)
          for (int r = 0; r < MR; ++r) o[k * MR + r] = rows[r][k];
      } else {
        for (int k = 0; k < kc; ++k)
          for (int r = 0; r < MR; ++r) o[k * MR + r] = r < m ? rows[r][k] : 0.0f;
      }
    } else {
      for (int k = 0; k < kc; ++k) {
        const float* src = A + static_cast<size_t>(p0 + k) * lda + i0 + ir;
        for (int r = 0; r < MR; ++r) o[k * MR + r] = r < m ? src[r] : 0.0f;
      }
    }
  }
}

// Packs op(B)[p0:p0+kc, j0:j0+nc] as ceil(nc/NR) slivers of kc x NR, zero-padding the last.
void pack_b(bool transB, const float* B, int ldb, int p0, int kc, int j0, int nc, float* out) {
  for (int jr = 0; jr < nc; jr += NR) {
    const int n = std::min(NR, nc - jr);
    float* o = out + static_cast<size_t>(jr) * kc;
    if (!transB) {
      for (int k = 0; k < kc; ++k) {
        const float* src = B + static_cast<size_t>(p0 + k) * ldb + j0 + jr;
        if (n == NR) {
          std::memcpy(o + k * NR, src, sizeof(float) * NR);
        } else {
          for (int j = 0; j < NR; ++j) o[k * NR + j] = j < n ? src[j] : 0.0f;
        }
      }
    } else {
      // op(B)[k][j] = B[j][k]: NR source rows read in parallel, in blocks of 8 k so that the writes
      // stay within a few cache lines.
      const float* rows[NR];
      for (int j = 0; j < NR; ++j) rows[j] = B + static_cast<size_t>(j0 + jr + std::min(j, n - 1)) * ldb + p0;
      int k = 0;
      for (; k + 8 <= kc; k += 8)
        for (int j = 0; j < NR; ++j)
          for (int kk = 0; kk < 8; ++kk) o[(k + kk) * NR + j] = j < n ? rows[j][k + kk] : 0.0f;
      for (; k < kc; ++k)
        for (int j = 0; j < NR; ++j) o[k * NR + j] = j < n ? rows[j][k] : 0.0f;
    }
  }
}

struct AlignedFree {
  void operator()(float* p) const { std::free(p); }
};

// Per-thread packing buffers, grown on demand and kept for the thread's lifetime: a GEMM is called tens
// of times per window step and allocating every time would cost more than small GEMMs themselves.
struct PackBuffers {
  std::unique_ptr<float, AlignedFree> a, b;
  size_t a_cap = 0, b_cap = 0;
  static float* grow(std::unique_ptr<float, AlignedFree>& p, size_t& cap, size_t n) {
    if (n > cap) {
      const size_t bytes = (n * sizeof(float) + 63) / 64 * 64;
      p.reset(static_cast<float*>(std::aligned_alloc(64, bytes)));
      if (!p) throw Error("out of memory: gemm packing buffer of " + std::to_string(bytes) + " bytes");
      cap = n;
    }
    return p.get();
  }
};

void gemm_serial(bool transA, bool transB, int M, int N, int K, float alpha, const float* A, int lda,
                 const float* B, int ldb, float beta, float* C, int ldc) {
  thread_local PackBuffers buf;
  const int kc_max = std::min(K, KC);
  const int nc_max = (std::min(N, NC) + NR - 1) / NR * NR;
  const int mc_max = (std::min(M, MC) + MR - 1) / MR * MR;
  float* bp = PackBuffers::grow(buf.b, buf.b_cap, static_cast<size_t>(kc_max) * nc_max);
  float* ap = PackBuffers::grow(buf.a, buf.a_cap, static_cast<size_t>(kc_max) * mc_max);

  for (int jc = 0; jc < N; jc += NC) {
    const int nc = std::min(NC, N - jc);
    for (int pc = 0; pc < K; pc += KC) {
      const int kc = std::min(KC, K - pc);
      // Beta applies once, on the first K block; later blocks accumulate.
      const float beta_eff = pc == 0 ? beta : 1.0f;
      pack_b(transB, B, ldb, pc, kc, jc, nc, bp);
      for (int ic = 0; ic < M; ic += MC) {
        const int mc = std::min(MC, M - ic);
        pack_a(transA, A, lda, ic, mc, pc, kc, ap);
        for (int jr = 0; jr < nc; jr += NR) {
          const int n = std::min(NR, nc - jr);
          for (int ir = 0; ir < mc; ir += MR) {
            const int m = std::min(MR, mc - ir);
            micro_kernel(kc, ap + static_cast<size_t>(ir) * kc, bp + static_cast<size_t>(jr) * kc,
                         C + static_cast<size_t>(ic + ir) * ldc + jc + jr, ldc, m, n, alpha, beta_eff);
          }
        }
      }
    }
  }
}

#else
// ------------------------------------------------------------------------------------------------
// OpenBLAS engine.
void gemm_serial(bool transA, bool transB, int M, int N, int K, float alpha, const float* A, int lda,
                 const float* B, int ldb, float beta, float* C, int ldc) {
  cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans, M, N,
              K, alpha, A, lda, B, ldb, beta, C, ldc);
}
#endif

// Chunk sizes of the thread split. Rows come in multiples of 24: a multiple of the built-in kernel's
// MR = 6, and the granularity at which OpenBLAS 0.3.21 (core "Zen" here) gives the same bits for a
// row-split product as for the whole one (measured: seams at multiples of 24 keep every bit; seams at
// 8, 16, 32 or 64 rows change some, because its row-edge kernels round differently). Columns come in
// multiples of 16 (the built-in NR); OpenBLAS changes bits at any column seam.
constexpr int kUnitM = 24;
constexpr int kUnitN = 16;

void check_gemm_args(bool transA, bool transB, int M, int N, int K, int lda, int ldb, int ldc) {
  RT_CHECK(M >= 0 && N >= 0 && K >= 0, "gemm: M, N, K must be >= 0");
  RT_CHECK(lda >= std::max(1, transA ? M : K),
           "gemm: lda must be >= " + std::to_string(std::max(1, transA ? M : K)) + ", got " + std::to_string(lda));
  RT_CHECK(ldb >= std::max(1, transB ? K : N),
           "gemm: ldb must be >= " + std::to_string(std::max(1, transB ? K : N)) + ", got " + std::to_string(ldb));
  RT_CHECK(ldc >= std::max(1, N), "gemm: ldc must be >= " + std::to_string(std::max(1, N)) + ", got " + std::to_string(ldc));
}

}  // namespace

const char* gemm_backend() {
#ifdef RT_OPENBLAS
  return "openblas";
#else
  return "builtin";
#endif
}

void gemm(bool transA, bool transB, int M, int N, int K, float alpha, const float* A, int lda, const float* B,
          int ldb, float beta, float* C, int ldc) {
  check_gemm_args(transA, transB, M, N, K, lda, ldb, ldc);
  if (M == 0 || N == 0) return;
  if (K == 0 || alpha == 0.0f) {
    // No product to form; do not read A or B (they may be null).
    parallel_for(M, std::max(1, (1 << 14) / N), [&](size_t b, size_t e) {
      scale_c(static_cast<int>(e - b), N, beta, C + b * ldc, ldc);
    });
    return;
  }
#ifdef RT_OPENBLAS
  static std::once_flag once;
  std::call_once(once, [] { openblas_set_num_threads(1); });
#endif

  const double flops = 2.0 * M * N * K;
  const int nt = num_threads();
  if (nt == 1 || flops < kMinParallelFlops) {
    gemm_serial(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  // Split rows unless there are too few to give every thread a couple of row units. Rows are preferred:
  // each chunk writes a contiguous slab of C, and (with OpenBLAS) a row split keeps the bits of the
  // undivided product, while a column split can change the last bit of some elements, because
  // OpenBLAS's kernels treat column edges differently. The built-in engine computes every element the
  // same way wherever the seams fall, so its results never depend on the thread count.
  const bool split_m = M >= 2 * kUnitM * nt || M >= N;
  const int extent = split_m ? M : N;
  const int unit = split_m ? kUnitM : kUnitN;
  const size_t units = (extent + unit - 1) / unit;
  const double unit_flops = flops / extent * unit;
  const size_t grain = static_cast<size_t>(std::max(1.0, std::ceil(kMinChunkFlops / unit_flops)));
  parallel_for(units, grain, [&](size_t ub, size_t ue) {
    const int b = static_cast<int>(ub) * unit;
    const int e = std::min(extent, static_cast<int>(ue) * unit);
    if (split_m) {
      const float* a = transA ? A + b : A + static_cast<size_t>(b) * lda;
      gemm_serial(transA, transB, e - b, N, K, alpha, a, lda, B, ldb, beta, C + static_cast<size_t>(b) * ldc, ldc);
    } else {
      const float* bb = transB ? B + static_cast<size_t>(b) * ldb : B + b;
      gemm_serial(transA, transB, M, e - b, K, alpha, A, lda, bb, ldb, beta, C + b, ldc);
    }
  });
}

void linear_forward(const float* x, const float* W, const float* b, float* y, int n, int in, int out) {
  RT_CHECK(n >= 0 && in > 0 && out > 0, "linear_forward: n >= 0, in > 0, out > 0 required");
  if (n == 0) return;
  if (linear_rows_fits(n, in, out)) {
    linear_rows(x, W, b, nullptr, y, n, in, out);
    return;
  }
  if (b) {
    // Seed y with the bias and let the GEMM accumulate onto it: one pass over y instead of two.
    parallel_for(n, std::max(1, (1 << 14) / out), [&](size_t r0, size_t r1) {
      for (size_t r = r0; r < r1; ++r) std::memcpy(y + r * out, b, sizeof(float) * out);
    });
  }
  gemm(false, true, n, out, in, 1.0f, x, in, W, in, b ? 1.0f : 0.0f, y, out);
}

void linear_backward(const float* x, const float* W, const float* dy, float* dx, float* dW, float* db, int n,
                     int in, int out) {
  RT_CHECK(n >= 0 && in > 0 && out > 0, "linear_backward: n >= 0, in > 0, out > 0 required");
  if (n == 0) return;
  if (dx) gemm(false, false, n, in, out, 1.0f, dy, out, W, in, 0.0f, dx, in);
  if (dW) gemm(true, false, out, in, n, 1.0f, dy, out, x, in, 1.0f, dW, in);
  if (db) {
    // Column sums, split over columns so each sum runs over rows in order on one thread (deterministic).
    // Accumulated in double: n can be B * 4128 rows.
    parallel_for(out, std::max(8, (1 << 14) / std::max(1, n)), [&](size_t c0, size_t c1) {
      constexpr size_t kBlock = 256;
      alignas(32) double acc[kBlock];
      for (size_t cb = c0; cb < c1; cb += kBlock) {
        const size_t w = std::min(kBlock, c1 - cb);
        for (size_t j = 0; j < w; ++j) acc[j] = 0.0;
        for (int r = 0; r < n; ++r) {
          const float* row = dy + static_cast<size_t>(r) * out + cb;
          size_t j = 0;
          // Explicit vectors: at -O2 GCC 12 leaves this float-to-double loop scalar.
          for (; j + 4 <= w; j += 4) {
            f4 v;
            std::memcpy(&v, row + j, sizeof v);
            *reinterpret_cast<d4*>(acc + j) += __builtin_convertvector(v, d4);
          }
          for (; j < w; ++j) acc[j] += row[j];
        }
        for (size_t j = 0; j < w; ++j) db[cb + j] += static_cast<float>(acc[j]);
      }
    });
  }
}

}  // namespace rt::cpu
