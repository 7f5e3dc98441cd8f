// The window-pair attention on the tensor cores (bf16 mode, head size HD in {16, 32, 64}, n a multiple of 16
// up to 64: the copy config's n = 64, hd = 16 and the char config's n = 32, hd = 64). One block of four
// warps per (batch element, head); warp m owns query rows [16m, 16m + 16). For n <= 32 a block takes two
// heads (PAIR), two warps each, so that no warp idles (with one head a block, n = 32 left two of the four
// without rows): each head's shared copies sit 32 keys apart in the arrays sized for n = 64, and its key
// tiles are at most four of 8 (the arrays over key tiles are sized for that).
//
// Why: the float32 path (attention_fused.cuh) does one FMA per two shared-memory reads, and its kernels
// were bound by those reads (ncu: L1/TEX 80% busy, 28 us per window backward for the copy config), while
// the products of a 64 x 64 window with hd = 16 are a few dozen mma.sync each. Scores, softmax and the
// dropped probabilities stay in registers in the accumulator layout (mma.cuh), which is also the layout of
// the next product's A operand, so only K and V (forward) and K, Q, dO, V and the two n x n gradients of the
// backward's key-side products pass through shared memory, as bf16, read back with ldmatrix.
//
// The kernels wait on global memory (ncu: long_scoreboard the main stall, few loads in flight), so every
// thread issues its loads of a phase together, wide and with fixed trip counts, before it uses them.
//
// Same outputs as the float32 path: probs before dropout with zeros past the diagonal, the same dropout
// mask indices; products in bf16 with float32 accumulation, like every other bf16 product.
#pragma once
#include <cuda_bf16.h>

#include <cstdint>

#include "cuda/attention_fused.cuh"
#include "cuda/gemm_args.cuh"
#include "cuda/half_ptr.cuh"
#include "cuda/mma.cuh"

