#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/thread_pool.h"
#include "cpu/kernels.h"

namespace rt::cpu {
namespace {

// Rows of logits held at once: bounds memory at kChunk * V floats (GPT-2's 50257 classes: ~50 MB).
constexpr int kChunk = 256;

// Gathers the last P positions of each sequence and normalises them: X (raw rows), H = LN(X).
void gather_normalise(const float* Y, const float* lnw, const float* lnb, int B, int N, int d, int P,
                      std::vector<float>& X, std::vector<float>& H, std::vector<float>& mean,
                      std::vector<float>& rstd) {
  const size_t R = static_cast<size_t>(B) * P;
  X.resize(R * d);
  H.resize(R * d);
  mean.resize(R);
  rstd.resize(R);
  for (int b = 0; b < B; ++b)
    std::copy(Y + (static_cast<size_t>(b) * N + (N - P)) * d, Y + (static_cast<size_t>(b) * N + N) * d,
              X.begin() + static_cast<size_t>(b) * P * d);
  layernorm_forward(X.data(), lnw, lnb, H.data(), mean.data(), rstd.data(), static_cast<int>(R), d);
}

}  // namespace

int64_t count_scored(const int32_t* targets, int R, int V, int ignore_index) {
  int64_t count = 0;
  for (int r = 0; r < R; ++r) {
    if (targets[r] == ignore_index) continue;
    if (targets[r] < 0 || targets[r] >= V)
      throw Error("targets: value " + std::to_string(targets[r]) + " at index " + std::to_string(r) +
                  " is outside [0, " + std::to_string(V) + ") and is not the ignore index " + std::to_string(ignore_index));
    ++count;
  }
  return count;
}

XentResult head_xent(const float* Y, const float* lnw, const float* lnb, const float* W, const int32_t* targets, int B,
                     int N, int d, int V, int P, int ignore_index, float* dY, float* dlnw, float* dlnb, float* dW) {
  RT_CHECK(P >= 1 && P <= N, "head: scored positions must be in [1, N], got " + std::to_string(P));
  const int R = B * P;
  XentResult res;
  res.count = count_scored(targets, R, V, ignore_index);
  std::vector<float> X, H, mean, rstd;
  gather_normalise(Y, lnw, lnb, B, N, d, P, X, H, mean, rstd);
  std::vector<float> dH;
  if (dY) dH.assign(static_cast<size_t>(R) * d, 0.0f);
  const float inv_count = res.count ? 1.0f / static_cast<float>(res.count) : 0.0f;

  std::vector<float> logits(static_cast<size_t>(std::min(R, kChunk)) * V);
  std::vector<double> row_loss(std::min(R, kChunk));
  std::vector<char> row_hit(std::min(R, kChunk));
  double loss = 0;
  for (int r0 = 0; r0 < R; r0 += kChunk) {
    const int rc = std::min(kChunk, R - r0);
    const float* Hc = H.data() + static_cast<size_t>(r0) * d;
    gemm(false, true, rc, V, d, 1.0f, Hc, d, W, d, 0.0f, logits.data(), V);
    // Softmax, loss and its gradient in place, one row per work item.
    parallel_for(rc, 4, [&](size_t a, size_t b) {
      for (size_t i = a; i < b; ++i) {
        float* z = logits.data() + i * V;
        const int t = targets[r0 + i];
        const float mx = *std::max_element(z, z + V);
        const int arg = static_cast<int>(std::max_element(z, z + V) - z);
        double s = 0;
        for (int j = 0; j < V; ++j) s += std::exp(static_cast<double>(z[j] - mx));
        const double lse = mx + std::log(s);
        row_loss[i] = t == ignore_index ? 0.0 : lse - z[t];
        row_hit[i] = t != ignore_index && arg == t;
        if (!dY) continue;
        if (t == ignore_index) {
          std::fill(z, z + V, 0.0f);
          continue;
        }
        for (int j = 0; j < V; ++j) z[j] = static_cast<float>(std::exp(z[j] - lse)) * inv_count;
        z[t] -= inv_count;
      }
    });
    for (int i = 0; i < rc; ++i) {  // fixed order: the loss has the same bits for any thread count
      loss += row_loss[i];
      res.correct += row_hit[i];
    }
    if (dY) {
      gemm(true, false, V, d, rc, 1.0f, logits.data(), V, Hc, d, 1.0f, dW, d);
      gemm(false, false, rc, d, V, 1.0f, logits.data(), V, W, d, 0.0f, dH.data() + static_cast<size_t>(r0) * d, d);
    }
  }
  res.loss = res.count ? loss / res.count : 0.0;
  if (dY) {
    std::vector<float> dX(static_cast<size_t>(R) * d, 0.0f);
    layernorm_backward(X.data(), lnw, mean.data(), rstd.data(), dH.data(), dX.data(), dlnw, dlnb, R, d);
    std::fill(dY, dY + static_cast<size_t>(B) * N * d, 0.0f);
    for (int b = 0; b < B; ++b)
      std::copy(dX.begin() + static_cast<size_t>(b) * P * d, dX.begin() + static_cast<size_t>(b + 1) * P * d,
                dY + (static_cast<size_t>(b) * N + (N - P)) * d);
  }
  return res;
}

void head_logits(const float* Y, const float* lnw, const float* lnb, const float* W, int B, int N, int d, int V, int P,
                 float* logits) {
  RT_CHECK(P >= 1 && P <= N, "head: scored positions must be in [1, N], got " + std::to_string(P));
  std::vector<float> X, H, mean, rstd;
  gather_normalise(Y, lnw, lnb, B, N, d, P, X, H, mean, rstd);
  // Up to 32 rows (a decoder step's, which calls this in chunks of at most that many) go through the
  // few-rows kernel: each row's logits then have the same bits whatever rows share the call. The GEMM's
  // small-matrix and row-edge paths round a row differently depending on the rows beside it.
  linear_forward(H.data(), W, nullptr, logits, B * P, d, V);
}

}  // namespace rt::cpu
