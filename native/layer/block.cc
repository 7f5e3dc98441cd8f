#include "layer/block.h"

#include <cstddef>

namespace rt {

void BlockCache::allocate(Backend& be, const BlockShape& s, int B_, int cap) {
  B = B_;
  capacity = cap;
  size_t R = static_cast<size_t>(B_) * cap, d = s.d;
  x = DeviceBuffer(be, R * d);
  h1 = DeviceBuffer(be, R * d);
  mean1 = DeviceBuffer(be, R);
  rstd1 = DeviceBuffer(be, R);
  qkv = DeviceBuffer(be, R * 3 * d);
  probs = DeviceBuffer(be, static_cast<size_t>(B_) * s.heads * cap * cap);
  att = DeviceBuffer(be, R * d);
  x2 = DeviceBuffer(be, R * d);
  h2 = DeviceBuffer(be, R * d);
  mean2 = DeviceBuffer(be, R);
  rstd2 = DeviceBuffer(be, R);
  f = DeviceBuffer(be, R * 4 * d);
  g = DeviceBuffer(be, R * 4 * d);
}

void BlockScratch::allocate(Backend& be, const BlockShape& s, int B_, int cap) {
  B = B_;
  capacity = cap;
  size_t R = static_cast<size_t>(B_) * cap, d = s.d;
  dm = DeviceBuffer(be, R * d);
  dg = DeviceBuffer(be, R * 4 * d);
  dh = DeviceBuffer(be, R * d);
  dx2 = DeviceBuffer(be, R * d);
  da = DeviceBuffer(be, R * d);
  datt = DeviceBuffer(be, R * d);
  dqkv = DeviceBuffer(be, R * 3 * d);
}

void block_forward(Backend& be, const BlockShape& s, const BlockWeights& w, BlockCache& c, float* y, float p,
                   uint64_t seed, uint64_t stream) {
  const int d = s.d, R = c.B * c.n;
  const size_t Rd = static_cast<size_t>(R) * d;
  c.p = p;
  c.seed = seed;
  c.stream = stream;

  // Attention branch: x2 = x + dropout(c_proj(attn(ln_1(x)))).
  be.layernorm_forward(c.x.get(), w.ln1_w, w.ln1_b, c.h1.get(), c.mean1.get(), c.rstd1.get(), R, d);
  be.linear_forward(c.h1.get(), w.attn_w, w.attn_b, c.qkv.get(), R, d, 3 * d);
  be.attention_forward(c.qkv.get(), c.probs.get(), c.att.get(), c.B, c.n, d, s.heads, p, seed, stream * 4 + 0);
  be.linear_forward(c.att.get(), w.attn_proj_w, w.attn_proj_b, c.x2.get(), R, d, d);
  if (p > 0) be.dropout_forward(c.x2.get(), c.x2.get(), Rd, p, seed, stream * 4 + 1);
  be.axpy2d(c.x2.get(), 0, 1.0f, c.x2.get(), 0, c.x.get(), 0, 1, Rd);

  // MLP branch: y = x2 + dropout(c_proj(act(c_fc(ln_2(x2))))).
  be.layernorm_forward(c.x2.get(), w.ln2_w, w.ln2_b, c.h2.get(), c.mean2.get(), c.rstd2.get(), R, d);
  be.linear_forward(c.h2.get(), w.fc_w, w.fc_b, c.f.get(), R, d, 4 * d);
  be.activation_forward(s.gelu, c.f.get(), c.g.get(), Rd * 4);
  be.linear_forward(c.g.get(), w.mlp_proj_w, w.mlp_proj_b, y, R, 4 * d, d);
  if (p > 0) be.dropout_forward(y, y, Rd, p, seed, stream * 4 + 2);
  be.axpy2d(y, 0, 1.0f, y, 0, c.x2.get(), 0, 1, Rd);
}

void block_backward(Backend& be, const BlockShape& s, const BlockWeights& w, const BlockGrads& g,
                    const BlockCache& c, BlockScratch& k, const float* dy, float* dx) {
  const int d = s.d, R = c.B * c.n;
  const size_t Rd = static_cast<size_t>(R) * d;
  const float p = c.p;

  // MLP branch.
  const float* dm = dy;
  if (p > 0) {
    be.dropout_backward(dy, k.dm.get(), Rd, p, c.seed, c.stream * 4 + 2);
    dm = k.dm.get();
  }
  be.linear_backward(c.g.get(), w.mlp_proj_w, dm, k.dg.get(), g.mlp_proj_w, g.mlp_proj_b, R, 4 * d, d);
  be.activation_backward(s.gelu, c.f.get(), k.dg.get(), k.dg.get(), Rd * 4);
  be.linear_backward(c.h2.get(), w.fc_w, k.dg.get(), k.dh.get(), g.fc_w, g.fc_b, R, d, 4 * d);
  be.copy(k.dx2.get(), dy, Rd);
  be.layernorm_backward(c.x2.get(), w.ln2_w, c.mean2.get(), c.rstd2.get(), k.dh.get(), k.dx2.get(), g.ln2_w,
                        g.ln2_b, R, d);

  // Attention branch.
  const float* da = k.dx2.get();
  if (p > 0) {
    be.dropout_backward(k.dx2.get(), k.da.get(), Rd, p, c.seed, c.stream * 4 + 1);
    da = k.da.get();
  }
  be.linear_backward(c.att.get(), w.attn_proj_w, da, k.datt.get(), g.attn_proj_w, g.attn_proj_b, R, d, d);
  be.attention_backward(c.qkv.get(), c.probs.get(), k.datt.get(), k.dqkv.get(), c.B, c.n, d, s.heads, p, c.seed,
                        c.stream * 4 + 0);
  be.linear_backward(c.h1.get(), w.attn_w, k.dqkv.get(), k.dh.get(), g.attn_w, g.attn_b, R, d, 3 * d);
  be.copy(dx, k.dx2.get(), Rd);
  be.layernorm_backward(c.x.get(), w.ln1_w, c.mean1.get(), c.rstd1.get(), k.dh.get(), dx, g.ln1_w, g.ln1_b, R, d);
}

void ChunkScratch::ensure(Backend& be, const BlockShape& s, int tokens) {
  if (tokens <= capacity) return;
  capacity = tokens;
  const size_t R = tokens, d = s.d;
  h = DeviceBuffer(be, R * d);
  mean = DeviceBuffer(be, R);
  rstd = DeviceBuffer(be, R);
  qkv = DeviceBuffer(be, R * 3 * d);
  att = DeviceBuffer(be, R * d);
  x2 = DeviceBuffer(be, R * d);
  f = DeviceBuffer(be, R * 4 * d);
}

void block_chunk(Backend& be, const BlockShape& s, const BlockWeights& w, float* kv, int cap, int B, int t0, int c,
                 const float* x, float* y, ChunkScratch& k) {
  const int d = s.d, R = B * c;
  const size_t Rd = static_cast<size_t>(R) * d;
  k.ensure(be, s, R);
  be.layernorm_forward(x, w.ln1_w, w.ln1_b, k.h.get(), k.mean.get(), k.rstd.get(), R, d);
  be.linear_forward(k.h.get(), w.attn_w, w.attn_b, k.qkv.get(), R, d, 3 * d);
  const size_t row = 3 * static_cast<size_t>(d);
  be.axpy2d(kv + t0 * row, cap * row, 1.0f, k.qkv.get(), c * row, nullptr, 0, B, c * row);
  be.attention_cached(kv, cap, B, t0, c, d, s.heads, k.att.get());
  be.linear_forward(k.att.get(), w.attn_proj_w, w.attn_proj_b, k.x2.get(), R, d, d);
  be.axpy2d(k.x2.get(), 0, 1.0f, k.x2.get(), 0, x, 0, 1, Rd);
  be.layernorm_forward(k.x2.get(), w.ln2_w, w.ln2_b, k.h.get(), k.mean.get(), k.rstd.get(), R, d);
  be.linear_forward(k.h.get(), w.fc_w, w.fc_b, k.f.get(), R, d, 4 * d);
  be.activation_forward(s.gelu, k.f.get(), k.f.get(), Rd * 4);
  be.linear_forward(k.f.get(), w.mlp_proj_w, w.mlp_proj_b, y, R, 4 * d, d);
  be.axpy2d(y, 0, 1.0f, y, 0, k.x2.get(), 0, 1, Rd);
}

void block_rows(Backend& be, const BlockShape& s, const BlockWeights& w, float* kv, int cap, const int* slot,
                const int* t, int S, const float* x, float* y, ChunkScratch& k) {
  const int d = s.d;
  const size_t Sd = static_cast<size_t>(S) * d, row = 3 * static_cast<size_t>(d);
  k.ensure(be, s, S);
  be.layernorm_forward(x, w.ln1_w, w.ln1_b, k.h.get(), k.mean.get(), k.rstd.get(), S, d);
  be.linear_forward(k.h.get(), w.attn_w, w.attn_b, k.qkv.get(), S, d, 3 * d);
  for (int r = 0; r < S; ++r)
    be.copy(kv + (static_cast<size_t>(slot[r]) * cap + t[r]) * row, k.qkv.get() + r * row, row);
  be.attention_cached_rows(kv, cap, slot, t, S, d, s.heads, k.att.get());
  be.linear_forward(k.att.get(), w.attn_proj_w, w.attn_proj_b, k.x2.get(), S, d, d);
  be.axpy2d(k.x2.get(), 0, 1.0f, k.x2.get(), 0, x, 0, 1, Sd);
  be.layernorm_forward(k.x2.get(), w.ln2_w, w.ln2_b, k.h.get(), k.mean.get(), k.rstd.get(), S, d);
  be.linear_forward(k.h.get(), w.fc_w, w.fc_b, k.f.get(), S, d, 4 * d);
  be.activation_forward(s.gelu, k.f.get(), k.f.get(), Sd * 4);
  be.linear_forward(k.f.get(), w.mlp_proj_w, w.mlp_proj_b, y, S, 4 * d, d);
  be.axpy2d(y, 0, 1.0f, y, 0, k.x2.get(), 0, 1, Sd);
}

}  // namespace rt