namespace rt::cuda::attn {

constexpr int kMmaThreads = 128;  // four warps: query tiles of 16 rows, n <= 64
constexpr int kMmaN = 64;
// Row stride of the bf16 copies (144 bytes): the 8 rows of an ldmatrix read fall in different banks.
constexpr int kLdT = kMmaN + 8;

__host__ __device__ inline bool mma_fits(int n, int hd) {
  return n > 0 && n % 16 == 0 && n <= kMmaN && (hd == 16 || hd == 32 || hd == 64);
}

// qkv may hold bf16 (Geo::qkv_half, BlockCache::half; half_ptr.cuh). Products round float32 operands to
// bf16 anyway, so both give the same bits.

// Elements off, off + 1 of a float32 (or, half, bf16) array, as a bf16 pair.
__device__ __forceinline__ uint32_t ld_pair(const float* __restrict__ p, bool half = false, size_t off = 0) {
  if (half) return __ldg(reinterpret_cast<const unsigned*>(elem_at(p, true, off)));
  const float2 v = __ldg(reinterpret_cast<const float2*>(p + off));
  return pack_bf16(v.x, v.y);
}

// The A fragments (16 rows from r0, all HD columns) of a row-major matrix in global memory (float32, or
// bf16 where half).
template <int HD>
__device__ __forceinline__ void frags_a(uint32_t (&a)[HD / 16][4], const float* __restrict__ M, int ld, int r0, int gq,
                                        int tq, bool half = false) {
#pragma unroll
  for (int ks = 0; ks < HD / 16; ++ks) {
    const size_t o = static_cast<size_t>(r0 + gq) * ld + 16 * ks + 2 * tq, o8 = o + 8 * static_cast<size_t>(ld);
    a[ks][0] = ld_pair(M, half, o);
    a[ks][1] = ld_pair(M, half, o8);
    a[ks][2] = ld_pair(M, half, o + 8);
    a[ks][3] = ld_pair(M, half, o8 + 8);
  }
}

// ldmatrix_x4 (mma.cuh) with .trans: register i of lane l receives elements (2(l % 4), l / 4) and
// (2(l % 4) + 1, l / 4) of matrix i, its fragment of the transposed matrix.
__device__ __forceinline__ void ldmatrix_x4_t(uint32_t (&r)[4], const void* p) {
  const uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}

// The A fragment (rows [r0, r0 + 16), k = 16 from k0) of M^T, M row-major in shared memory (row stride
// kLdT): M's rows [k0, k0 + 16) and columns [r0, r0 + 16).
__device__ __forceinline__ void ldmatrix_at(uint32_t (&a)[4], const __nv_bfloat16* M, int r0, int k0) {
  const int l = threadIdx.x & 31;
  ldmatrix_x4_t(a, M + (k0 + (l & 7) + (l >> 4) * 8) * kLdT + r0 + ((l >> 3) & 1) * 8);
}

// The B fragments of two n8 tiles (n columns [n0, n0 + 16), k rows [k0, k0 + 16)) of a matrix held as is,
// [k][n], in shared memory (row stride ld): b[j] for the columns from n0 + 8j.
__device__ __forceinline__ void ldmatrix_bt2(uint32_t (&b)[2][2], const __nv_bfloat16* M, int n0, int k0,
                                             int ld = kLdT) {
  const int l = threadIdx.x & 31;
  uint32_t r[4];
  ldmatrix_x4_t(r, M + (k0 + (l & 7) + ((l >> 3) & 1) * 8) * ld + n0 + (l >> 4) * 8);
  b[0][0] = r[0];
  b[0][1] = r[1];
  b[1][0] = r[2];
  b[1][1] = r[3];
}

// The threads of one head: the whole block, or (PAIR) its half; `sub` says which half. kRows: the most
// rows (keys) a head's window has, 32 with PAIR (attention.cu pairs heads for n <= 32 only).
template <bool PAIR>
struct HeadThreads {
  static constexpr int kCount = PAIR ? kMmaThreads / 2 : kMmaThreads;
  static constexpr int kRows = PAIR ? kMmaN / 2 : kMmaN;
  __device__ __forceinline__ static int local() { return PAIR ? tid() % kCount : tid(); }
  __device__ __forceinline__ static int sub() { return PAIR ? tid() / kCount : 0; }
};

// T[i][c][j] = M[i][j][c] as bf16 for rows j < n of NM [n][HD] head slices of float32 matrices (row strides
// ld[i]). A thread takes rows j, j + 1 of four columns: two float4 loads, whose values pair up as the bf16
// pairs (j, j + 1) of a transposed row, one 32-bit store each. Lanes 0-15 take 16 row pairs and lanes 16-31
// the same rows' next four columns, so that two lanes read a row's 32-byte sector and the 32 stores of an
// instruction hit 32 banks (lanes 16 on are four columns of 36 words on: 16 banks). A thread issues all
// its loads of a matrix before their first store: fixed trip counts, independent loads, latencies that
// overlap (a load and a store a step left one latency per element in sequence). Bit i of `half`: M[i] is
// bf16 (elem_at).
// The row pairs and column quads of stage_t's items: the thread's item u is rows j, j + 1 and columns c .. c + 3.
template <int HD, bool PAIR>
struct StageItems {
  using HT = HeadThreads<PAIR>;
  static constexpr int kPairs = HT::kRows / 2, kSpan = kPairs / 16, kItems = kPairs * (HD / 4) / HT::kCount;
  static_assert(kItems * HT::kCount == kPairs * (HD / 4), "row pairs x column quads fill the head's threads");
  __device__ __forceinline__ static void at(int u, int& j, int& c) {
    const int t = HT::local() + HT::kCount * u;
    j = 2 * ((t & 15) + 16 * ((t >> 5) % kSpan));
    c = 4 * (2 * ((t >> 5) / kSpan) + ((t >> 4) & 1));
  }
  // f(i, u, j, c) for each of NM matrices and each item whose rows lie below n.
  template <int NM, class F>
  __device__ __forceinline__ static void each(int n, F&& f) {
#pragma unroll
    for (int i = 0; i < NM; ++i)
#pragma unroll
      for (int u = 0; u < kItems; ++u) {
        int j, c;
        at(u, j, c);
        if (j < n) f(i, u, j, c);
      }
  }
};

template <int HD, bool PAIR, int NM>
__device__ __forceinline__ void stage_t(__nv_bfloat16* const (&T)[NM], const float* const (&M)[NM],
                                        const int (&ld)[NM], int n, unsigned half = 0) {
  constexpr int kItems = StageItems<HD, PAIR>::kItems;
  int j[kItems], c[kItems];
#pragma unroll
  for (int u = 0; u < kItems; ++u) StageItems<HD, PAIR>::at(u, j[u], c[u]);
#pragma unroll
  for (int i = 0; i < NM; ++i) {
    float4 v[kItems][2];
#pragma unroll
    for (int u = 0; u < kItems; ++u)
      if (j[u] < n) {  // n is even: both rows or neither
        const size_t o = static_cast<size_t>(j[u]) * ld[i] + c[u];
        const bool h = (half >> i) & 1u;
        v[u][0] = load4_as(M[i], h, o);
        v[u][1] = load4_as(M[i], h, o + ld[i]);
      }
#pragma unroll
    for (int u = 0; u < kItems; ++u)
      if (j[u] < n) {
        uint32_t* d = reinterpret_cast<uint32_t*>(T[i] + c[u] * kLdT + j[u]);
        const float4 a = v[u][0], b = v[u][1];
        d[0] = pack_bf16(a.x, b.x);
        d[kLdT / 2] = pack_bf16(a.y, b.y);
        d[kLdT] = pack_bf16(a.z, b.z);
        d[3 * kLdT / 2] = pack_bf16(a.w, b.w);
      }
  }
}

// The A fragment of a 16 x 16 block (key tile kk) from two accumulator tiles (columns 16kk..+7, +8..+15).
__device__ __forceinline__ void acc_to_a(uint32_t (&a)[4], const float (&c0)[4], const float (&c1)[4]) {
  a[0] = pack_bf16(c0[0], c0[1]);
  a[1] = pack_bf16(c0[2], c0[3]);
  a[2] = pack_bf16(c1[0], c1[1]);
  a[3] = pack_bf16(c1[2], c1[3]);
}

// Rows r[0], r[1] (the accumulator layout's) of o, float32 into dst (row stride ld), and as bf16 into tdst.
template <int HD>
__device__ __forceinline__ void store_rows(const float (&o)[HD / 8][4], float* dst, __nv_bfloat16* tdst, size_t ld,
                                           const int (&r)[2], int tq) {
#pragma unroll
  for (int cn = 0; cn < HD / 8; ++cn)
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      const size_t at = static_cast<size_t>(r[hh]) * ld + 8 * cn + 2 * tq;
      if (dst) *reinterpret_cast<float2*>(dst + at) = make_float2(o[cn][2 * hh], o[cn][2 * hh + 1]);
      if (tdst) *reinterpret_cast<__nv_bfloat162*>(tdst + at) = __floats2bfloat162_rn(o[cn][2 * hh], o[cn][2 * hh + 1]);
    }
}

// Row stride of a head's rows held as they are in qkv ([j][c], ROWS below): the cp.async copies of
// forward_heads_async. 16 bytes past a multiple of 32 (48, 80 or 144 bytes), so the 8 rows of an ldmatrix read
// fall in different banks.
template <int HD>
constexpr int kLdR = HD + 8;

