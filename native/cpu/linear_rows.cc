// The linear layer for a few rows (incremental decoding: one row per sequence of the batch), without
// packing either operand.
//
// Why: a decoder step multiplies S <= 64 rows by the block's four weights, whose rows are K = d or 4d long.
// A BLAS packs the weight into its panel layout on every call; at these shapes that copy is a third of
// the GEMM (OpenBLAS 0.3.21 on the serve bench's d-128 model: sgemm_incopy 14-18% of the step's
// samples against 23-29% in the kernel), and below a size it takes a "small matrix" path that is slower
// still. Here y[r, j] is the dot product of row r of x with row j of W, both contiguous in K, so both
// are read in place: a register tile of 3 rows of x by 4 rows of W accumulates 8-lane products along K,
// and the four sums of a row are reduced together at the end (two horizontal adds and one add of
// halves), then the bias and the residual are added in the same store.
//
// Every y[r, j] is summed in the same order wherever its tile falls and however the columns are split
// across threads, so results are the same bits for any thread count. They are not OpenBLAS's bits.
#include <algorithm>
#include <cstddef>

#include "core/error.h"
#include "core/thread_pool.h"
#include "cpu/kernels.h"

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define RT_LINEAR_ROWS 1
#endif

namespace rt::cpu {

#ifdef RT_LINEAR_ROWS
namespace {

constexpr int MR = 3;  // rows of x per tile
constexpr int NR = 4;  // rows of W (output columns) per tile: 12 accumulators + 3 of x + 1 of W = 16 ymm

// Same split thresholds as the GEMM (matmul.cc): below ~1.5 MFLOP one thread, chunks of >= ~0.8 MFLOP.
constexpr double kMinParallelFlops = 1.5e6;
constexpr double kMinChunkFlops = 8e5;

// Four 8-lane accumulators -> their four sums, in lane order a, b, c, d.
inline __m128 reduce4(__m256 a, __m256 b, __m256 c, __m256 d) {
  const __m256 t = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
  return _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
}

// R rows of x (R <= MR) by C rows of W (C <= NR); K a multiple of 8. Columns past C use zero
// accumulators, which leaves the sums of the real ones unchanged (their pairs are added within themselves).
template <int R, int C>
void tile(const float* x, int ldx, const float* W, int K, const float* b, const float* res, int ldr, float* y,
          int ldy) {
  __m256 acc[MR][NR];
  for (int r = 0; r < MR; ++r)
    for (int c = 0; c < NR; ++c) acc[r][c] = _mm256_setzero_ps();
  for (int k = 0; k < K; k += 8) {
    __m256 xv[MR];
    for (int r = 0; r < R; ++r) xv[r] = _mm256_loadu_ps(x + static_cast<size_t>(r) * ldx + k);
    for (int c = 0; c < C; ++c) {
      const __m256 w = _mm256_loadu_ps(W + static_cast<size_t>(c) * K + k);
      for (int r = 0; r < R; ++r) acc[r][c] = _mm256_fmadd_ps(xv[r], w, acc[r][c]);
    }
  }
  alignas(16) float bias[NR] = {}, out[NR];
  if (b)
    for (int c = 0; c < C; ++c) bias[c] = b[c];
  const __m128 bv = _mm_load_ps(bias);
  for (int r = 0; r < R; ++r) {
    __m128 s = reduce4(acc[r][0], acc[r][1], acc[r][2], acc[r][3]);
    // (x.w + b) + res: the order of the GEMM path, which seeds y with b and adds the residual after.
    if (b) s = _mm_add_ps(s, bv);
    float* yr = y + static_cast<size_t>(r) * ldy;
    if (C == NR) {
      if (res) s = _mm_add_ps(s, _mm_loadu_ps(res + static_cast<size_t>(r) * ldr));
      _mm_storeu_ps(yr, s);
    } else {
      _mm_store_ps(out, s);
      for (int c = 0; c < C; ++c) yr[c] = res ? out[c] + res[static_cast<size_t>(r) * ldr + c] : out[c];
    }
  }
}

using TileFn = void (*)(const float*, int, const float*, int, const float*, const float*, int, float*, int);
constexpr TileFn kTiles[MR][NR] = {
    {tile<1, 1>, tile<1, 2>, tile<1, 3>, tile<1, 4>},
    {tile<2, 1>, tile<2, 2>, tile<2, 3>, tile<2, 4>},
    {tile<3, 1>, tile<3, 2>, tile<3, 3>, tile<3, 4>},
};

// Output columns [c0, c1) for every row. The columns go in blocks whose rows of W (~16 KB) stay in L1
// while every tile of rows of x passes over them.
void columns(const float* x, const float* W, const float* b, const float* res, float* y, int n, int K, int out,
             int c0, int c1) {
  const int block = std::max(NR, (16384 / (K * static_cast<int>(sizeof(float)))) / NR * NR);
  for (int cb = c0; cb < c1; cb += block) {
    const int ce = std::min(c1, cb + block);
    for (int r = 0; r < n; r += MR) {
      const int R = std::min(MR, n - r);
      const float* xr = x + static_cast<size_t>(r) * K;
      for (int c = cb; c < ce; c += NR) {
        const int C = std::min(NR, ce - c);
        kTiles[R - 1][C - 1](xr, K, W + static_cast<size_t>(c) * K, K, b ? b + c : nullptr,
                             res ? res + static_cast<size_t>(r) * out + c : nullptr, out,
                             y + static_cast<size_t>(r) * out + c, out);
      }
    }
  }
}

}  // namespace

bool linear_rows_fits(int n, int in, int out) { return n >= 1 && n <= kLinearRowsMax && in % 8 == 0 && in > 0 && out > 0; }

void linear_rows(const float* x, const float* W, const float* b, const float* res, float* y, int n, int in, int out) {
  const double flops = 2.0 * n * in * out;
  const int units = (out + NR - 1) / NR;
  if (flops < kMinParallelFlops || num_threads() == 1) {
    columns(x, W, b, res, y, n, in, out, 0, out);
    return;
  }
  const double unit_flops = flops / units;
  const size_t grain = static_cast<size_t>(std::max(1.0, kMinChunkFlops / unit_flops));
  parallel_for(static_cast<size_t>(units), grain, [&](size_t u0, size_t u1) {
    columns(x, W, b, res, y, n, in, out, static_cast<int>(u0) * NR, std::min(out, static_cast<int>(u1) * NR));
  });
}

#else

bool linear_rows_fits(int, int, int) { return false; }
void linear_rows(const float*, const float*, const float*, const float*, float*, int, int, int) {
  throw Error("linear_rows: this build has no AVX2/FMA kernel (linear_rows_fits is false)");
}

#endif

}  // namespace rt::cpu
