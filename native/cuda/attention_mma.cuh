// The window-pair attention on the tensor cores (bf16 mode, head size HD in {16, 32, 64}, n a multiple of 16
// up to 64: the copy config's n = 64, hd = 16 and the char config's n = 32, hd = 64). One block of four
// warps per (batch element, head); warp m owns query rows [16m, 16m + 16). For n <= 32 a block takes two
// heads (PAIR), two warps each, so that no warp idles (with one head a block, n = 32 left two of the four
// without rows): each head's shared copies sit 32 keys apart in the arrays sized for n = 64.
//
// Why: the float32 path (attention_fused.cuh) does one FMA per two shared-memory reads, and its kernels
// were bound by those reads (ncu: L1/TEX 80% busy, 28 us per window backward for the copy config), while
// the products of a 64 x 64 window with hd = 16 are a few dozen mma.sync each. Scores, softmax and the
// dropped probabilities stay in registers in the accumulator layout (mma.cuh), which is also the layout of
// the next product's A operand, so only V (forward) and K, Q, dO and the two n x n gradients of the
// backward's key-side products pass through shared memory, as bf16.
//
// Same outputs as the float32 path: probs before dropout with zeros past the diagonal, the same dropout
// mask indices; products in bf16 with float32 accumulation, like every other bf16 product.
#pragma once
#include <cuda_bf16.h>

#include <cstdint>

#include "cuda/attention_fused.cuh"
#include "cuda/mma.cuh"

