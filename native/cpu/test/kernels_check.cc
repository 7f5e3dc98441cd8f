// Standalone check of the CPU kernels and the thread pool (no Node, no test framework).
//
//   kernels_check            correctness against float64 references and finite differences, determinism,
//                            thread-count independence (re-runs itself with RT_NUM_THREADS=1, 2 and 3),
//                            then one JSON line of GEMM GFLOP/s (1 and 2 threads) and kernel timings.
//   kernels_check --digest   prints a hash of every kernel's output on fixed inputs (used by the above).
//   kernels_check --bench    prints the timing JSON for the current RT_NUM_THREADS.
//
// Exit status 0 when every check passes. Built by scripts/check-kernels.sh with and without RT_OPENBLAS.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "core/thread_pool.h"
#include "cpu/kernels.h"

using namespace rt::cpu;
using std::size_t;
using std::vector;
typedef vector<float> VF;
typedef vector<double> VD;

// ------------------------------------------------------------------------------------------------
// Reporting.

static int g_failed = 0, g_passed = 0;

static void report(bool ok, const std::string& what, double measured, double limit) {
  if (ok) {
    ++g_passed;
  } else {
    ++g_failed;
    std::printf("FAIL %s: %.3g (limit %.3g)\n", what.c_str(), measured, limit);
  }
}
static void expect_le(double measured, double limit, const std::string& what) {
  report(measured <= limit && !std::isnan(measured), what, measured, limit);
}
static void expect_true(bool ok, const std::string& what) { report(ok, what, ok ? 1 : 0, 1); }

static std::string fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));
static std::string fmt(const char* f, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, f);
  std::vsnprintf(buf, sizeof buf, f, ap);
  va_end(ap);
  return buf;
}

static VF randv(size_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  VF v(n);
  for (auto& x : v) x = u(g);
  return v;
}
static VD to_d(const VF& v) { return VD(v.begin(), v.end()); }

// max |a - b| / (max |b| + floor): error relative to the scale of the reference.
static double rel_err(const VF& a, const VD& b, double floor = 1e-6) {
  double m = 0, s = floor;
  for (size_t i = 0; i < b.size(); ++i) {
    m = std::max(m, std::fabs(static_cast<double>(a[i]) - b[i]));
    if (std::isnan(a[i])) return INFINITY;
    s = std::max(s, std::fabs(b[i]));
  }
  return m / s;
}

static bool same_bits(const VF& a, const VF& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// ------------------------------------------------------------------------------------------------
// float64 references.

static void gemm_ref(bool ta, bool tb, int M, int N, int K, double alpha, const VF& A, int lda, const VF& B,
                     int ldb, double beta, const VD& C0, VD& C, int ldc) {
  C = C0;
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) {
      double s = 0;
      for (int k = 0; k < K; ++k) {
        const double a = ta ? A[static_cast<size_t>(k) * lda + i] : A[static_cast<size_t>(i) * lda + k];
        const double b = tb ? B[static_cast<size_t>(j) * ldb + k] : B[static_cast<size_t>(k) * ldb + j];
        s += a * b;
      }
      double& c = C[static_cast<size_t>(i) * ldc + j];
      c = alpha * s + (beta == 0 ? 0.0 : beta * c);
    }
}

static void layernorm_ref(const VD& x, const VD& w, const VD* b, VD& y, int n, int d) {
  y.assign(static_cast<size_t>(n) * d, 0);
  for (int r = 0; r < n; ++r) {
    double m = 0, v = 0;
    for (int j = 0; j < d; ++j) m += x[r * d + j];
    m /= d;
    for (int j = 0; j < d; ++j) v += (x[r * d + j] - m) * (x[r * d + j] - m);
    v /= d;
    const double rs = 1.0 / std::sqrt(v + 1e-5);
    for (int j = 0; j < d; ++j) y[r * d + j] = (x[r * d + j] - m) * rs * w[j] + (b ? (*b)[j] : 0.0);
  }
}

static double keep_mult(float p, uint64_t key, uint64_t idx) {
  if (p == 0.0f) return 1.0;
  return rt::rng_uniform(key, idx) >= p ? 1.0 / (1.0 - p) : 0.0;
}

// Attention in float64, with probs (pre-dropout) and out.
static void attention_ref(const VD& qkv, VD& probs, VD& out, int B, int n, int d, int H, float p, uint64_t seed,
                          uint64_t stream) {
  const int hd = d / H, ld = 3 * d;
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  const uint64_t key = rt::rng_key(seed, stream);
  probs.assign(static_cast<size_t>(B) * H * n * n, 0);
  out.assign(static_cast<size_t>(B) * n * d, 0);
  VD s(n);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h)
      for (int i = 0; i < n; ++i) {
        const size_t bh = static_cast<size_t>(b) * H + h;
        double mx = -INFINITY;
        for (int j = 0; j <= i; ++j) {
          double dot = 0;
          for (int c = 0; c < hd; ++c)
            dot += qkv[(static_cast<size_t>(b) * n + i) * ld + h * hd + c] *
                   qkv[(static_cast<size_t>(b) * n + j) * ld + d + h * hd + c];
          s[j] = dot * scale;
          mx = std::max(mx, s[j]);
        }
        double sum = 0;
        for (int j = 0; j <= i; ++j) sum += (s[j] = std::exp(s[j] - mx));
        for (int j = 0; j <= i; ++j) {
          const double pij = s[j] / sum;
          probs[(bh * n + i) * n + j] = pij;
          const double pd = pij * keep_mult(p, key, (bh * n + i) * n + j);
          for (int c = 0; c < hd; ++c)
            out[(static_cast<size_t>(b) * n + i) * d + h * hd + c] +=
                pd * qkv[(static_cast<size_t>(b) * n + j) * ld + 2 * d + h * hd + c];
        }
      }
}