// s[nt] = the warp's query rows (tile m; A fragments a) times rows [8nt, 8nt + 8) of M, transposed: the
// scores Q K^T and dP = dO V^T, with M (K, V) held transposed in shared memory (T[c][j]), or with ROWS as
// it is (T[j][c], row stride kLdR): the same fragments either way. Key tiles past the diagonal's are 0.
template <int HD, int NT, bool ROWS = false>
__device__ __forceinline__ void rows_times_t(float (&s)[NT][4], const uint32_t (&a)[HD / 16][4],
                                             const __nv_bfloat16* T, int m) {
#pragma unroll
  for (int nt = 0; nt < NT; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) s[nt][e] = 0.0f;
#pragma unroll
  for (int kt = 0; kt < NT / 2; ++kt) {
    if (kt > m) break;
#pragma unroll
    for (int ks = 0; ks < HD / 16; ++ks) {
      uint32_t b[2][2];
      if constexpr (ROWS) ldmatrix_b2(b, T, kLdR<HD>, 16 * kt, 16 * ks);
      else ldmatrix_bt2(b, T, 16 * kt, 16 * ks);
      mma_bf16(s[2 * kt], a[ks], b[0]);
      mma_bf16(s[2 * kt + 1], a[ks], b[1]);
    }
  }
}

// o (16 rows, HD columns, in n8 tiles) += a (a 16 x 16 A fragment) times rows [16 kk, 16 kk + 16) of a matrix
// held transposed in shared memory (T[c][j]), or with ROWS as it is (T[j][c], row stride kLdR): the key-side
// sum of acc_times_t and keys_times_t.
template <int HD, bool ROWS = false>
__device__ __forceinline__ void mma_keys_t(float (&o)[HD / 8][4], const uint32_t (&a)[4], const __nv_bfloat16* T,
                                           int kk) {
#pragma unroll
  for (int cp = 0; cp < HD / 16; ++cp) {
    uint32_t b[2][2];
    if constexpr (ROWS) ldmatrix_bt2(b, T, 16 * cp, 16 * kk, kLdR<HD>);
    else ldmatrix_b2(b, T, kLdT, 16 * cp, 16 * kk);
    mma_bf16(o[2 * cp], a, b[0]);
    mma_bf16(o[2 * cp + 1], a, b[1]);
  }
}

// dst[r][c] = sum_j S[r][j] M[j][c] for the warp's query rows r (tile m, keys j < 16(m + 1)), with S in
// the accumulator layout (one tile of 8 keys per s[nt]) and M held transposed in shared memory (T[c][j]);
// written as float32 into rows of dst (stride ld). Both attention products with a key-side sum: out = Pd V
// forward, dQ = dS K backward.
template <int HD, int NT, bool ROWS = false>
__device__ __forceinline__ void acc_times(float (&o)[HD / 8][4], const float (&s)[NT][4], const __nv_bfloat16* T,
                                          int m) {
#pragma unroll
  for (int cn = 0; cn < HD / 8; ++cn)
#pragma unroll
    for (int e = 0; e < 4; ++e) o[cn][e] = 0.0f;
#pragma unroll
  for (int kk = 0; kk < NT / 2; ++kk) {
    if (kk > m) break;
    uint32_t a[4];
    acc_to_a(a, s[2 * kk], s[2 * kk + 1]);
    mma_keys_t<HD, ROWS>(o, a, T, kk);
  }
}
template <int HD, int NT>
__device__ __forceinline__ void acc_times_t(const float (&s)[NT][4], const __nv_bfloat16* T, int m, float* dst,
                                            __nv_bfloat16* tdst, size_t ld, const int (&r)[2], int tq) {
  float o[HD / 8][4];
  acc_times<HD, NT>(o, s, T, m);
  store_rows<HD>(o, dst, tdst, ld, r, tq);
}

// dst[j][c] = sum_i A[i][j] M[i][c] for the key rows j of tile m over the query tiles m <= kk < tiles (the
// causal ones), with A row-major ([query][key]: dS or Pd) and M held transposed (T[c][i]) in shared memory:
// dK = dS^T Q and dV = Pd^T dO.
template <int HD, int NT>
__device__ __forceinline__ void keys_times_t(const __nv_bfloat16* A, const __nv_bfloat16* T, int m, int tiles,
                                             float* dst, __nv_bfloat16* tdst, size_t ld, const int (&r)[2], int tq) {
  float o[HD / 8][4];
#pragma unroll
  for (int cn = 0; cn < HD / 8; ++cn)
#pragma unroll
    for (int e = 0; e < 4; ++e) o[cn][e] = 0.0f;
#pragma unroll
  for (int kk = 0; kk < NT / 2; ++kk) {
    if (kk < m || kk >= tiles) continue;
    uint32_t a[4];
    ldmatrix_at(a, A, 16 * m, 16 * kk);
    mma_keys_t<HD>(o, a, T, kk);
  }
  store_rows<HD>(o, dst, tdst, ld, r, tq);
}

// The causal softmax of one warp's query rows (tile m) in place over their scores s (Q K^T, unscaled, in the
// accumulator layout): s = exp(scale s - max), 0 past the diagonal and in the key tiles past the diagonal's;
// inv = 1 / each row's sum (rows r = 16m + gq: elements 0, 1; r + 8: 2, 3). A row's values are spread over the
// four lanes of a quad. The forward and the backward's recomputation (probs_rows_mma) share it, so that both
// have the same bits.
template <int NT>
__device__ __forceinline__ void causal_softmax_mma(float (&s)[NT][4], float (&inv)[2], int m, float scale) {
  const int lane = threadIdx.x & 31, gq = lane >> 2, tq = lane & 3;
  const int i0 = 16 * m, nt_end = 2 * m + 2;  // key tiles of 8 that hold a causal pair of these rows
  const int r[2] = {i0 + gq, i0 + gq + 8};
  float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
  for (int nt = 0; nt < NT; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int j = 8 * nt + 2 * tq + (e & 1), hh = e >> 1;
      s[nt][e] = (nt < nt_end && j <= r[hh]) ? s[nt][e] * scale : -INFINITY;
      mx[hh] = fmaxf(mx[hh], s[nt][e]);
    }
  float sum[2] = {0.0f, 0.0f};
#pragma unroll
  for (int hh = 0; hh < 2; ++hh) {
    mx[hh] = fmaxf(mx[hh], __shfl_xor_sync(0xffffffffu, mx[hh], 1));
    mx[hh] = fmaxf(mx[hh], __shfl_xor_sync(0xffffffffu, mx[hh], 2));
  }
#pragma unroll
  for (int nt = 0; nt < NT; ++nt)
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
    inv[hh] = 1.0f / sum[hh];
  }
}

