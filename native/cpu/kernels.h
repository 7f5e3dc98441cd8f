// CPU kernels, float32, row-major, contiguous unless a leading dimension says otherwise.
// Each kernel's forward and backward live side by side in one file (matmul.cc, layernorm.cc, ...).
// Conventions: every `d*` output of a backward is ACCUMULATED (+=) unless its comment says "written";
// weight gradients always accumulate, because one layer is applied many times per sequence.
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/op_types.h"

namespace rt::cpu {

// ---- matmul.cc ----
// C[M,N] = alpha * op(A) * op(B) + beta * C, row-major; op(A) is M x K, op(B) is K x N.
// OpenBLAS sgemm (single-threaded, split across our pool) when built with RT_OPENBLAS, else a blocked
// AVX2/FMA kernel.
void gemm(bool transA, bool transB, int M, int N, int K, float alpha, const float* A, int lda,
          const float* B, int ldb, float beta, float* C, int ldc);
// Which GEMM this build uses: "openblas" or "builtin".
const char* gemm_backend();

// y[n,out] = x[n,in] * W[out,in]^T + b[out] (b may be null). y is written.
void linear_forward(const float* x, const float* W, const float* b, float* y, int n, int in, int out);
// dx[n,in] = dy * W (written; skipped when dx is null); dW[out,in] += dy^T x; db[out] += sum_rows dy.
void linear_backward(const float* x, const float* W, const float* dy, float* dx, float* dW, float* db,
                     int n, int in, int out);

// ---- linear_rows.cc ----
// y[n,out] = x[n,in] * W[out,in]^T + b + res for few rows (b, res may be null; y must not alias x or res),
// without packing W: the decoder's shapes, where a BLAS spends a third of the product copying W. Only
// where linear_rows_fits (n <= kLinearRowsMax, in % 8 == 0, a build with AVX2/FMA); linear_forward
// dispatches to it by itself.
// Up to 32 rows: there it beats OpenBLAS by 10-40% on the decoder's shapes, one thread or two; at 64 rows
// OpenBLAS's packed kernel is as fast on one thread and faster split across two.
constexpr int kLinearRowsMax = 32;
bool linear_rows_fits(int n, int in, int out);
void linear_rows(const float* x, const float* W, const float* b, const float* res, float* y, int n, int in, int out);

// ---- layernorm.cc ----
// y = (x - mean) * rstd * w + b over the last dim d, eps 1e-5; b may be null. y, mean[n], rstd[n] written.
void layernorm_forward(const float* x, const float* w, const float* b, float* y, float* mean, float* rstd,
                       int n, int d);
// dx += ...; dw += ...; db += ... (db may be null).
void layernorm_backward(const float* x, const float* w, const float* mean, const float* rstd,
                        const float* dy, float* dx, float* dw, float* db, int n, int d);

// ---- attention.cc ----
// Causal multi-head self-attention over a sequence of n tokens (a window pair, or the whole sequence
// when w = 0), batch B. qkv[B,n,3d]: q, k, v in that order, heads split contiguously (head h owns
// columns h*hd .. h*hd+hd-1 of each of q, k, v, hd = d/H). scale 1/sqrt(hd). Softmax fused with the
// scores. probs[B,H,n,n] (written, saved for backward) holds the softmax before dropout; the upper
// triangle is written as 0. out[B,n,d] (written): heads concatenated.
// Dropout on the probabilities with rate p, mask from rng(seed, stream) at index ((b*H+h)*n+i)*n+j.
void attention_forward(const float* qkv, float* probs, float* out, int B, int n, int d, int H, float p,
                       uint64_t seed, uint64_t stream);
// dqkv[B,n,3d] is written.
void attention_backward(const float* qkv, const float* probs, const float* dout, float* dqkv, int B, int n,
                        int d, int H, float p, uint64_t seed, uint64_t stream);

// ---- activation.cc ----
// Exact gelu 0.5*x*(1+erf(x/sqrt 2)) and relu. y written; dx written (dx may alias dy).
void gelu_forward(const float* x, float* y, size_t n);
void gelu_backward(const float* x, const float* dy, float* dx, size_t n);
void relu_forward(const float* x, float* y, size_t n);
void relu_backward(const float* x, const float* dy, float* dx, size_t n);

// ---- dropout.cc ----
// y = x * keep / (1 - p), keep = rng(seed, stream, i) >= p. y may alias x. p = 0 copies.
void dropout_forward(const float* x, float* y, size_t n, float p, uint64_t seed, uint64_t stream);
// dx = dy * keep / (1 - p), the same mask (written; may alias).
void dropout_backward(const float* dy, float* dx, size_t n, float p, uint64_t seed, uint64_t stream);

}  // namespace rt::cpu