// Analytic attention backward in float64 (the formulas of the kernel header, written the slow way).
static void attention_bwd_ref(const VD& qkv, const VD& dout, VD& dqkv, int B, int n, int d, int H, float p,
                              uint64_t seed, uint64_t stream) {
  VD probs, out;
  attention_ref(qkv, probs, out, B, n, d, H, p, seed, stream);
  const int hd = d / H, ld = 3 * d;
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  const uint64_t key = rt::rng_key(seed, stream);
  dqkv.assign(qkv.size(), 0);
  VD dp(n);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h)
      for (int i = 0; i < n; ++i) {
        const size_t bh = static_cast<size_t>(b) * H + h;
        auto Q = [&](int t, int c) { return qkv[(static_cast<size_t>(b) * n + t) * ld + h * hd + c]; };
        auto K = [&](int t, int c) { return qkv[(static_cast<size_t>(b) * n + t) * ld + d + h * hd + c]; };
        auto V = [&](int t, int c) { return qkv[(static_cast<size_t>(b) * n + t) * ld + 2 * d + h * hd + c]; };
        auto dO = [&](int t, int c) { return dout[(static_cast<size_t>(b) * n + t) * d + h * hd + c]; };
        double tsum = 0;
        for (int j = 0; j <= i; ++j) {
          const double m = keep_mult(p, key, (bh * n + i) * n + j);
          const double P = probs[(bh * n + i) * n + j];
          double dpd = 0;
          for (int c = 0; c < hd; ++c) {
            dqkv[(static_cast<size_t>(b) * n + j) * ld + 2 * d + h * hd + c] += P * m * dO(i, c);
            dpd += dO(i, c) * V(j, c);
          }
          dp[j] = dpd * m;
          tsum += dp[j] * P;
        }
        for (int j = 0; j <= i; ++j) {
          const double ds = probs[(bh * n + i) * n + j] * (dp[j] - tsum) * scale;
          for (int c = 0; c < hd; ++c) {
            dqkv[(static_cast<size_t>(b) * n + i) * ld + h * hd + c] += ds * K(j, c);
            dqkv[(static_cast<size_t>(b) * n + j) * ld + d + h * hd + c] += ds * Q(i, c);
          }
        }
      }
}

static double gelu_ref(double x) { return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); }
static double gelu_grad_ref(double x) {
  return 0.5 * (1.0 + std::erf(x / std::sqrt(2.0))) + x * std::exp(-0.5 * x * x) / std::sqrt(2.0 * M_PI);
}

// Central finite difference of L(x) = sum(f(x) * g) for coordinates idx, in double.
static VD fd_grad(const std::function<double(const VD&)>& loss, VD x, const vector<size_t>& idx, double h) {
  VD g(idx.size());
  for (size_t t = 0; t < idx.size(); ++t) {
    const double x0 = x[idx[t]];
    x[idx[t]] = x0 + h;
    const double lp = loss(x);
    x[idx[t]] = x0 - h;
    const double lm = loss(x);
    x[idx[t]] = x0;
    g[t] = (lp - lm) / (2 * h);
  }
  return g;
}
static vector<size_t> all_or_sample(size_t n, size_t maxn, uint32_t seed) {
  vector<size_t> idx;
  if (n <= maxn) {
    for (size_t i = 0; i < n; ++i) idx.push_back(i);
  } else {
    std::mt19937 g(seed);
    for (size_t i = 0; i < maxn; ++i) idx.push_back(g() % n);
  }
  return idx;
}
static double dot(const VD& a, const VD& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}
static double sampled_err(const VF& got, const vector<size_t>& idx, const VD& want) {
  double m = 0, s = 1e-6;
  for (size_t t = 0; t < idx.size(); ++t) {
    m = std::max(m, std::fabs(got[idx[t]] - want[t]));
    if (std::isnan(got[idx[t]])) return INFINITY;
    s = std::max(s, std::fabs(want[t]));
  }
  return m / s;
}

// ------------------------------------------------------------------------------------------------
// Checks.

static void check_thread_pool() {
  // Every index visited exactly once, chunks contiguous, at least `grain` long (but for a lone chunk).
  for (size_t n : {0ul, 1ul, 2ul, 3ul, 17ul, 1000ul, 100003ul}) {
    for (size_t grain : {1ul, 7ul, 1000ul}) {
      vector<std::atomic<int>> hits(n);
      std::atomic<int> bad{0};
      rt::parallel_for(n, grain, [&](size_t b, size_t e) {
        if (e <= b || (e - b < grain && !(b == 0 && e == n))) bad++;
        for (size_t i = b; i < e; ++i) hits[i]++;
      });
      bool ok = bad == 0;
      for (auto& h : hits) ok &= h == 1;
      expect_true(ok, fmt("parallel_for covers [0,%zu) once, grain %zu", n, grain));
    }
  }
  // Nested calls run (serially) and still cover everything.
  {
    std::atomic<long> sum{0};
    rt::parallel_for(64, 1, [&](size_t b, size_t e) {
      for (size_t i = b; i < e; ++i)
        rt::parallel_for(100, 1, [&](size_t b2, size_t e2) {
          for (size_t k = b2; k < e2; ++k) sum += static_cast<long>(i * 100 + k);
        });
    });
    expect_true(sum == 6400L * 6399 / 2, "nested parallel_for");
  }
  // Exceptions thrown in any chunk reach the caller, and the pool stays usable.
  {
    bool caught = false;
    try {
      rt::parallel_for(1000, 1, [&](size_t b, size_t) {
        if (b > 0) throw rt::Error("boom");
      });
    } catch (const rt::Error& e) {
      caught = std::string(e.what()) == "boom";
    }
    expect_true(caught || rt::num_threads() == 1, "exception from a worker chunk propagates");
    std::atomic<int> c{0};
    rt::parallel_for(100, 1, [&](size_t b, size_t e) { c += static_cast<int>(e - b); });
    expect_true(c == 100, "pool usable after an exception");
  }
  // Two threads hammering the pool at once: one gets it, the other runs serially; both correct.
  {
    std::atomic<int> errors{0};
    auto worker = [&](int id) {
      for (int it = 0; it < 2000; ++it) {
        vector<int> v(257, 0);
        rt::parallel_for(v.size(), 3, [&](size_t b, size_t e) {
          for (size_t i = b; i < e; ++i) v[i] += id + 1;
        });
        for (int x : v)
          if (x != id + 1) errors++;
      }
    };
    std::thread t1(worker, 0), t2(worker, 1);
    t1.join();
    t2.join();
    expect_true(errors == 0, "concurrent parallel_for from two threads");
  }
}

