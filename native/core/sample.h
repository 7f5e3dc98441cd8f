// Token sampling over rows of next-token logits (host memory): temperature, top-k, top-p (nucleus) and
// greedy, the same computation as src/generate.ts's sampleToken, step for step in double precision, so
// that a server step can sample all of its rows where it computed them instead of handing the logits to
// JavaScript. The caller draws each row's uniform number from that sequence's own RNG (one draw per
// sampled token, none when greedy), which keeps a sequence's tokens a function of its seed alone.
//
// The one difference from sampleToken is the exponential and logarithm: libm's here, V8's there. Both are
// within an ulp of the true value, so a sampled token could differ only when the uniform draw falls within
// ~1e-16 of the edge between two tokens' intervals; logprobs agree to ~1e-15.
#pragma once
#include <cstdint>
#include <vector>

namespace rt {

struct SampleParams {
  // < 0: the row is not sampled (its token is -1); 0: greedy (the first largest logit; u unused).
  double temperature = 1;
  // 0 or >= V: every token.
  int top_k = 0;
  // The smallest set of most likely tokens whose probability reaches top_p, in (0, 1]; 1: every token.
  double top_p = 1;
  // The row's uniform draw in [0, 1).
  double u = 0;
};

struct Sampled {
  int32_t token = -1;
  // Natural log of the token's probability under the (temperature-scaled, truncated) distribution; 0 when
  // greedy.
  double logprob = 0;
};

// Row r of logits [rows, V] with params[r]. `scratch` is reused between calls (no allocation once grown).
Sampled sample_row(const float* logits, int V, const SampleParams& p, std::vector<double>& scratch,
                   std::vector<int>& order);

// Every row; rows with a negative temperature come back as {-1, 0}.
void sample_rows(const float* logits, int rows, int V, const SampleParams* params, Sampled* out);

}  // namespace rt