// The forward of one warp's query rows (tile m) of (element, head) bh, n keys, with the rows' Q in A
// fragments (qa) and K, V staged transposed (Kt, Vt; with ROWS as they are in qkv): their probs rows
// (undropped, zeros past the diagonal; none where probs is null, for a backward that recomputes them), then
// out = dropout(P) V handed to store(o, r) in the accumulator layout (rows r[0], r[1]). Shared by the attention
// kernels and the fused out_forward chain (block_tiles.cuh), so that all give the same bits.
template <int HD, int NT, bool ROWS = false, class Store>
__device__ __forceinline__ void forward_rows_mma(const uint32_t (&qa)[HD / 16][4], const __nv_bfloat16* Kt,
                                                 const __nv_bfloat16* Vt, int m, int n, int bh, float scale,
                                                 const Mask& mask, float* __restrict__ probs, Store&& store) {
  const int lane = threadIdx.x & 31, gq = lane >> 2, tq = lane & 3;
  const int r[2] = {16 * m + gq, 16 * m + gq + 8};
  float s[NT][4], inv[2];
  rows_times_t<HD, NT, ROWS>(s, qa, Kt, m);  // Q K^T
  causal_softmax_mma<NT>(s, inv, m, scale);
  // probs rows (whole rows: zeros past the diagonal), then the dropped probabilities in place.
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
    if (8 * nt >= n) break;
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      const int j = 8 * nt + 2 * tq;
      const float p0 = s[nt][2 * hh] * inv[hh], p1 = s[nt][2 * hh + 1] * inv[hh];
      if (probs)
        *reinterpret_cast<float2*>(probs + (static_cast<size_t>(bh) * n + r[hh]) * n + j) = make_float2(p0, p1);
      const uint64_t mb = (static_cast<uint64_t>(bh) * n + r[hh]) * n + j;
      s[nt][2 * hh] = mask.on ? p0 * mask(mb) : p0;
      s[nt][2 * hh + 1] = mask.on ? p1 * mask(mb + 1) : p1;
    }
  }
  // out = Pd V over the key tiles kk <= m.
  float o[HD / 8][4];
  acc_times<HD, NT, ROWS>(o, s, Vt, m);
  store(o, r);
}

// Forward of (element b, head h): probs (undropped, zeros past the diagonal) and out = dropout(P) V.
template <int HD, bool PAIR>
__device__ __forceinline__ void forward_head_mma(const float* __restrict__ qkv, float* __restrict__ probs,
                                                 float* __restrict__ out, __nv_bfloat16* __restrict__ twin,
                                                 const Geo& g, const Mask& mask, int b, int h) {
  using HT = HeadThreads<PAIR>;
  constexpr int NT = HT::kRows / 8;
  __shared__ __align__(16) __nv_bfloat16 Kt_all[HD * kLdT], Vt_all[HD * kLdT];
  const int sub = HT::sub();  // PAIR: the second head's keys from 32
  __nv_bfloat16 *Kt = Kt_all + 32 * sub, *Vt = Vt_all + 32 * sub;
  const int n = g.n, bh = b * g.H + h;
  const bool qh = g.qkv_half;
  const size_t qo = static_cast<size_t>(b) * n * g.ld + h * HD;
  const int lt = HT::local();
  const int m = lt >> 5, lane = lt & 31, gq = lane >> 2, tq = lane & 3;
  const bool active = 16 * m < n;
  uint32_t qa[HD / 16][4];  // the rows' Q, read before the staging so that the loads overlap
  if (active) frags_a<HD>(qa, elem_at(qkv, qh, qo), g.ld, 16 * m, gq, tq, qh);
  {
    __nv_bfloat16* const T[2] = {Kt, Vt};
    const float* const M[2] = {elem_at(qkv, qh, qo + g.d), elem_at(qkv, qh, qo + 2 * g.d)};
    const int ld[2] = {g.ld, g.ld};
    stage_t<HD, PAIR, 2>(T, M, ld, n, qh ? 3u : 0u);
  }
  __syncthreads();
  if (!active) return;
  const size_t at = static_cast<size_t>(b) * n * g.d + h * HD;
  forward_rows_mma<HD, NT>(qa, Kt, Vt, m, n, bh, g.scale, mask, probs, [&](const float (&o)[HD / 8][4], const int (&r)[2]) {
    store_rows<HD>(o, out ? out + at : nullptr, twin ? twin + at : nullptr, g.d, r, tq);
  });
}