static void check_gemm() {
  struct Shape {
    int M, N, K;
  };
  const Shape shapes[] = {{1, 1, 1},   {1, 17, 5},   {17, 1, 9},    {5, 7, 1},     {17, 33, 65},
                          {7, 300, 5}, {130, 70, 260}, {50, 40, 600}, {300, 48, 31}, {3, 3100, 20},
                          {200, 150, 100}, {64, 512, 96}};
  for (const Shape& s : shapes)
    for (int ta = 0; ta < 2; ++ta)
      for (int tb = 0; tb < 2; ++tb)
        for (float beta : {0.0f, 1.0f, -0.5f}) {
          const int pad = 3;
          const int lda = (ta ? s.M : s.K) + pad, ldb = (tb ? s.K : s.N) + pad, ldc = s.N + pad;
          const VF A = randv(static_cast<size_t>(ta ? s.K : s.M) * lda, 1 + s.M);
          const VF B = randv(static_cast<size_t>(tb ? s.N : s.K) * ldb, 2 + s.N);
          VF C = randv(static_cast<size_t>(s.M) * ldc, 3 + s.K);
          if (beta == 0.0f)
            for (auto& c : C) c = std::numeric_limits<float>::quiet_NaN();  // beta = 0 must not read C
          const VD C0 = to_d(C);
          const float alpha = 0.75f;
          gemm(ta, tb, s.M, s.N, s.K, alpha, A.data(), lda, B.data(), ldb, beta, C.data(), ldc);
          VD R;
          gemm_ref(ta, tb, s.M, s.N, s.K, alpha, A, lda, B, ldb, beta, C0, R, ldc);
          // Compare only the M x N window; the padding columns must be untouched.
          double err = 0, scale = 1e-6;
          bool pad_ok = true;
          for (int i = 0; i < s.M; ++i)
            for (int j = 0; j < ldc; ++j) {
              const size_t k = static_cast<size_t>(i) * ldc + j;
              if (j >= s.N) {
                pad_ok &= std::isnan(C0[k]) ? std::isnan(C[k]) : C[k] == C0[k];
                continue;
              }
              err = std::max(err, std::isnan(C[k]) ? INFINITY : std::fabs(C[k] - R[k]));
              scale = std::max(scale, std::fabs(R[k]));
            }
          const std::string name =
              fmt("gemm %c%c %dx%dx%d beta=%g", ta ? 'T' : 'N', tb ? 'T' : 'N', s.M, s.N, s.K, beta);
          expect_le(err / scale, 2e-6 * std::sqrt(static_cast<double>(s.K)) + 1e-6, name);
          expect_true(pad_ok, name + " leaves ldc padding alone");
        }
  // alpha = 0 and K = 0 only scale C.
  {
    VF C = {1, 2, 3, 4}, A = {std::numeric_limits<float>::quiet_NaN()}, B = A;
    gemm(false, false, 2, 2, 1, 0.0f, A.data(), 1, B.data(), 2, 2.0f, C.data(), 2);
    expect_true(C == VF({2, 4, 6, 8}), "gemm alpha=0 scales C by beta");
    gemm(false, false, 2, 2, 0, 1.0f, nullptr, 1, nullptr, 2, 0.0f, C.data(), 2);
    expect_true(C == VF({0, 0, 0, 0}), "gemm K=0 with beta=0 zeroes C");
  }
  // Bad leading dimension is an rt::Error, not a crash.
  {
    bool threw = false;
    VF A(4), B(4), C(4);
    try {
      gemm(false, false, 2, 2, 2, 1, A.data(), 1, B.data(), 2, 0, C.data(), 2);
    } catch (const rt::Error&) {
      threw = true;
    }
    expect_true(threw, "gemm rejects lda < K");
  }
}

static void check_linear() {
  typedef std::tuple<int, int, int> T3;
  for (auto [n, in, out] : {T3{1, 1, 1}, T3{17, 33, 9}, T3{64, 96, 288}, T3{130, 40, 7}}) {
    const VF x = randv(static_cast<size_t>(n) * in, 10 + n), W = randv(static_cast<size_t>(out) * in, 11),
             b = randv(out, 12), dy = randv(static_cast<size_t>(n) * out, 13);
    for (int with_bias = 0; with_bias < 2; ++with_bias) {
      VF y(static_cast<size_t>(n) * out, std::numeric_limits<float>::quiet_NaN());
      linear_forward(x.data(), W.data(), with_bias ? b.data() : nullptr, y.data(), n, in, out);
      VD R(y.size());
      for (int r = 0; r < n; ++r)
        for (int o = 0; o < out; ++o) {
          double s = with_bias ? b[o] : 0.0;
          for (int i = 0; i < in; ++i) s += static_cast<double>(x[r * in + i]) * W[o * in + i];
          R[r * out + o] = s;
        }
      expect_le(rel_err(y, R), 1e-5, fmt("linear_forward n=%d in=%d out=%d bias=%d", n, in, out, with_bias));
    }
    // Backward: dx written, dW and db accumulated onto what is there.
    VF dx(static_cast<size_t>(n) * in, std::numeric_limits<float>::quiet_NaN());
    VF dW = randv(W.size(), 14), db = randv(out, 15);
    const VF dW0 = dW, db0 = db;
    linear_backward(x.data(), W.data(), dy.data(), dx.data(), dW.data(), db.data(), n, in, out);
    VD Rdx(dx.size(), 0), RdW(to_d(dW0)), Rdb(to_d(db0));
    for (int r = 0; r < n; ++r)
      for (int o = 0; o < out; ++o) {
        const double g = dy[r * out + o];
        Rdb[o] += g;
        for (int i = 0; i < in; ++i) {
          Rdx[r * in + i] += g * W[o * in + i];
          RdW[o * in + i] += g * x[r * in + i];
        }
      }
    expect_le(rel_err(dx, Rdx), 1e-5, fmt("linear_backward dx n=%d in=%d out=%d", n, in, out));
    expect_le(rel_err(dW, RdW), 1e-5, fmt("linear_backward dW (accumulated) n=%d in=%d out=%d", n, in, out));
    expect_le(rel_err(db, Rdb), 1e-5, fmt("linear_backward db (accumulated) n=%d in=%d out=%d", n, in, out));
    // dx == nullptr is allowed.
    linear_backward(x.data(), W.data(), dy.data(), nullptr, dW.data(), db.data(), n, in, out);
  }
}

