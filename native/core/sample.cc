#include "core/sample.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace rt {
namespace {

// JavaScript's Math.max(a, b): NaN if either is NaN.
inline double js_max(double a, double b) {
  if (std::isnan(a) || std::isnan(b)) return std::numeric_limits<double>::quiet_NaN();
  return a > b ? a : b;
}

// A sort key that orders NaN with -infinity: std::stable_sort needs a strict weak order, and a NaN logit
// or probability must not make it read out of bounds. (sampleToken's comparator puts NaN anywhere; such a
// row samples garbage either way.)
inline double key(double v) { return std::isnan(v) ? -std::numeric_limits<double>::infinity() : v; }

}  // namespace

Sampled sample_row(const float* l, int V, const SampleParams& p, std::vector<double>& e, std::vector<int>& idx) {
  Sampled s;
  const double T = p.temperature;
  if (T < 0) return s;
  if (T == 0) {
    int best = 0;
    for (int i = 1; i < V; ++i)
      if (l[i] > l[best]) best = i;
    s.token = best;
    return s;
  }
  if ((p.top_k == 0 || p.top_k >= V) && p.top_p >= 1) {
    // Plain sampling: sampleToken evaluates exp(l/T - mx) twice per token (once for the total, once while
    // walking to the draw); the same values are kept here and walked.
    e.resize(V);
    double mx = -std::numeric_limits<double>::infinity();
    for (int i = 0; i < V; ++i) mx = js_max(mx, l[i] / T);
    double total = 0;
    for (int i = 0; i < V; ++i) total += (e[i] = std::exp(l[i] / T - mx));
    double u = p.u * total;
    int pick = V - 1;
    for (int i = 0; i < V; ++i) {
      u -= e[i];
      if (u < 0) {
        pick = i;
        break;
      }
    }
    s.token = pick;
    s.logprob = l[pick] / T - mx - std::log(total);
    return s;
  }
  // Top-k and/or top-p: the candidates' indices in idx, their probabilities in e.
  idx.resize(V);
  for (int i = 0; i < V; ++i) idx[i] = i;
  int n = V;
  if (p.top_k > 0 && p.top_k < V) {
    // Stable, like Array.prototype.sort: equal logits keep index order.
    std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) { return key(l[a]) > key(l[b]); });
    n = p.top_k;
  }
  double mx = -std::numeric_limits<double>::infinity();
  for (int k = 0; k < n; ++k) mx = js_max(mx, l[idx[k]] / T);
  e.resize(2 * static_cast<size_t>(n));
  double sum = 0;
  for (int k = 0; k < n; ++k) sum += (e[k] = std::exp(l[idx[k]] / T - mx));
  for (int k = 0; k < n; ++k) e[k] /= sum;
  if (p.top_p < 1) {
    // The most likely first (stable), kept until their probability reaches top_p.
    std::vector<int> order(n);
    for (int k = 0; k < n; ++k) order[k] = k;
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return key(e[a]) > key(e[b]); });
    double acc = 0;
    int kept = 0;
    double* q = e.data() + n;
    std::vector<int> chosen;
    chosen.reserve(n);
    for (int k : order) {
      chosen.push_back(idx[k]);
      q[kept++] = e[k];
      acc += e[k];
      if (acc >= p.top_p) break;
    }
    sum = 0;
    for (int k = 0; k < kept; ++k) sum += q[k];
    for (int k = 0; k < kept; ++k) e[k] = q[k] / sum;
    for (int k = 0; k < kept; ++k) idx[k] = chosen[k];
    n = kept;
  }
  double u = p.u;
  for (int k = 0; k < n; ++k) {
    u -= e[k];
    if (u < 0 || k == n - 1) {
      s.token = idx[k];
      s.logprob = std::log(e[k]);
      return s;
    }
  }
  return s;  // n >= 1 always: not reached
}

void sample_rows(const float* logits, int rows, int V, const SampleParams* params, Sampled* out) {
  std::vector<double> scratch;
  std::vector<int> order;
  for (int r = 0; r < rows; ++r) out[r] = sample_row(logits + static_cast<size_t>(r) * V, V, params[r], scratch, order);
}

}  // namespace rt