namespace rt::cuda::attn {

constexpr int kMmaThreads = 128;  // four warps: query tiles of 16 rows, n <= 64
constexpr int kMmaN = 64;
constexpr int kLdT = kMmaN + 8;  // row stride of the transposed bf16 copies: fragment reads free of bank conflicts

__host__ __device__ inline bool mma_fits(int n, int hd) {
  return n > 0 && n % 16 == 0 && n <= kMmaN && (hd == 16 || hd == 32 || hd == 64);
}

// Two floats of row r, columns c and c + 1, of a [.., ld] float32 matrix, as a bf16 pair.
__device__ __forceinline__ uint32_t ld_pair(const float* __restrict__ p) {
  const float2 v = __ldg(reinterpret_cast<const float2*>(p));
  return pack_bf16(v.x, v.y);
}

// A fragment (16 rows from r0, 16 columns from c0) of a float32 row-major matrix in global memory.
__device__ __forceinline__ void frag_a(uint32_t (&a)[4], const float* __restrict__ M, int ld, int r0, int c0, int gq,
                                       int tq) {
  const float* p = M + static_cast<size_t>(r0 + gq) * ld + c0 + 2 * tq;
  a[0] = ld_pair(p);
  a[1] = ld_pair(p + 8 * static_cast<size_t>(ld));
  a[2] = ld_pair(p + 8);
  a[3] = ld_pair(p + 8 * static_cast<size_t>(ld) + 8);
}

// B fragment (k = 16 columns from c0, n = 8 rows from j0) of M^T, M a float32 row-major matrix in global
// memory: the rows of M are the columns of B (scores Q K^T, dP = dO V^T).
__device__ __forceinline__ void frag_bt(uint32_t (&b)[2], const float* __restrict__ M, int ld, int j0, int c0, int gq,
                                        int tq) {
  const float* p = M + static_cast<size_t>(j0 + gq) * ld + c0 + 2 * tq;
  b[0] = ld_pair(p);
  b[1] = ld_pair(p + 8);
}

// B fragment (k = 16 rows from k0, n = 8 columns from c0) of a matrix held transposed in shared memory
// (T[c][k], row stride kLdT), and the A fragment (16 rows from r0, k = 16 from k0) of a matrix held as is
// there.
__device__ __forceinline__ void frag_b_sm(uint32_t (&b)[2], const __nv_bfloat16* T, int c0, int k0, int gq, int tq) {
  const __nv_bfloat16* p = T + (c0 + gq) * kLdT + k0 + 2 * tq;
  b[0] = *reinterpret_cast<const uint32_t*>(p);
  b[1] = *reinterpret_cast<const uint32_t*>(p + 8);
}
__device__ __forceinline__ void frag_a_sm(uint32_t (&a)[4], const __nv_bfloat16* M, int r0, int k0, int gq, int tq) {
  const __nv_bfloat16* p = M + (r0 + gq) * kLdT + k0 + 2 * tq;
  a[0] = *reinterpret_cast<const uint32_t*>(p);
  a[1] = *reinterpret_cast<const uint32_t*>(p + 8 * kLdT);
  a[2] = *reinterpret_cast<const uint32_t*>(p + 8);
  a[3] = *reinterpret_cast<const uint32_t*>(p + 8 * kLdT + 8);
}

// The threads of one head: the whole block, or (PAIR) its half; `sub` says which half.
template <bool PAIR>
struct HeadThreads {
  static constexpr int kCount = PAIR ? kMmaThreads / 2 : kMmaThreads;
  __device__ __forceinline__ static int local() { return PAIR ? tid() % kCount : tid(); }
  __device__ __forceinline__ static int sub() { return PAIR ? tid() / kCount : 0; }
};

// T[c][j] = M[j][c] as bf16 for rows j < n of a [n][HD] head slice of a float32 matrix (row stride ld).
template <int HD, bool PAIR>
__device__ __forceinline__ void stage_t(__nv_bfloat16* T, const float* __restrict__ M, int ld, int n) {
  using HT = HeadThreads<PAIR>;
  for (int i = HT::local(); i < n * HD; i += HT::kCount) {
    const int j = i / HD, c = i % HD;
    T[c * kLdT + j] = __float2bfloat16_rn(__ldg(M + static_cast<size_t>(j) * ld + c));
  }
}

// The A fragment of a 16 x 16 block (key tile kk) from two accumulator tiles (columns 16kk..+7, +8..+15).
__device__ __forceinline__ void acc_to_a(uint32_t (&a)[4], const float (&c0)[4], const float (&c1)[4]) {
  a[0] = pack_bf16(c0[0], c0[1]);
  a[1] = pack_bf16(c0[2], c0[3]);
  a[2] = pack_bf16(c1[0], c1[1]);
  a[3] = pack_bf16(c1[2], c1[3]);
}

// s[nt] = rows [i0, i0 + 16) of A times rows [8nt, 8nt + 8) of M, transposed (A M^T: the scores Q K^T,
// dP = dO V^T), for the key tiles nt < nt_end and zeros after; A and M are float32 head slices in global
// memory with row strides lda and ldm.
template <int HD>
__device__ __forceinline__ void rows_times_rows_t(float (&s)[8][4], const float* __restrict__ A, int lda,
                                                  const float* __restrict__ M, int ldm, int i0, int nt_end, int gq,
                                                  int tq) {
  uint32_t a[HD / 16][4];
#pragma unroll
  for (int ks = 0; ks < HD / 16; ++ks) frag_a(a[ks], A, lda, i0, 16 * ks, gq, tq);
#pragma unroll
  for (int nt = 0; nt < 8; ++nt) {
#pragma unroll
    for (int e = 0; e < 4; ++e) s[nt][e] = 0.0f;
    if (nt < nt_end) {
#pragma unroll
      for (int ks = 0; ks < HD / 16; ++ks) {
        uint32_t b[2];
        frag_bt(b, M, ldm, 8 * nt, 16 * ks, gq, tq);
        mma_bf16(s[nt], a[ks], b);
      }
    }
  }
}

// dst[r][c] = sum_j S[r][j] M[j][c] for the warp's query rows r (tile m, keys j < 16(m + 1)), with S in
// the accumulator layout (one tile of 8 keys per s[nt]) and M held transposed in shared memory (T[c][j]);
// written as float32 into rows of dst (stride ld). Both attention products with a key-side sum: out = Pd V
// forward, dQ = dS K backward.
template <int HD>
__device__ __forceinline__ void acc_times_t(const float (&s)[8][4], const __nv_bfloat16* T, int m, float* dst,
                                            __nv_bfloat16* tdst, size_t ld, const int (&r)[2], int gq, int tq) {
  float o[HD / 8][4];
#pragma unroll
  for (int cn = 0; cn < HD / 8; ++cn)
#pragma unroll
    for (int e = 0; e < 4; ++e) o[cn][e] = 0.0f;
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) {
    if (kk > m) break;
    uint32_t a[4];
    acc_to_a(a, s[2 * kk], s[2 * kk + 1]);
#pragma unroll
    for (int cn = 0; cn < HD / 8; ++cn) {
      uint32_t b[2];
      frag_b_sm(b, T, 8 * cn, 16 * kk, gq, tq);
      mma_bf16(o[cn], a, b);
    }
  }
#pragma unroll
  for (int cn = 0; cn < HD / 8; ++cn)
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      const size_t at = static_cast<size_t>(r[hh]) * ld + 8 * cn + 2 * tq;
      *reinterpret_cast<float2*>(dst + at) = make_float2(o[cn][2 * hh], o[cn][2 * hh + 1]);
      if (tdst) *reinterpret_cast<__nv_bfloat162*>(tdst + at) = __floats2bfloat162_rn(o[cn][2 * hh], o[cn][2 * hh + 1]);
    }
}