static void check_layernorm() {
  typedef std::pair<int, int> P2;
  for (auto [n, d] : {P2{1, 1}, P2{1, 7}, P2{17, 1}, P2{17, 64}, P2{64, 100}, P2{5, 384}}) {
    for (int with_bias = 0; with_bias < 2; ++with_bias) {
      for (float offset : {0.0f, 1000.0f}) {  // a large mean tests the two-pass variance
        VF x = randv(static_cast<size_t>(n) * d, 20 + n + d);
        for (auto& v : x) v += offset;
        const VF w = randv(d, 21, 0.5f, 1.5f), b = randv(d, 22);
        const VF* bp = with_bias ? &b : nullptr;
        VF y(x.size()), mean(n), rstd(n);
        layernorm_forward(x.data(), w.data(), bp ? b.data() : nullptr, y.data(), mean.data(), rstd.data(), n, d);
        VD R;
        const VD bd = to_d(b);
        layernorm_ref(to_d(x), to_d(w), bp ? &bd : nullptr, R, n, d);
        const std::string tag = fmt("n=%d d=%d bias=%d offset=%g", n, d, with_bias, offset);
        // With a mean of 1000 the float input itself only carries ~6e-5 absolute precision; the
        // reference sees the same float inputs, so the kernel must still agree closely.
        expect_le(rel_err(y, R), offset == 0 ? 2e-6 : 2e-4, "layernorm_forward " + tag);

        // Backward against finite differences of the float64 reference, L = sum(y * g).
        const VF g = randv(x.size(), 23);
        const VD gd = to_d(g);
        VF dx = randv(x.size(), 24), dw = randv(d, 25), db = randv(d, 26);
        const VF dx0 = dx, dw0 = dw, db0 = db;
        layernorm_backward(x.data(), w.data(), mean.data(), rstd.data(), g.data(), dx.data(), dw.data(),
                           bp ? db.data() : nullptr, n, d);
        if (offset != 0) continue;  // finite differences need a well-conditioned input
        const VD xd = to_d(x), wd = to_d(w);
        auto loss_x = [&](const VD& xv) {
          VD yy;
          layernorm_ref(xv, wd, bp ? &bd : nullptr, yy, n, d);
          return dot(yy, gd);
        };
        auto loss_w = [&](const VD& wv) {
          VD yy;
          layernorm_ref(xd, wv, bp ? &bd : nullptr, yy, n, d);
          return dot(yy, gd);
        };
        auto loss_b = [&](const VD& bv) {
          VD yy;
          layernorm_ref(xd, wd, &bv, yy, n, d);
          return dot(yy, gd);
        };
        const auto ix = all_or_sample(x.size(), 300, 27);
        VD fx = fd_grad(loss_x, xd, ix, 1e-5);
        for (size_t t = 0; t < ix.size(); ++t) fx[t] += dx0[ix[t]];
        expect_le(sampled_err(dx, ix, fx), 1e-4, "layernorm_backward dx (accumulated) " + tag);
        const auto iw = all_or_sample(d, 300, 28);
        VD fw = fd_grad(loss_w, wd, iw, 1e-5);
        for (size_t t = 0; t < iw.size(); ++t) fw[t] += dw0[iw[t]];
        expect_le(sampled_err(dw, iw, fw), 1e-4, "layernorm_backward dw (accumulated) " + tag);
        if (bp) {
          VD fb = fd_grad(loss_b, bd, iw, 1e-5);
          for (size_t t = 0; t < iw.size(); ++t) fb[t] += db0[iw[t]];
          expect_le(sampled_err(db, iw, fb), 1e-4, "layernorm_backward db (accumulated) " + tag);
        }
      }
    }
  }
}