// stage_t in two halves for bf16 matrices, so that a pair's loads can be in flight while another pair's
// products run (forward_heads_persist): load_t_raw takes the items' rows as they are (two 8-byte loads an
// item), store_t_raw writes them transposed, the bf16 pairs (j, j + 1) of a column picked out by byte
// permutes: the bits stage_t writes.
template <int HD, bool PAIR, int NM>
struct RawRows {
  uint2 v[NM][StageItems<HD, PAIR>::kItems][2];
};
template <int HD, bool PAIR, int NM>
__device__ __forceinline__ void load_t_raw(RawRows<HD, PAIR, NM>& r, const float* const (&M)[NM], const int (&ld)[NM],
                                           int n) {
  StageItems<HD, PAIR>::template each<NM>(n, [&](int i, int u, int j, int c) {
    const size_t o = static_cast<size_t>(j) * ld[i] + c;
    r.v[i][u][0] = __ldg(reinterpret_cast<const uint2*>(elem_at(M[i], true, o)));
    r.v[i][u][1] = __ldg(reinterpret_cast<const uint2*>(elem_at(M[i], true, o + ld[i])));
  });
}
template <int HD, bool PAIR, int NM>
__device__ __forceinline__ void store_t_raw(__nv_bfloat16* const (&T)[NM], const RawRows<HD, PAIR, NM>& r, int n) {
  StageItems<HD, PAIR>::template each<NM>(n, [&](int i, int u, int j, int c) {
    uint32_t* d = reinterpret_cast<uint32_t*>(T[i] + c * kLdT + j);
    const uint2 a = r.v[i][u][0], b = r.v[i][u][1];  // rows j and j + 1, columns c .. c + 3
    d[0] = __byte_perm(a.x, b.x, 0x5410);
    d[kLdT / 2] = __byte_perm(a.x, b.x, 0x7632);
    d[kLdT] = __byte_perm(a.y, b.y, 0x5410);
    d[3 * kLdT / 2] = __byte_perm(a.y, b.y, 0x7632);
  });
}

// forward_head_mma over units u = blockIdx.x, + gridDim.x, ... (a unit: the block's (element, head), or with
// PAIR its two), for a bf16 qkv: the next unit's Q fragments and K, V rows are loaded into registers before
// this unit's products, so that they are in flight while those run and its probs and out are stored. Why:
// the one-unit-a-block kernel is a single wave whose blocks all load, then all compute, then all store
// (ncu: ~50% of HBM bandwidth for the char config, 18 us a window); with a few blocks an SM, each walking a
// few units, one unit's loads overlap another's products and stores. The same products in the same order as
// forward_head_mma: the same bits.
template <int HD, bool PAIR>
__device__ __forceinline__ void forward_heads_persist(const float* __restrict__ qkv, float* __restrict__ probs,
                                                      float* __restrict__ out, __nv_bfloat16* __restrict__ twin,
                                                      const Geo& g, const Mask& mask, int units) {
  using HT = HeadThreads<PAIR>;
  constexpr int NT = HT::kRows / 8;
  __shared__ __align__(16) __nv_bfloat16 Kt_all[HD * kLdT], Vt_all[HD * kLdT];
  const int sub = HT::sub();
  __nv_bfloat16* const T[2] = {Kt_all + 32 * sub, Vt_all + 32 * sub};
  const int n = g.n;
  const int lt = HT::local();
  const int m = lt >> 5, lane = lt & 31, gq = lane >> 2, tq = lane & 3;
  const bool active = 16 * m < n;
  auto head = [&](int unit) { return PAIR ? 2 * unit + sub : unit; };
  uint32_t nq[HD / 16][4];  // the next unit's Q fragments and K, V rows
  RawRows<HD, PAIR, 2> nkv;
  auto load = [&](int unit) {
    const int bh = head(unit), b = bh / g.H, h = bh % g.H;
    const size_t qo = static_cast<size_t>(b) * n * g.ld + h * HD;
    if (active) frags_a<HD>(nq, elem_at(qkv, true, qo), g.ld, 16 * m, gq, tq, true);
    const float* const M[2] = {elem_at(qkv, true, qo + g.d), elem_at(qkv, true, qo + 2 * g.d)};
    const int ld[2] = {g.ld, g.ld};
    load_t_raw<HD, PAIR, 2>(nkv, M, ld, n);
  };
  int unit = blockIdx.x;
  if (unit < units) load(unit);
  for (; unit < units; unit += gridDim.x) {
    uint32_t qa[HD / 16][4];
#pragma unroll
    for (int ks = 0; ks < HD / 16; ++ks)
#pragma unroll
      for (int e = 0; e < 4; ++e) qa[ks][e] = nq[ks][e];
    __syncthreads();  // the previous unit's products have read K and V
    store_t_raw<HD, PAIR, 2>(T, nkv, n);
    __syncthreads();
    if (unit + static_cast<int>(gridDim.x) < units) load(unit + gridDim.x);
    if (active) {
      const int bh = head(unit), b = bh / g.H, h = bh % g.H;
      const size_t at = static_cast<size_t>(b) * n * g.d + h * HD;
      forward_rows_mma<HD, NT>(qa, T[0], T[1], m, n, bh, g.scale, mask, probs,
                               [&](const float (&o)[HD / 8][4], const int (&r)[2]) {
                                 store_rows<HD>(o, out ? out + at : nullptr, twin ? twin + at : nullptr, g.d, r, tq);
                               });
    }
  }
}

// forward_heads_persist's walk with S stages of shared memory filled by cp.async, for a bf16 qkv: a stage
// holds a unit's Q, K and V rows as they are in qkv (row stride kLdR; a head's rows from 0, or with PAIR head
// sub's from 32 sub), the fragments read with ldmatrix (Q as A, K as B, V through .trans). Why: the register
// prefetch of forward_heads_persist holds one unit ahead in ~60 registers a thread and then transposes it
// through 4-byte shared stores, and its blocks still waited on those loads at the top of each unit (ncu:
// 34.5% of the stall samples, bench/results/cuda-ncu-2026-12-06-s30b.log); copies that bypass the registers
// can run S - 1 units ahead at no register cost. The same products in the same order from the same bf16
// values as forward_heads_persist: the same bits (kernels_check).
template <int HD>
constexpr int kStageElems = 3 * kMmaN * kLdR<HD>;  // Q, K, V of 64 rows
template <int HD, int S>
constexpr int async_forward_smem() {
  return S * kStageElems<HD> * static_cast<int>(sizeof(__nv_bfloat16));
}