namespace rt::cpu {

// ---- embedding.cc ----
// out[b,t,:] = wte[tokens[b,t]] + (wpe ? wpe[t] : 0), then dropout (rate p, index (b*N+t)*d+j).
// Tokens must lie in [0, V): checked, an rt::Error names the first bad one.
void embedding_forward(const int32_t* tokens, const float* wte, const float* wpe, float* out, int B, int N, int d,
                       int V, float p, uint64_t seed, uint64_t stream);
// dwte[tokens[b,t]] += dropout'(dout[b,t]); dwpe[t] += ... (dwpe may be null). Deterministic: each thread
// owns a range of columns and walks the tokens in order.
void embedding_backward(const int32_t* tokens, const float* dout, float* dwte, float* dwpe, int B, int N, int d,
                        float p, uint64_t seed, uint64_t stream);

// ---- softmax_xent.cc ----
// The head: the last P positions of each of B sequences of Y [B, N, d] go through the final layernorm
// (lnw, lnb may be null) and a linear map W [V, d] (the tied wte, or an untied classify head) to logits,
// scored by softmax cross-entropy against targets [B, P]; targets equal to ignore_index are not scored.
using rt::XentResult;
// The targets that are scored (not ignore_index); throws rt::Error naming the first one outside [0, V).
int64_t count_scored(const int32_t* targets, int R, int V, int ignore_index);
// When dY is non-null it receives (written) the gradient of the mean loss w.r.t. Y, zero outside the last
// P positions; dlnw, dlnb, dW accumulate. Logits are computed in chunks of rows, never all at once, so
// memory stays O(chunk * V) whatever B * P is.
XentResult head_xent(const float* Y, const float* lnw, const float* lnb, const float* W, const int32_t* targets,
                     int B, int N, int d, int V, int P, int ignore_index, float* dY, float* dlnw, float* dlnb,
                     float* dW);
// Logits [B, P, V] (written) of the last P positions, for evaluation and generation.
void head_logits(const float* Y, const float* lnw, const float* lnb, const float* W, int B, int N, int d, int V, int P,
                 float* logits);

// ---- adamw.cc ----
using rt::AdamWHyper;
// Decoupled weight decay (applied only when `decay`, i.e. 2-D weights, like nanoGPT), bias-corrected moments.
void adamw_update(float* param, const float* grad, float* m, float* v, size_t n, const AdamWHyper& h, bool decay);
// Sum of squares in double, in a fixed order (the same bits for any thread count).
double sum_squares(const float* x, size_t n);

}  // namespace rt::cpu

namespace rt::cpu {

// ---- decode.cc (inference only: no backward) ----
// Attention for c new query rows at positions t0 .. t0+c-1 of an application whose keys and values sit in
// a cache: qkv holds B sequences of `cap` rows of [q | k | v] (3d floats), rows 0 .. t0+c-1 filled.
// Row t0+r attends causally to rows 0 .. t0+r. out [B, c, d] is written. Incremental decoding and chunked
// prefill both use it, so generation never recomputes the window it has already seen.
void attention_cached(const float* qkv, int cap, int B, int t0, int c, int d, int H, float* out);
// Row-wise form (continuous batching): row r is the query at position t[r] of cache slot slot[r].
void attention_cached_rows(const float* qkv, int cap, const int* slot, const int* t, int S, int d, int H, float* out);

}  // namespace rt::cpu