static void check_attention() {
  struct Case {
    int B, n, d, H;
  };
  const Case cases[] = {{1, 1, 8, 1},  {2, 2, 12, 4},  {1, 17, 12, 4}, {2, 17, 64, 4},   {3, 32, 24, 3},
                        {1, 64, 96, 6}, {2, 129, 12, 2}, {1, 200, 32, 4}, {1, 130, 8, 1},
                        // several query-row blocks of 64, including a partial last one
                        {1, 300, 8, 2},  {2, 257, 12, 3}};
  for (const Case& c : cases)
    for (float p : {0.0f, 0.3f}) {
      const uint64_t seed = 1234, stream = 77;
      const size_t nq = static_cast<size_t>(c.B) * c.n * 3 * c.d;
      const VF qkv = randv(nq, 30 + c.n, -1.5f, 1.5f);
      VF probs(static_cast<size_t>(c.B) * c.H * c.n * c.n, std::numeric_limits<float>::quiet_NaN());
      VF out(static_cast<size_t>(c.B) * c.n * c.d, std::numeric_limits<float>::quiet_NaN());
      attention_forward(qkv.data(), probs.data(), out.data(), c.B, c.n, c.d, c.H, p, seed, stream);
      VD Rp, Ro;
      const VD qd = to_d(qkv);
      attention_ref(qd, Rp, Ro, c.B, c.n, c.d, c.H, p, seed, stream);
      const std::string tag = fmt("B=%d n=%d d=%d H=%d p=%g", c.B, c.n, c.d, c.H, p);
      expect_le(rel_err(probs, Rp), 2e-6, "attention_forward probs (upper triangle 0) " + tag);
      expect_le(rel_err(out, Ro), 2e-6, "attention_forward out " + tag);

      const VF dout = randv(out.size(), 31 + c.n);
      VF dqkv(nq, std::numeric_limits<float>::quiet_NaN());  // must be written everywhere
      attention_backward(qkv.data(), probs.data(), dout.data(), dqkv.data(), c.B, c.n, c.d, c.H, p, seed, stream);
      VD Rd;
      const VD dd = to_d(dout);
      attention_bwd_ref(qd, dd, Rd, c.B, c.n, c.d, c.H, p, seed, stream);
      expect_le(rel_err(dqkv, Rd), 5e-6, "attention_backward vs float64 analytic " + tag);
      // And the analytic reference itself against finite differences of the float64 forward.
      auto loss = [&](const VD& q) {
        VD pp, oo;
        attention_ref(q, pp, oo, c.B, c.n, c.d, c.H, p, seed, stream);
        return dot(oo, dd);
      };
      const auto idx = all_or_sample(nq, c.n > 64 ? 60 : 400, 32);
      const VD fd = fd_grad(loss, qd, idx, 1e-5);
      expect_le(sampled_err(dqkv, idx, fd), 1e-4, "attention_backward vs finite differences " + tag);
    }
  // Bad shapes are errors.
  {
    bool threw = false;
    VF a(100), b(100), c(100);
    try {
      attention_forward(a.data(), b.data(), c.data(), 1, 2, 10, 3, 0.0f, 0, 0);
    } catch (const rt::Error&) {
      threw = true;
    }
    expect_true(threw, "attention_forward rejects d % H != 0");
  }
}

static void check_activations() {
  // The erf approximation, through what the kernels compute: Phi(x) = (1 + erf(x/sqrt 2)) / 2 is
  // recovered as gelu(x)/x for |x| >= 0.5 and as dgelu(x) - x phi(x) below (where dividing by x
  // would magnify the output's rounding), over [-10, 10] against std::erf in double. The figure
  // includes the rounding of the float outputs themselves (~3e-8 to 6e-8).
  const size_t n = 400001;
  VF x(n), y(n), g(n), ones(n, 1.0f);
  for (size_t i = 0; i < n; ++i) x[i] = static_cast<float>(-10.0 + 20.0 * i / (n - 1));
  gelu_forward(x.data(), y.data(), n);
  gelu_backward(x.data(), ones.data(), g.data(), n);
  double phi_err = 0, gelu_err = 0, grad_err = 0;
  for (size_t i = 0; i < n; ++i) {
    const double xd = x[i];
    const double phi_ref = 0.5 * (1.0 + std::erf(xd / std::sqrt(2.0)));
    const double phi_got = std::fabs(xd) >= 0.5 ? y[i] / xd : g[i] - xd * std::exp(-0.5 * xd * xd) / std::sqrt(2.0 * M_PI);
    phi_err = std::max(phi_err, std::fabs(phi_got - phi_ref));
    gelu_err = std::max(gelu_err, std::fabs(y[i] - gelu_ref(xd)) / std::max(1.0, std::fabs(xd)));
    grad_err = std::max(grad_err, std::fabs(g[i] - gelu_grad_ref(xd)) / std::max(1.0, std::fabs(xd)));
  }
  std::printf("gelu: max |Phi error| %.3g (= erf error %.3g), max gelu error %.3g, max dgelu error %.3g "
              "(the last two relative to max(1,|x|))\n",
              phi_err, 2 * phi_err, gelu_err, grad_err);
  expect_le(phi_err, 1.5e-7, "erf approximation (as Phi) vs std::erf on [-10, 10]");
  expect_le(gelu_err, 2.5e-7, "gelu_forward vs float64");
  expect_le(grad_err, 3e-7, "gelu_backward vs float64");
  {
    // gelu_forward takes a shortcut for eight values all in (-1, 1); each value must get the bits it gets
    // beside a value outside, where the full evaluation runs (x[0] goes to the last lane of a block whose
    // other lanes are 2.5).
    VF xs = randv(4096, 43, -0.999f, 0.999f), ys(xs.size()), one(8), out(8);
    gelu_forward(xs.data(), ys.data(), xs.size());
    bool same = true;
    for (size_t i = 0; i < xs.size(); ++i) {
      std::fill(one.begin(), one.end(), 2.5f);
      one[7] = xs[i];
      gelu_forward(one.data(), out.data(), 8);
      same &= std::memcmp(&out[7], &ys[i], sizeof(float)) == 0;
    }
    expect_true(same, "gelu_forward: the bits of a value in (-1, 1) do not depend on its neighbours");
  }
  // Odd lengths (vector tails), aliasing dx == dy, and extreme inputs.
  for (size_t len : {1ul, 7ul, 9ul, 100003ul}) {
    VF xs = randv(len, 40 + len, -6, 6), gs = randv(len, 41), ys(len), ds = gs;
    gelu_forward(xs.data(), ys.data(), len);
    gelu_backward(xs.data(), ds.data(), ds.data(), len);  // in place
    double e1 = 0, e2 = 0;
    for (size_t i = 0; i < len; ++i) {
      e1 = std::max(e1, std::fabs(ys[i] - gelu_ref(xs[i])));
      e2 = std::max(e2, std::fabs(ds[i] - gs[i] * gelu_grad_ref(xs[i])));
    }
    expect_le(e1, 1e-6, fmt("gelu_forward len=%zu", len));
    expect_le(e2, 1e-6, fmt("gelu_backward in place len=%zu", len));
    VF r(len), rd = gs;
    relu_forward(xs.data(), r.data(), len);
    relu_backward(xs.data(), rd.data(), rd.data(), len);
    bool ok = true;
    for (size_t i = 0; i < len; ++i)
      ok &= r[i] == (xs[i] > 0 ? xs[i] : 0.0f) && rd[i] == (xs[i] > 0 ? gs[i] : 0.0f);
    expect_true(ok, fmt("relu forward/backward len=%zu", len));
  }
  {
    VF xs = {-1e30f, -100.0f, -20.0f, 0.0f, -0.0f, 20.0f, 1e30f, -5.0f, 3.0f};
    VF ys(xs.size()), gs(xs.size(), 1.0f);
    gelu_forward(xs.data(), ys.data(), xs.size());
    gelu_backward(xs.data(), gs.data(), gs.data(), xs.size());
    bool ok = true;
    for (size_t i = 0; i < xs.size(); ++i) {
      ok &= std::isfinite(ys[i]) && std::isfinite(gs[i]);
      ok &= std::fabs(ys[i] - gelu_ref(xs[i])) <= 1e-6 * std::max(1.0, std::fabs(static_cast<double>(xs[i])));
      ok &= std::fabs(gs[i] - gelu_grad_ref(xs[i])) <= 1e-6;
    }
    expect_true(ok, "gelu at extreme inputs (+-1e30, +-20, -100, +-0)");
    VF r = {0.0f, -0.0f, 1.0f};
    VF gr = {5, 5, 5};
    relu_backward(r.data(), gr.data(), gr.data(), 3);
    expect_true(gr == VF({0, 0, 5}), "relu gradient is 0 at x = 0");
  }
}

