// CPU kernels, float32, row-major, contiguous unless a leading dimension says otherwise.
// Each kernel's forward and backward live side by side in one file (matmul.cc, layernorm.cc, ...).
// Conventions: every `d*` output of a backward is ACCUMULATED (+=) unless its comment says "written";
// weight gradients always accumulate, because one layer is applied many times per sequence.
#pragma once
#include <cstddef>
#include <cstdint>

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