// Unit `unit`'s Q, K, V rows into stage st (gemm_detail::load_tile_async: 16-byte copies, fixed trip counts, no
// division by run-time values; a head's rows past n become zeros, never read); one commit group. (A loop of
// session 32's own, dividing by run-time values for each copy, took the kernel to 15.60 us a char window against
// 14.94 without those divisions, ncu on an H100.)
template <int HD, bool PAIR>
__device__ __forceinline__ void load_unit_async(__nv_bfloat16* st, const __nv_bfloat16* __restrict__ qkv, const Geo& g,
                                                int unit) {
  constexpr int kRows = HeadThreads<PAIR>::kRows, kHeads = PAIR ? 2 : 1;
#pragma unroll
  for (int hs = 0; hs < kHeads; ++hs) {
    const int bh = PAIR ? 2 * unit + hs : unit, b = bh / g.H, h = bh - b * g.H, r0 = b * g.n;
#pragma unroll
    for (int mtx = 0; mtx < 3; ++mtx)  // Q, K, V
      gemm_detail::load_tile_async<kRows, HD, kLdR<HD>, kMmaThreads>(st + (mtx * kMmaN + 32 * hs) * kLdR<HD>, qkv, g.ld,
                                                                     r0, mtx * g.d + h * HD, r0 + g.n, g.ld, true);
  }
  gemm_detail::cp_async_commit();
}

template <int HD, bool PAIR, int S>
__device__ __forceinline__ void forward_heads_async(const float* __restrict__ qkv, float* __restrict__ probs,
                                                    float* __restrict__ out, __nv_bfloat16* __restrict__ twin,
                                                    const Geo& g, const Mask& mask, int units, __nv_bfloat16* sm) {
  static_assert(S >= 2, "one stage in use and at least one filling");
  using HT = HeadThreads<PAIR>;
  constexpr int NT = HT::kRows / 8, L = kLdR<HD>;
  const __nv_bfloat16* q16 = reinterpret_cast<const __nv_bfloat16*>(qkv);
  const int n = g.n, sub = HT::sub();
  const int lt = HT::local();
  const int m = lt >> 5, lane = lt & 31, tq = lane & 3;
  const bool active = 16 * m < n;
  const int step = gridDim.x;
  auto head = [&](int unit) { return PAIR ? 2 * unit + sub : unit; };
  // Stage s takes units blockIdx.x + (s + S k) step; a stage with no unit still commits an (empty) group, so
  // that wait_group's count stays the number of units ahead.
  auto fill = [&](int i) {
    const int unit = blockIdx.x + i * step;
    if (unit < units) load_unit_async<HD, PAIR>(sm + (i % S) * kStageElems<HD>, q16, g, unit);
    else gemm_detail::cp_async_commit();
  };
#pragma unroll
  for (int i = 0; i < S - 1; ++i) fill(i);
  for (int i = 0;; ++i) {
    const int unit = blockIdx.x + i * step;
    if (unit >= units) break;
    gemm_detail::cp_async_wait<S - 2>();
    __syncthreads();  // unit i's copies landed for every thread; unit i - 1's stage read by every warp
    fill(i + S - 1);
    const __nv_bfloat16* st = sm + (i % S) * kStageElems<HD> + 32 * sub * L;
    if (active) {
      uint32_t qa[HD / 16][4];
#pragma unroll
      for (int ks = 0; ks < HD / 16; ++ks) ldmatrix_a(qa[ks], st, L, 16 * m, 16 * ks);
      const int bh = head(unit), b = bh / g.H, h = bh % g.H;
      const size_t at = static_cast<size_t>(b) * n * g.d + h * HD;
      forward_rows_mma<HD, NT, true>(qa, st + kMmaN * L, st + 2 * kMmaN * L, m, n, bh, g.scale, mask, probs,
                                     [&](const float (&o)[HD / 8][4], const int (&r)[2]) {
                                       store_rows<HD>(o, out ? out + at : nullptr, twin ? twin + at : nullptr, g.d, r,
                                                      tq);
                                     });
    }
  }
  gemm_detail::cp_async_wait<0>();  // no copy left in flight at exit (the empty groups')
}

// The backward's shared-memory copies for one head: K, Q, dO transposed, V transposed in the space dS and Pd
// take after it (row-major, [query][key]). PAIR: a head's rows from 32, and at most 32 keys, so Pd takes the
// columns from 32 of dS's rows: 36 KB a block with hd = 64, so that six blocks fit an SM (the char config's 768
// blocks in one wave) while a thread takes at most 80 registers.
template <int HD, bool PAIR>
struct BackwardTiles {
  __nv_bfloat16 *Kt, *Qt, *Ot, *Vt, *S, *P;
  __device__ __forceinline__ BackwardTiles(__nv_bfloat16* K_all, __nv_bfloat16* Q_all, __nv_bfloat16* O_all,
                                           __nv_bfloat16* SP_all) {
    const int sub = HeadThreads<PAIR>::sub();  // PAIR: the second head's keys and queries from 32
    Kt = K_all + 32 * sub;
    Qt = Q_all + 32 * sub;
    Ot = O_all + 32 * sub;
    Vt = SP_all + 32 * sub;
    S = SP_all + 32 * sub * kLdT;
    P = PAIR ? S + 32 : S + kMmaN * kLdT;
  }
};
#define RT_BACKWARD_SMEM(HD, PAIR)                                                                   \
  __shared__ __align__(16) __nv_bfloat16 Kt_all[HD * kLdT], Qt_all[HD * kLdT], Ot_all[HD * kLdT]; \
  __shared__ __align__(16) __nv_bfloat16 SP_all[(PAIR ? 1 : 2) * kMmaN * kLdT];                    \
  const BackwardTiles<HD, PAIR> tl(Kt_all, Qt_all, Ot_all, SP_all)