// Forward of (element b, head h): probs (undropped, zeros past the diagonal) and out = dropout(P) V.
template <int HD, bool PAIR>
__device__ __forceinline__ void forward_head_mma(const float* __restrict__ qkv, float* __restrict__ probs,
                                                 float* __restrict__ out, __nv_bfloat16* __restrict__ twin,
                                                 const Geo& g, const Mask& mask, int b, int h) {
  __shared__ __align__(16) __nv_bfloat16 Vt_all[HD * kLdT];
  __nv_bfloat16* Vt = Vt_all + 32 * HeadThreads<PAIR>::sub();  // PAIR: the second head's keys from 32
  const int n = g.n, bh = b * g.H + h;
  const float* base = qkv + static_cast<size_t>(b) * n * g.ld + h * HD;
  stage_t<HD, PAIR>(Vt, base + 2 * g.d, g.ld, n);
  __syncthreads();
  const int lt = HeadThreads<PAIR>::local();
  const int m = lt >> 5, lane = lt & 31, gq = lane >> 2, tq = lane & 3;
  if (16 * m >= n) return;
  const int i0 = 16 * m, nt_end = 2 * m + 2;  // key tiles of 8 that hold a causal pair of these rows
  float s[8][4];
  rows_times_rows_t<HD>(s, base, g.ld, base + g.d, g.ld, i0, nt_end, gq, tq);  // Q K^T
  // Causal softmax of rows r = i0 + gq (elements 0, 1) and r + 8 (2, 3); a row's values are spread over
  // the four lanes of a quad.
  const int r[2] = {i0 + gq, i0 + gq + 8};
  float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
  for (int nt = 0; nt < 8; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int j = 8 * nt + 2 * tq + (e & 1), hh = e >> 1;
      s[nt][e] = (nt < nt_end && j <= r[hh]) ? s[nt][e] * g.scale : -INFINITY;
      mx[hh] = fmaxf(mx[hh], s[nt][e]);
    }
  float sum[2] = {0.0f, 0.0f};
#pragma unroll
  for (int hh = 0; hh < 2; ++hh) {
    mx[hh] = fmaxf(mx[hh], __shfl_xor_sync(0xffffffffu, mx[hh], 1));
    mx[hh] = fmaxf(mx[hh], __shfl_xor_sync(0xffffffffu, mx[hh], 2));
  }
#pragma unroll
  for (int nt = 0; nt < 8; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const float v = s[nt][e] == -INFINITY ? 0.0f : expf(s[nt][e] - mx[e >> 1]);
      s[nt][e] = v;
      sum[e >> 1] += v;
    }
#pragma unroll
  for (int hh = 0; hh < 2; ++hh) {
    sum[hh] += __shfl_xor_sync(0xffffffffu, sum[hh], 1);
    sum[hh] += __shfl_xor_sync(0xffffffffu, sum[hh], 2);
    sum[hh] = 1.0f / sum[hh];
  }
  // probs rows (whole rows: zeros past the diagonal), then the dropped probabilities in place.
#pragma unroll
  for (int nt = 0; nt < 8; ++nt) {
    if (8 * nt >= n) break;
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      const int j = 8 * nt + 2 * tq;
      const float p0 = s[nt][2 * hh] * sum[hh], p1 = s[nt][2 * hh + 1] * sum[hh];
      *reinterpret_cast<float2*>(probs + (static_cast<size_t>(bh) * n + r[hh]) * n + j) = make_float2(p0, p1);
      const uint64_t mb = (static_cast<uint64_t>(bh) * n + r[hh]) * n + j;
      s[nt][2 * hh] = mask.on ? p0 * mask(mb) : p0;
      s[nt][2 * hh + 1] = mask.on ? p1 * mask(mb + 1) : p1;
    }
  }
  // out = Pd V over the key tiles kk <= m.
  const size_t at = static_cast<size_t>(b) * n * g.d + h * HD;
  acc_times_t<HD>(s, Vt, m, out + at, twin ? twin + at : nullptr, g.d, r, gq, tq);
}