static void check_dropout() {
  const size_t n = 200003;
  const VF x = randv(n, 50);
  for (float p : {0.0f, 0.1f, 0.5f, 0.9f}) {
    VF y(n), dx(n);
    dropout_forward(x.data(), y.data(), n, p, 7, 3);
    const VF g = randv(n, 51);
    dropout_backward(g.data(), dx.data(), n, p, 7, 3);
    const uint64_t key = rt::rng_key(7, 3);
    size_t kept = 0;
    bool ok = true;
    for (size_t i = 0; i < n; ++i) {
      const double m = keep_mult(p, key, i);
      kept += m != 0;
      // 1/(1-p) is rounded to float before the product: two roundings.
      ok &= std::fabs(y[i] - x[i] * m) <= 2.5e-7 * std::fabs(x[i] * m);
      ok &= std::fabs(dx[i] - g[i] * m) <= 2.5e-7 * std::fabs(g[i] * m);
    }
    expect_true(ok, fmt("dropout forward/backward mask and scale p=%g", p));
    const double frac = static_cast<double>(kept) / n;
    expect_le(std::fabs(frac - (1 - p)), 0.005, fmt("dropout keep fraction p=%g", p));
    VF z = x;
    dropout_forward(z.data(), z.data(), n, p, 7, 3);
    expect_true(same_bits(z, y), fmt("dropout in place p=%g", p));
  }
  for (float bad : {1.0f, -0.1f, std::numeric_limits<float>::quiet_NaN()}) {
    bool threw = false;
    VF a(4), b(4);
    try {
      dropout_forward(a.data(), b.data(), 4, bad, 0, 0);
    } catch (const rt::Error&) {
      threw = true;
    }
    expect_true(threw, fmt("dropout rejects p=%g", bad));
  }
}

// ------------------------------------------------------------------------------------------------
// Digest: every kernel on fixed inputs big enough to be split across threads.

static uint64_t fnv(uint64_t h, const VF& v) {
  const unsigned char* p = reinterpret_cast<const unsigned char*>(v.data());
  for (size_t i = 0; i < v.size() * sizeof(float); ++i) h = (h ^ p[i]) * 0x100000001b3ULL;
  return h;
}