// A warp's query rows' probabilities (tile m, rows r; zeros in the key tiles past the diagonal's).
template <int NT>
__device__ __forceinline__ void load_probs(float (&p)[NT][4], const float* __restrict__ probs, int bh, int n, int m,
                                           const int (&r)[2], int tq) {
  const int nt_end = 2 * m + 2;
#pragma unroll
  for (int nt = 0; nt < NT; ++nt)
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      float2 v = make_float2(0.0f, 0.0f);
      if (nt < nt_end)
        v = __ldg(reinterpret_cast<const float2*>(probs + (static_cast<size_t>(bh) * n + r[hh]) * n + 8 * nt + 2 * tq));
      p[nt][2 * hh] = v.x;
      p[nt][2 * hh + 1] = v.y;
    }
}

// A warp's query rows' probabilities (tile m) recomputed from the staged Q and K (tl, complete), as
// forward_rows_mma computed them: the same fragments (Q as A through .trans, K^T as B), the same products in the
// same order, the same causal_softmax_mma, so the same bits as the probs the forward would have written. Why:
// the probs buffer is B H n^2 floats an application, kept from every window's forward to its backward (the
// copy config's ~6.3 MB a window, as much as the rest of its attention's traffic, and ~800 MB over its 130
// windows); Q K^T and the softmax are a few dozen instructions a value on operands the backward holds anyway.
template <int HD, bool PAIR, int NT>
__device__ __forceinline__ void probs_rows_mma(float (&p)[NT][4], const BackwardTiles<HD, PAIR>& tl, int m,
                                               float scale) {
  uint32_t qa[HD / 16][4];
#pragma unroll
  for (int ks = 0; ks < HD / 16; ++ks) ldmatrix_at(qa[ks], tl.Qt, 16 * m, 16 * ks);
  float inv[2];
  rows_times_t<HD, NT>(p, qa, tl.Kt, m);
  causal_softmax_mma<NT>(p, inv, m, scale);
#pragma unroll
  for (int nt = 0; nt < NT; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) p[nt][e] *= inv[e >> 1];
}

// The backward of one (element, head) bh from its staged copies (tl, complete) and its probabilities p (this
// warp's rows): phase 1, warp m over its query rows: dP = mask * (dO V^T), dS = P (dP - rowsum(dP P)) scale,
// dQ = dS K; dS and Pd go to shared memory, over V^T (read by then). Phase 2, warp m over key rows
// [16m, 16m + 16): dV = Pd^T dO and dK = dS^T Q over the query tiles at or after it. db, tb: dqkv and its twin
// at (element, head) (either null).
template <int HD, bool PAIR>
__device__ __forceinline__ void backward_rows_staged(const BackwardTiles<HD, PAIR>& tl,
                                                     const float (&p)[HeadThreads<PAIR>::kRows / 8][4], const Geo& g,
                                                     const Mask& mask, int bh, float* db, __nv_bfloat16* tb) {
  using HT = HeadThreads<PAIR>;
  constexpr int NT = HT::kRows / 8;
  const int n = g.n;
  const int lt = HT::local();
  const int m = lt >> 5, lane = lt & 31, gq = lane >> 2, tq = lane & 3;
  const bool active = 16 * m < n;
  const int i0 = 16 * m, nt_end = 2 * m + 2;
  const int r[2] = {i0 + gq, i0 + gq + 8};
  uint32_t pk[NT][2], sk[NT][2];  // Pd and dS as bf16 pairs, rows r[hh] (stored once V^T is no longer read)
  if (active) {
    float ds[NT][4];
    {
      uint32_t oa[HD / 16][4];
#pragma unroll
      for (int ks = 0; ks < HD / 16; ++ks) ldmatrix_at(oa[ks], tl.Ot, i0, 16 * ks);
      rows_times_t<HD, NT>(ds, oa, tl.Vt, m);  // dP = dO V^T
    }
    // Mask, rowsum(dP P), dS; Pd and dS with zeros past the diagonal.
    float t[2] = {0.0f, 0.0f};
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      float pd[4];
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int j = 8 * nt + 2 * tq + (e & 1), hh = e >> 1;
        float dp = ds[nt][e];
        pd[e] = p[nt][e];
        if (nt < nt_end && j <= r[hh]) {
          if (mask.on) {
            const float k = mask((static_cast<uint64_t>(bh) * n + r[hh]) * n + j);
            pd[e] *= k;
            dp *= k;
          }
        } else {
          pd[e] = dp = 0.0f;
        }
        ds[nt][e] = dp;
        t[hh] += dp * p[nt][e];
      }
      pk[nt][0] = pack_bf16(pd[0], pd[1]);
      pk[nt][1] = pack_bf16(pd[2], pd[3]);
    }
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      t[hh] += __shfl_xor_sync(0xffffffffu, t[hh], 1);
      t[hh] += __shfl_xor_sync(0xffffffffu, t[hh], 2);
    }
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e)
        ds[nt][e] = p[nt][e] * (ds[nt][e] - t[e >> 1]) * g.scale;  // p is 0 past the diagonal and in unread tiles
      sk[nt][0] = pack_bf16(ds[nt][0], ds[nt][1]);
      sk[nt][1] = pack_bf16(ds[nt][2], ds[nt][3]);
    }
    acc_times_t<HD, NT>(ds, tl.Kt, m, db, tb, g.ld, r, tq);  // dQ = dS K over key tiles kk <= m
  }
  __syncthreads();  // V^T read by every warp
  if (active)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
      if (nt < nt_end)
#pragma unroll
        for (int hh = 0; hh < 2; ++hh) {
          const int c = r[hh] * kLdT + 8 * nt + 2 * tq;
          *reinterpret_cast<uint32_t*>(tl.P + c) = pk[nt][hh];
          *reinterpret_cast<uint32_t*>(tl.S + c) = sk[nt][hh];
        }
  __syncthreads();  // S and P complete
  if (!active) return;
  // dV = Pd^T dO and dK = dS^T Q for key rows [i0, i0 + 16), one after the other (half the accumulators).
  keys_times_t<HD, NT>(tl.P, tl.Ot, m, n / 16, db ? db + 2 * g.d : nullptr, tb ? tb + 2 * g.d : nullptr, g.ld, r, tq);
  keys_times_t<HD, NT>(tl.S, tl.Qt, m, n / 16, db ? db + g.d : nullptr, tb ? tb + g.d : nullptr, g.ld, r, tq);
}