// Backward of (element b, head h): dQ, dK and dV into dqkv. Phase 1, warp m over its query rows: dP =
// mask * (dO V^T), dS = P (dP - rowsum(dP P)) scale, dQ = dS K; dS^T and Pd^T go to shared memory. Phase
// 2, warp m over key rows [16m, 16m + 16): dV = Pd^T dO and dK = dS^T Q over the query tiles at or after it.
template <int HD, bool PAIR>
__device__ __forceinline__ void backward_head_mma(const float* __restrict__ qkv, const float* __restrict__ probs,
                                                  const float* __restrict__ dout, float* __restrict__ dqkv,
                                                  __nv_bfloat16* __restrict__ twin, const Geo& g, const Mask& mask,
                                                  int b, int h) {
  __shared__ __align__(16) __nv_bfloat16 Kt_all[HD * kLdT], Qt_all[HD * kLdT], Ot_all[HD * kLdT];
  __shared__ __align__(16) __nv_bfloat16 St_all[kMmaN * kLdT], Pt_all[kMmaN * kLdT];  // dS^T, Pd^T: [key][query]
  // PAIR: the second head's rows (keys, queries) from 32 in the transposed copies, its keys from row 32 of
  // St and Pt.
  const int sub = HeadThreads<PAIR>::sub();
  __nv_bfloat16 *Kt = Kt_all + 32 * sub, *Qt = Qt_all + 32 * sub, *Ot = Ot_all + 32 * sub;
  __nv_bfloat16 *St = St_all + 32 * sub * kLdT, *Pt = Pt_all + 32 * sub * kLdT;
  const int n = g.n, bh = b * g.H + h;
  const float* base = qkv + static_cast<size_t>(b) * n * g.ld + h * HD;
  const float* ob = dout + static_cast<size_t>(b) * n * g.d + h * HD;
  const size_t at = static_cast<size_t>(b) * n * g.ld + h * HD;
  float* db = dqkv + at;
  __nv_bfloat16* tb = twin ? twin + at : nullptr;
  stage_t<HD, PAIR>(Kt, base + g.d, g.ld, n);
  stage_t<HD, PAIR>(Qt, base, g.ld, n);
  stage_t<HD, PAIR>(Ot, ob, g.d, n);
  const int lt = HeadThreads<PAIR>::local();
  const int m = lt >> 5, lane = lt & 31, gq = lane >> 2, tq = lane & 3;
  const bool active = 16 * m < n;
  const int i0 = 16 * m, nt_end = 2 * m + 2;
  const int r[2] = {i0 + gq, i0 + gq + 8};
  float ds[8][4];
  if (active) {
    float p[8][4];  // the probabilities, read first so that the loads overlap the products
#pragma unroll
    for (int nt = 0; nt < 8; ++nt)
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        float2 v = make_float2(0.0f, 0.0f);
        if (nt < nt_end)
          v = __ldg(reinterpret_cast<const float2*>(probs + (static_cast<size_t>(bh) * n + r[hh]) * n + 8 * nt + 2 * tq));
        p[nt][2 * hh] = v.x;
        p[nt][2 * hh + 1] = v.y;
      }
    rows_times_rows_t<HD>(ds, ob, g.d, base + 2 * g.d, g.ld, i0, nt_end, gq, tq);  // dP = dO V^T
    // Mask, rowsum(dP P), dS; Pd^T and dS^T (zeros past the diagonal) to shared memory.
    float t[2] = {0.0f, 0.0f};
#pragma unroll
    for (int nt = 0; nt < 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int j = 8 * nt + 2 * tq + (e & 1), hh = e >> 1;
        float pd = p[nt][e], dp = ds[nt][e];
        if (nt < nt_end && j <= r[hh]) {
          if (mask.on) {
            const float k = mask((static_cast<uint64_t>(bh) * n + r[hh]) * n + j);
            pd *= k;
            dp *= k;
          }
        } else {
          pd = dp = 0.0f;
        }
        ds[nt][e] = dp;
        t[hh] += dp * p[nt][e];
        if (nt < nt_end) Pt[j * kLdT + r[hh]] = __float2bfloat16_rn(pd);
      }
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      t[hh] += __shfl_xor_sync(0xffffffffu, t[hh], 1);
      t[hh] += __shfl_xor_sync(0xffffffffu, t[hh], 2);
    }