// One hash per kernel family, "name=hash" separated by spaces, so a mismatch names its kernel.
static std::string digest() {
  std::string res;
  uint64_t h = 0xcbf29ce484222325ULL;
  auto part = [&](const char* name) {
    res += fmt("%s%s=%016llx", res.empty() ? "" : " ", name, static_cast<unsigned long long>(h));
    h = 0xcbf29ce484222325ULL;
  };
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb) {
      const int M = 301, N = 257, K = 190;
      const VF A = randv(static_cast<size_t>(M) * K, 60), B = randv(static_cast<size_t>(K) * N, 61);
      VF C = randv(static_cast<size_t>(M) * N, 62);
      gemm(ta, tb, M, N, K, 0.5f, A.data(), ta ? M : K, B.data(), tb ? K : N, 1.0f, C.data(), N);
      h = fnv(h, C);
    }
  part("gemm");
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb) {
      // Few rows, many columns: the column split.
      VF C2(static_cast<size_t>(20) * 2000);
      const VF A2 = randv(20 * 64, 63), B2 = randv(64 * 2000, 64);
      gemm(ta, tb, 20, 2000, 64, 1.0f, A2.data(), ta ? 20 : 64, B2.data(), tb ? 64 : 2000, 0.0f, C2.data(), 2000);
      h = fnv(h, C2);
    }
  part("gemm_column_split");
  {
    const int n = 512, in = 384, out = 1152;
    const VF x = randv(static_cast<size_t>(n) * in, 65), W = randv(static_cast<size_t>(out) * in, 66),
             b = randv(out, 67), dy = randv(static_cast<size_t>(n) * out, 68);
    VF y(static_cast<size_t>(n) * out), dx(static_cast<size_t>(n) * in), dW(W.size(), 0.0f), db(out, 0.0f);
    linear_forward(x.data(), W.data(), b.data(), y.data(), n, in, out);
    linear_backward(x.data(), W.data(), dy.data(), dx.data(), dW.data(), db.data(), n, in, out);
    h = fnv(fnv(fnv(fnv(h, y), dx), dW), db);
  }
  part("linear");
  {
    const int n = 1000, d = 384;
    const VF x = randv(static_cast<size_t>(n) * d, 70), w = randv(d, 71), b = randv(d, 72),
             dy = randv(x.size(), 73);
    VF y(x.size()), mean(n), rstd(n), dx(x.size(), 0.0f), dw(d, 0.0f), db(d, 0.0f);
    layernorm_forward(x.data(), w.data(), b.data(), y.data(), mean.data(), rstd.data(), n, d);
    layernorm_backward(x.data(), w.data(), mean.data(), rstd.data(), dy.data(), dx.data(), dw.data(), db.data(),
                       n, d);
    h = fnv(fnv(fnv(fnv(fnv(fnv(h, y), mean), rstd), dx), dw), db);
  }
  part("layernorm");
  typedef std::tuple<int, int, int, int> T4;
  for (auto [B, n, d, H] : {T4{16, 32, 96, 4}, T4{2, 300, 64, 2}, T4{1, 300, 32, 1}}) {
    const VF qkv = randv(static_cast<size_t>(B) * n * 3 * d, 80);
    const VF dout = randv(static_cast<size_t>(B) * n * d, 81);
    VF probs(static_cast<size_t>(B) * H * n * n), out(static_cast<size_t>(B) * n * d), dqkv(qkv.size());
    attention_forward(qkv.data(), probs.data(), out.data(), B, n, d, H, 0.1f, 5, 6);
    attention_backward(qkv.data(), probs.data(), dout.data(), dqkv.data(), B, n, d, H, 0.1f, 5, 6);
    h = fnv(fnv(fnv(h, probs), out), dqkv);
  }
  part("attention");
  {
    const size_t n = 300001;
    const VF x = randv(n, 90, -5, 5), g = randv(n, 91);
    VF y(n), dx(n);
    gelu_forward(x.data(), y.data(), n);
    gelu_backward(x.data(), g.data(), dx.data(), n);
    h = fnv(fnv(h, y), dx);
    part("gelu");
    relu_forward(x.data(), y.data(), n);
    relu_backward(x.data(), g.data(), dx.data(), n);
    h = fnv(fnv(h, y), dx);
    part("relu");
    dropout_forward(x.data(), y.data(), n, 0.2f, 9, 10);
    dropout_backward(g.data(), dx.data(), n, 0.2f, 9, 10);
    h = fnv(fnv(h, y), dx);
    part("dropout");
  }
  return res;
}

// ------------------------------------------------------------------------------------------------
// Timing.

template <class F>
static double best_seconds(F f, double min_total = 0.3, int min_reps = 5) {
  f();  // warm-up: packing buffers, pool threads, page faults
  double best = 1e30, total = 0;
  for (int r = 0; r < min_reps || total < min_total; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::min(best, t);
    total += t;
    if (r > 200) break;
  }
  return best;
}