// Backward of (element b, head h): dQ, dK and dV into dqkv. K, Q, dO and V are staged (transposed, bf16)
// and the probabilities read before any product (or, where probs is null, recomputed from the staged Q and K
// after the barrier): no global read after the first barrier. DH: dout holds bf16.
template <int HD, bool PAIR, bool DH = false>
__device__ __forceinline__ void backward_head_mma(const float* __restrict__ qkv, const float* __restrict__ probs,
                                                  const float* __restrict__ dout, float* __restrict__ dqkv,
                                                  __nv_bfloat16* __restrict__ twin, const Geo& g, const Mask& mask,
                                                  int b, int h) {
  using HT = HeadThreads<PAIR>;
  constexpr int NT = HT::kRows / 8;
  RT_BACKWARD_SMEM(HD, PAIR);
  const int n = g.n, bh = b * g.H + h;
  const bool qh = g.qkv_half;
  const float* ob = elem_at(dout, DH, static_cast<size_t>(b) * n * g.d + h * HD);
  const size_t at = static_cast<size_t>(b) * n * g.ld + h * HD;
  float* db = dqkv ? dqkv + at : nullptr;  // null: twin only (a bf16 gradient stash, BlockGradStash::half)
  __nv_bfloat16* tb = twin ? twin + at : nullptr;
  const int lt = HT::local();
  const int m = lt >> 5, lane = lt & 31, gq = lane >> 2, tq = lane & 3;
  const int r[2] = {16 * m + gq, 16 * m + gq + 8};
  {
    __nv_bfloat16* const T[4] = {tl.Kt, tl.Qt, tl.Ot, tl.Vt};
    const float* const M[4] = {elem_at(qkv, qh, at + g.d), elem_at(qkv, qh, at), ob, elem_at(qkv, qh, at + 2 * g.d)};
    const int ld[4] = {g.ld, g.ld, g.d, g.ld};
    stage_t<HD, PAIR, 4>(T, M, ld, n, (qh ? 0xbu : 0u) | (DH ? 4u : 0u));  // K, Q, V from qkv; dO
  }
  float p[NT][4];  // the probabilities, needed after dP: their loads overlap the barrier's wait and dP
  if (16 * m < n && probs) load_probs<NT>(p, probs, bh, n, m, r, tq);
  __syncthreads();  // the staged copies complete
  if (16 * m < n && !probs) probs_rows_mma<HD, PAIR, NT>(p, tl, m, g.scale);
  backward_rows_staged<HD, PAIR>(tl, p, g, mask, bh, db, tb);
}

// backward_head_mma over units as forward_heads_persist walks them, for a bf16 qkv and dout: the next unit's K,
// Q, dO, V rows and probabilities (none where probs is null: probs_rows_mma recomputes each unit's from its
// staged copies) are loaded into registers before this unit's products. The same bits.
template <int HD, bool PAIR>
__device__ __forceinline__ void backward_heads_persist(const float* __restrict__ qkv, const float* __restrict__ probs,
                                                       const float* __restrict__ dout, float* __restrict__ dqkv,
                                                       __nv_bfloat16* __restrict__ twin, const Geo& g, const Mask& mask,
                                                       int units) {
  using HT = HeadThreads<PAIR>;
  constexpr int NT = HT::kRows / 8;
  RT_BACKWARD_SMEM(HD, PAIR);
  __nv_bfloat16* const T[4] = {tl.Kt, tl.Qt, tl.Ot, tl.Vt};
  const int n = g.n;
  const int lt = HT::local();
  const int m = lt >> 5, lane = lt & 31, gq = lane >> 2, tq = lane & 3;
  const bool active = 16 * m < n;
  const int r[2] = {16 * m + gq, 16 * m + gq + 8};
  auto head = [&](int unit) { return PAIR ? 2 * unit + HT::sub() : unit; };
  RawRows<HD, PAIR, 4> nraw;  // the next unit's rows and probabilities
  float np[NT][4];
  auto load = [&](int unit) {
    const int bh = head(unit), b = bh / g.H, h = bh % g.H;
    const size_t at = static_cast<size_t>(b) * n * g.ld + h * HD;
    const float* const M[4] = {elem_at(qkv, true, at + g.d), elem_at(qkv, true, at),
                               elem_at(dout, true, static_cast<size_t>(b) * n * g.d + h * HD),
                               elem_at(qkv, true, at + 2 * g.d)};
    const int ld[4] = {g.ld, g.ld, g.d, g.ld};
    load_t_raw<HD, PAIR, 4>(nraw, M, ld, n);
    if (active && probs) load_probs<NT>(np, probs, bh, n, m, r, tq);
  };
  int unit = blockIdx.x;
  if (unit < units) load(unit);
  for (; unit < units; unit += gridDim.x) {
    float p[NT][4];
    if (probs)
#pragma unroll
      for (int nt = 0; nt < NT; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) p[nt][e] = np[nt][e];
    __syncthreads();  // the previous unit's products have read the copies
    store_t_raw<HD, PAIR, 4>(T, nraw, n);
    __syncthreads();
    if (unit + static_cast<int>(gridDim.x) < units) load(unit + gridDim.x);
    if (active && !probs) probs_rows_mma<HD, PAIR, NT>(p, tl, m, g.scale);
    const int bh = head(unit), b = bh / g.H, h = bh % g.H;
    const size_t at = static_cast<size_t>(b) * n * g.ld + h * HD;
    backward_rows_staged<HD, PAIR>(tl, p, g, mask, bh, dqkv ? dqkv + at : nullptr, twin ? twin + at : nullptr);
  }
}
#undef RT_BACKWARD_SMEM

}  // namespace rt::cuda::attn