#pragma unroll
    for (int nt = 0; nt < 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int j = 8 * nt + 2 * tq + (e & 1), hh = e >> 1;
        ds[nt][e] = p[nt][e] * (ds[nt][e] - t[hh]) * g.scale;  // p is 0 past the diagonal and in unread tiles
        if (nt < nt_end) St[j * kLdT + r[hh]] = __float2bfloat16_rn(ds[nt][e]);
      }
  }
  __syncthreads();  // Kt, Qt, Ot, St and Pt complete
  if (!active) return;
  // dQ = dS K over key tiles kk <= m.
  acc_times_t<HD>(ds, Kt, m, db, tb, g.ld, r, gq, tq);
  // dV = Pd^T dO and dK = dS^T Q for key rows [j0, j0 + 16), over query tiles kk >= m.
  {
    const int j0 = i0, tiles = n / 16;
    float dv[HD / 8][4], dk[HD / 8][4];
#pragma unroll
    for (int cn = 0; cn < HD / 8; ++cn)
#pragma unroll
      for (int e = 0; e < 4; ++e) dv[cn][e] = dk[cn][e] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      if (kk < m || kk >= tiles) continue;
      uint32_t pa[4], sa[4];
      frag_a_sm(pa, Pt, j0, 16 * kk, gq, tq);
      frag_a_sm(sa, St, j0, 16 * kk, gq, tq);
#pragma unroll
      for (int cn = 0; cn < HD / 8; ++cn) {
        uint32_t ob2[2], qb[2];
        frag_b_sm(ob2, Ot, 8 * cn, 16 * kk, gq, tq);
        frag_b_sm(qb, Qt, 8 * cn, 16 * kk, gq, tq);
        mma_bf16(dv[cn], pa, ob2);
        mma_bf16(dk[cn], sa, qb);
      }
    }
    const int rj[2] = {j0 + gq, j0 + gq + 8};
#pragma unroll
    for (int cn = 0; cn < HD / 8; ++cn)
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        const size_t o = static_cast<size_t>(rj[hh]) * g.ld + 8 * cn + 2 * tq;
        *reinterpret_cast<float2*>(db + o + g.d) = make_float2(dk[cn][2 * hh], dk[cn][2 * hh + 1]);
        *reinterpret_cast<float2*>(db + o + 2 * g.d) = make_float2(dv[cn][2 * hh], dv[cn][2 * hh + 1]);
        if (tb) {
          *reinterpret_cast<__nv_bfloat162*>(tb + o + g.d) = __floats2bfloat162_rn(dk[cn][2 * hh], dk[cn][2 * hh + 1]);
          *reinterpret_cast<__nv_bfloat162*>(tb + o + 2 * g.d) = __floats2bfloat162_rn(dv[cn][2 * hh], dv[cn][2 * hh + 1]);
        }
      }
  }
}

}  // namespace rt::cuda::attn