static std::string bench_json() {
  std::string s = fmt("{\"backend\":\"%s\",\"threads\":%d", gemm_backend(), rt::num_threads());
  struct G {
    const char* name;
    bool ta, tb;
    int M, N, K;
  };
  const G gs[] = {{"NN_512x1152x384", false, false, 512, 1152, 384},
                  {"NT_512x384x1152", false, true, 512, 384, 1152},
                  {"TN_1152x384x512", true, false, 1152, 384, 512}};
  for (const G& g : gs) {
    const VF A = randv(static_cast<size_t>(g.M) * g.K, 1), B = randv(static_cast<size_t>(g.K) * g.N, 2);
    VF C(static_cast<size_t>(g.M) * g.N);
    const double t = best_seconds([&] {
      gemm(g.ta, g.tb, g.M, g.N, g.K, 1.0f, A.data(), g.ta ? g.M : g.K, B.data(), g.tb ? g.K : g.N, 0.0f, C.data(),
           g.N);
    });
    s += fmt(",\"gemm_%s_gflops\":%.1f", g.name, 2.0 * g.M * g.N * g.K / t * 1e-9);
  }
  {
    // The char config's attention: B=16, window pair n=32, d=384, 6 heads.
    const int B = 16, n = 32, d = 384, H = 6;
    const VF qkv = randv(static_cast<size_t>(B) * n * 3 * d, 3), dout = randv(static_cast<size_t>(B) * n * d, 4);
    VF probs(static_cast<size_t>(B) * H * n * n), out(static_cast<size_t>(B) * n * d), dq(qkv.size());
    const double tf = best_seconds([&] { attention_forward(qkv.data(), probs.data(), out.data(), B, n, d, H, 0.1f, 1, 2); });
    const double tb = best_seconds([&] {
      attention_backward(qkv.data(), probs.data(), dout.data(), dq.data(), B, n, d, H, 0.1f, 1, 2);
    });
    s += fmt(",\"attn_B16_n32_d384_H6_fwd_us\":%.1f,\"attn_B16_n32_d384_H6_bwd_us\":%.1f", tf * 1e6, tb * 1e6);
  }
  {
    // w = 0 plain transformer: B=1, n=2048, d=96, 4 heads, no dropout.
    const int B = 1, n = 2048, d = 96, H = 4;
    const VF qkv = randv(static_cast<size_t>(B) * n * 3 * d, 5), dout = randv(static_cast<size_t>(B) * n * d, 6);
    VF probs(static_cast<size_t>(B) * H * n * n), out(static_cast<size_t>(B) * n * d), dq(qkv.size());
    const double tf = best_seconds([&] { attention_forward(qkv.data(), probs.data(), out.data(), B, n, d, H, 0.0f, 1, 2); }, 0.3, 3);
    const double tb = best_seconds([&] {
      attention_backward(qkv.data(), probs.data(), dout.data(), dq.data(), B, n, d, H, 0.0f, 1, 2);
    }, 0.3, 3);
    const double fl = 2.0 * B * H * (static_cast<double>(n) * n / 2) * (d / H) * 2;  // QK^T and PV, causal half
    s += fmt(",\"attn_B1_n2048_d96_H4_fwd_ms\":%.2f,\"attn_B1_n2048_d96_H4_fwd_gflops\":%.1f,"
             "\"attn_B1_n2048_d96_H4_bwd_ms\":%.2f",
             tf * 1e3, fl / tf * 1e-9, tb * 1e3);
  }
  {
    const int n = 512, d = 384;
    const VF x = randv(static_cast<size_t>(n) * d, 7), w = randv(d, 8), b = randv(d, 9), dy = randv(x.size(), 10);
    VF y(x.size()), mean(n), rstd(n), dx(x.size()), dw(d), db(d);
    const double tf = best_seconds([&] {
      layernorm_forward(x.data(), w.data(), b.data(), y.data(), mean.data(), rstd.data(), n, d);
    });
    const double tb = best_seconds([&] {
      layernorm_backward(x.data(), w.data(), mean.data(), rstd.data(), dy.data(), dx.data(), dw.data(), db.data(), n, d);
    });
    s += fmt(",\"layernorm_512x384_fwd_us\":%.1f,\"layernorm_512x384_bwd_us\":%.1f", tf * 1e6, tb * 1e6);
  }
  {
    const size_t n = 512 * 1536;
    const VF x = randv(n, 11, -4, 4), g = randv(n, 12);
    VF y(n), dx(n);
    const double tf = best_seconds([&] { gelu_forward(x.data(), y.data(), n); });
    const double tb = best_seconds([&] { gelu_backward(x.data(), g.data(), dx.data(), n); });
    const double td = best_seconds([&] { dropout_forward(x.data(), y.data(), n, 0.1f, 1, 2); });
    s += fmt(",\"gelu_fwd_ns_per_elem\":%.3f,\"gelu_bwd_ns_per_elem\":%.3f,\"dropout_ns_per_elem\":%.3f",
             tf / n * 1e9, tb / n * 1e9, td / n * 1e9);
  }
  {
    // Cost of one parallel_for beyond its work: one chunk of ~5 us per thread, back to back, as a
    // window step issues its kernels.
    auto spin = [](double us) {
      const auto t0 = std::chrono::steady_clock::now();
      while (std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() < us) {
      }
    };
    const int reps = 2000;
    const size_t nt = static_cast<size_t>(rt::num_threads());
    const double t = best_seconds([&] {
      for (int r = 0; r < reps; ++r) rt::parallel_for(nt, 1, [&](size_t, size_t) { spin(5.0); });
    }, 0.2, 3);
    s += fmt(",\"parallel_for_overhead_us\":%.2f", t / reps * 1e6 - 5.0);
  }
  return s + "}";
}

// ------------------------------------------------------------------------------------------------

static std::string self_path() {
  char buf[4096];
  const ssize_t len = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (len <= 0) return "";
  buf[len] = 0;
  return buf;
}

static std::string run_child(const std::string& args, int threads) {
  const std::string cmd = "RT_NUM_THREADS=" + std::to_string(threads) + " '" + self_path() + "' " + args;
  FILE* f = popen(cmd.c_str(), "r");
  if (!f) return "";
  std::string out;
  char buf[4096];
  while (std::fgets(buf, sizeof buf, f)) out += buf;
  pclose(f);
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  return out;
}

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "--digest") {
    std::printf("%s\n", digest().c_str());
    return 0;
  }
  if (mode == "--bench") {
    std::printf("%s\n", bench_json().c_str());
    return 0;
  }

  std::printf("kernels_check: gemm backend %s, %d threads\n", gemm_backend(), rt::num_threads());
  check_thread_pool();
  check_gemm();
  check_linear();
  check_layernorm();
  check_attention();
  check_activations();
  check_dropout();

  // Determinism in one process, and across thread counts.
  const std::string d1 = digest(), d2 = digest();
  expect_true(d1 == d2, "two runs give identical bits");
  const std::string t1 = run_child("--digest", 1), t2 = run_child("--digest", 2), t3 = run_child("--digest", 3);
  std::printf("digest, 1 thread:  %s\ndigest, 2 threads: %s\ndigest, 3 threads: %s\n", t1.c_str(), t2.c_str(),
              t3.c_str());
  expect_true(!t1.empty(), "digest child process ran");
  // Compare kernel by kernel. OpenBLAS may round column-split edges differently (matmul.cc), so that
  // one entry is informational for the OpenBLAS build.
  auto field = [](const std::string& all, const std::string& name) {
    const size_t at = all.find(name + "=");
    return at == std::string::npos ? std::string() : all.substr(at, all.find(' ', at) - at);
  };
  for (const char* name : {"gemm", "gemm_column_split", "linear", "layernorm", "attention", "gelu", "relu", "dropout"}) {
    const std::string a = field(t1, name), b = field(t2, name), c = field(t3, name);
    const bool same = !a.empty() && a == b && b == c;
    if (!same && std::string(name) == "gemm_column_split" && std::string(gemm_backend()) == "openblas") {
      std::printf("info: %s differs across thread counts with OpenBLAS (expected, see matmul.cc)\n", name);
      continue;
    }
    expect_true(same, fmt("%s: identical bits with RT_NUM_THREADS = 1, 2, 3", name));
  }

  std::printf("%d passed, %d failed\n", g_passed, g_failed);
  if (argc > 1 && mode == "--no-bench") return g_failed ? 1 : 0;
  const std::string b1 = run_child("--bench", 1), b2 = run_child("--bench", 2);
  std::printf("%s\n%s\n", b1.c_str(), b2.c_str());
  return g_failed ? 1 : 0;
}
