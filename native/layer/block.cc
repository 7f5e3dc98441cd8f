#include "layer/block.h"

#include <cstddef>
#include <cstdint>

namespace rt {
namespace {

// Floats that hold n elements: n floats, or n bf16 (two a float) where the buffer is half.
size_t held(bool half, size_t n) { return half ? (n + 1) / 2 : n; }

// Element `off` of a buffer of floats or, where half, of bf16 (2 bytes each), as the float pointer the
// structs carry.
float* at_elem(const DeviceBuffer& b, size_t off, bool half = false) {
  if (!b.get()) return nullptr;
  if (!half) return b.get() + off;
  return reinterpret_cast<float*>(reinterpret_cast<uint16_t*>(b.get()) + off);
}

// Runs op, the one backend operation that writes src (n floats), keeping src's bf16 copy in dst where dst is
// set (Backend::block_keeps_bf16). only: the caller's next operation is the product that reads src, and
// nothing else reads src but the weight products (through dst), so src's float32 values may go unwritten.
template <class Op>
void keeping(Backend& be, const float* src, void* dst, size_t n, Op&& op, bool only = false) {
  if (!dst) return op();
  be.keep_bf16_begin(src, dst, n, only);
  try {
    op();
  } catch (...) {
    be.keep_bf16_begin(nullptr, nullptr, 0, false);  // nothing kept
    throw;
  }
  be.keep_bf16_end();
}

}  // namespace

void BlockArena::allocate(Backend& be, const BlockShape& s, int B_, const std::vector<int>& n_, bool with_x,
                          bool for_grads) {
  B = B_;
  n = n_;
  row.resize(n.size());
  prob.resize(n.size());
  size_t r = 0, pr = 0;
  for (size_t k = 0; k < n.size(); ++k) {
    row[k] = r;
    // A window whose backward recomputes its probabilities keeps none (a forward alone writes them, as scratch).
    const bool keep_probs = !(for_grads && be.attention_recomputes_probs(s, n[k]));
    prob[k] = keep_probs ? pr : kNoProbs;
    r += static_cast<size_t>(B_) * n[k];
    if (keep_probs) pr += static_cast<size_t>(B_) * s.heads * n[k] * n[k];
  }
  rows = r;
  const size_t d = s.d;
  half = be.block_half(s);
  const bool keeps = for_grads && be.block_keeps_bf16(s);
  // Outputs whose float32 values nobody reads get no float32 buffer: view() names them by their bf16 copies.
  // Only those of LayerNorm and the activation, which always write the kept copy alone when asked; the
  // attention does so on its tensor cores only, so att keeps its float32 buffer for the other kernels.
  only = keeps && be.block_bf16_only(s);
  auto unless_only = [&](size_t floats) { return only ? DeviceBuffer() : DeviceBuffer(be, floats); };
  qkv_half = half || (keeps && be.block_qkv_half(s, n));
  x = with_x ? DeviceBuffer(be, r * d) : DeviceBuffer();
  h1 = unless_only(held(half, r * d));
  mean1 = DeviceBuffer(be, r);
  rstd1 = DeviceBuffer(be, r);
  qkv = DeviceBuffer(be, held(qkv_half, r * 3 * d));
  probs = DeviceBuffer(be, pr);
  att = DeviceBuffer(be, r * d);
  x2 = DeviceBuffer(be, r * d);
  h2 = unless_only(held(half, r * d));
  mean2 = DeviceBuffer(be, r);
  rstd2 = DeviceBuffer(be, r);
  f_half = keeps && be.block_f_half(s);
  f_dgelu = f_half && be.block_keeps_dgelu(s);
  f = be.block_keeps_f(s) ? DeviceBuffer(be, held(f_half, r * 4 * d)) : DeviceBuffer();
  g = unless_only(held(half, r * 4 * d));
  if (keeps) {
    h1_16 = DeviceBuffer(be, held(true, r * d));
    att_16 = DeviceBuffer(be, held(true, r * d));
    h2_16 = DeviceBuffer(be, held(true, r * d));
    g_16 = DeviceBuffer(be, held(true, r * 4 * d));
  }
}

BlockCache BlockArena::view(const BlockShape& s, int k) const {
  BlockCache c;
  c.B = B;
  c.n = c.capacity = n[k];
  const size_t r = row[k], d = s.d;
  c.half = half;
  c.qkv_half = qkv_half;
  c.x = at_elem(x, r * d);
  c.h1 = only ? at_elem(h1_16, r * d, true) : at_elem(h1, r * d, half);
  c.mean1 = at_elem(mean1, r);
  c.rstd1 = at_elem(rstd1, r);
  c.qkv = at_elem(qkv, r * 3 * d, qkv_half);
  c.probs = prob[k] == kNoProbs ? nullptr : at_elem(probs, prob[k]);
  c.att = at_elem(att, r * d);
  c.x2 = at_elem(x2, r * d);
  c.h2 = only ? at_elem(h2_16, r * d, true) : at_elem(h2, r * d, half);
  c.mean2 = at_elem(mean2, r);
  c.rstd2 = at_elem(rstd2, r);
  c.f = at_elem(f, r * 4 * d, f_half);
  c.f_half = f_half;
  c.f_dgelu = f_dgelu;
  c.g = only ? at_elem(g_16, r * 4 * d, true) : at_elem(g, r * 4 * d, half);
  // bf16 values of the weight products' operands: the buffers themselves where half, else the kept copies.
  c.b16.h1 = half ? c.h1 : at_elem(h1_16, r * d, true);
  c.b16.att = at_elem(att_16, r * d, true);
  c.b16.h2 = half ? c.h2 : at_elem(h2_16, r * d, true);
  c.b16.g = half ? c.g : at_elem(g_16, r * 4 * d, true);
  return c;
}

void BlockGradArena::allocate(Backend& be, const BlockShape& s, size_t rows, bool with_dm) {
  const size_t d = s.d;
  half = be.block_half(s);
  dg_half = be.block_f_half(s);  // (as BlockArena's f_half, whose arena is one for gradients)
  dm = with_dm ? DeviceBuffer(be, rows * d) : DeviceBuffer();
  dg = DeviceBuffer(be, held(half || dg_half, rows * 4 * d));
  da = DeviceBuffer(be, rows * d);
  dqkv = DeviceBuffer(be, held(half, rows * 3 * d));
  dh_half = be.block_dh_half(s);
  dh1 = DeviceBuffer(be, held(dh_half, rows * d));
  dh2 = DeviceBuffer(be, held(dh_half, rows * d));
  if (be.block_keeps_bf16(s)) {
    dqkv_16 = DeviceBuffer(be, held(true, rows * 3 * d));
    da_16 = DeviceBuffer(be, held(true, rows * d));
    dg_16 = DeviceBuffer(be, held(true, rows * 4 * d));
  }
  if (be.block_keeps_dm(s)) dm_16 = DeviceBuffer(be, held(true, rows * d));
}

BlockGradStash BlockGradArena::view(const BlockShape& s, const BlockArena& a, int k) const {
  const size_t r = a.row[k], d = s.d;
  BlockGradStash st;
  st.dm = dm.get() ? dm.get() + r * d : nullptr;
  st.half = half;
  st.dg = at_elem(dg, r * 4 * d, half || dg_half);
  st.dg_half = dg_half;
  st.da = da.get() + r * d;
  st.dqkv = at_elem(dqkv, r * 3 * d, half);
  st.dh1 = at_elem(dh1, r * d, dh_half);
  st.dh2 = at_elem(dh2, r * d, dh_half);
  st.dh_half = dh_half;
  st.b16.dqkv = half ? st.dqkv : at_elem(dqkv_16, r * 3 * d, true);
  st.b16.da = at_elem(da_16, r * d, true);
  st.b16.dg = half ? st.dg : at_elem(dg_16, r * 4 * d, true);
  st.b16.dm = at_elem(dm_16, r * d, true);
  return st;
}

void BlockScratch::allocate(Backend& be, const BlockShape& s, int B_, int cap, bool dropout) {
  B = B_;
  capacity = cap;
  size_t R = static_cast<size_t>(B_) * cap, d = s.d;
  dx2 = dropout ? DeviceBuffer(be, R * d) : DeviceBuffer();
  datt = DeviceBuffer(be, R * d);
}

int glue_ops(const WindowGlue& g, float* x, int B, int n, int d, Axpy2dOp (&ops)[3]) {
  const size_t nd = static_cast<size_t>(n) * d, ns = static_cast<size_t>(g.ns) * d, nx = nd - ns;
  int count = 0;
  if (g.P) {
    ops[count++] = {x, nd, 1.0f, g.P, g.Ps, g.S, g.Ss, size_t(B), ns, false, g.alpha};
    if (nx) ops[count++] = {x + ns, nd, 1.0f, g.P, g.Ps, g.X, g.Xs, size_t(B), nx, false, g.alpha};
  } else {
    ops[count++] = {x, nd, 1.0f, g.S, g.Ss, nullptr, 0, size_t(B), ns, false};
    if (nx) ops[count++] = {x + ns, nd, 1.0f, g.X, g.Xs, nullptr, 0, size_t(B), nx, false};
  }
  if (g.Y) ops[count++] = {g.Y, g.Ys, 1.0f, g.Ysrc, g.Ysrcs, nullptr, 0, size_t(B), ns, false};
  return count;
}

void block_forward(Backend& be, const BlockShape& s, const BlockWeights& w, BlockCache& c, float* y, float p,
                   uint64_t seed, uint64_t stream, const WindowGlue* glue) {
  const int d = s.d, R = c.B * c.n;
  const size_t Rd = static_cast<size_t>(R) * d;
  c.p = p;
  c.seed = seed;
  c.stream = stream;

  if (w.packed) {  // the backend packed them: it has the fused kernels
    be.block_in_forward(s, w, c, glue);
    if (!be.block_out_attention(s, c)) be.block_attention_forward(s, c);
    be.block_out_forward(s, w, c, y);
    return;
  }

  if (c.half) throw Error("block_forward: a cache of bf16 buffers needs the backend's fused chains");
  const bool ln_glue = glue && be.block_ln_glue(s);
  if (glue && !ln_glue) {
    Axpy2dOp ops[3];
    be.axpy2d_batch(ops, glue_ops(*glue, c.x, c.B, c.n, d, ops));
  }
  // Attention branch: x2 = x + dropout(c_proj(attn(ln_1(x)))).
  // h1, att, h2, g (and in the backward dg, dqkv): read only by the product right after and by its weight
  // product through b16, so they may stay bf16 alone (keeping's only).
  keeping(
      be, c.h1, c.b16.h1, Rd,
      [&] {
        if (ln_glue) be.layernorm_forward_glue(*glue, c.x, c.B, c.n, w.ln1_w, w.ln1_b, c.h1, c.mean1, c.rstd1, d);
        else be.layernorm_forward(c.x, w.ln1_w, w.ln1_b, c.h1, c.mean1, c.rstd1, R, d);
      },
      true);
  if (c.qkv_half) be.linear_forward_half(c.h1, w.attn_w, w.attn_b, c.qkv, R, d, 3 * d);
  else be.linear_forward(c.h1, w.attn_w, w.attn_b, c.qkv, R, d, 3 * d);
  keeping(
      be, c.att, c.b16.att, Rd,
      [&] { be.attention_forward(c.qkv, c.probs, c.att, c.B, c.n, d, s.heads, p, seed, stream * 4 + 0, c.qkv_half); },
      true);
  if (p > 0) {
    be.linear_forward(c.att, w.attn_proj_w, w.attn_proj_b, c.x2, R, d, d);
    be.dropout_forward(c.x2, c.x2, Rd, p, seed, stream * 4 + 1);
    be.axpy2d(c.x2, 0, 1.0f, c.x2, 0, c.x, 0, 1, Rd);
  } else {
    be.linear_forward_res(c.att, w.attn_proj_w, w.attn_proj_b, c.x, c.x2, R, d, d);
  }

  // MLP branch: y = x2 + dropout(c_proj(act(c_fc(ln_2(x2))))).
  keeping(be, c.h2, c.b16.h2, Rd, [&] { be.layernorm_forward(c.x2, w.ln2_w, w.ln2_b, c.h2, c.mean2, c.rstd2, R, d); },
          true);
  if (c.f_half && c.b16.g && be.block_fc_act(s)) {
    keeping(
        be, c.g, c.b16.g, Rd * 4,
        [&] { be.linear_forward_act_half(c.h2, w.fc_w, w.fc_b, c.f, c.g, R, d, 4 * d, s.gelu, c.f_dgelu); }, true);
  } else {
    if (c.f_dgelu) throw Error("block_forward: GELU's derivative is kept by the fused c_fc product alone");
    if (c.f_half) be.linear_forward_half(c.h2, w.fc_w, w.fc_b, c.f, R, d, 4 * d);
    else be.linear_forward(c.h2, w.fc_w, w.fc_b, c.f, R, d, 4 * d);
    keeping(be, c.g, c.b16.g, Rd * 4, [&] { be.activation_forward(s.gelu, c.f, c.g, Rd * 4, c.f_half); }, true);
  }
  if (p > 0) {
    be.linear_forward(c.g, w.mlp_proj_w, w.mlp_proj_b, y, R, 4 * d, d);
    be.dropout_forward(y, y, Rd, p, seed, stream * 4 + 2);
    be.axpy2d(y, 0, 1.0f, y, 0, c.x2, 0, 1, Rd);
  } else {
    be.linear_forward_res(c.g, w.mlp_proj_w, w.mlp_proj_b, c.x2, y, R, 4 * d, d);
  }
}

int glue_ops(const BackGlue& g, float* dy, int B, int n, int d, Axpy2dOp (&ops)[4], DotPairOp& dot) {
  const size_t nd = static_cast<size_t>(n) * d, ns = static_cast<size_t>(g.ns) * d, nx = static_cast<size_t>(g.nx) * d;
  int count = 0;
  ops[count++] = {g.dX, g.dXs, 1.0f, g.din + ns, g.dins, nullptr, 0, size_t(B), nx, true};
  ops[count++] = {dy + ns, nd, 1.0f, g.din, g.dins, nullptr, 0, size_t(B), nd - ns, false};
  if (g.alpha) {
    // Both halves of window k's input added alpha * P: P's gradient is alpha times both halves' input
    // gradients, the second's terms in the same op as the first's (x2); past nx the first's alone.
    ops[count++] = {dy, nd, 1.0f, g.din, g.dins, g.dY, g.dYs, size_t(B), nx, false, g.alpha, g.din + ns, g.dins};
    if (nx < ns)
      ops[count++] = {dy + nx, nd, 1.0f, g.din + nx, g.dins, g.dY + nx, g.dYs, size_t(B), ns - nx, false, g.alpha};
  } else {
    ops[count++] = {dy, nd, 1.0f, g.dY, g.dYs, nullptr, 0, size_t(B), ns, false};
  }
  dot = {{{g.P, g.Ps, g.din, g.dins, size_t(B), ns}, {g.P, g.Ps, g.din + ns, g.dins, size_t(B), nx}}, g.parts};
  return count;
}

void layernorm_backward_scatter_by_glue(Backend& be, const float* x, const float* w, const float* mean,
                                        const float* rstd, const float* dy, const float* dres, const BackScatter& sc,
                                        int B, int d, bool dy_half, LnParts parts) {
  const int n = sc.ns + sc.nx;
  DeviceBuffer din(be, static_cast<size_t>(B) * n * d);
  be.layernorm_backward_res(x, w, mean, rstd, dy, dres, din.get(), nullptr, nullptr, B * n, d, dy_half, parts);
  const BackGlue g = BackGlue::moving(din.get(), static_cast<size_t>(n) * d, sc.dY, sc.dYs, sc.dX, sc.dXs, sc.ns, sc.nx);
  Axpy2dOp ops[4];
  DotPairOp dot{};
  const int count = glue_ops(g, sc.dy, B, static_cast<int>(sc.dys / d), d, ops, dot);
  be.axpy2d_batch_twin(ops, count, nullptr, sc.dy, static_cast<size_t>(B) * sc.dys);
}

void block_backward(Backend& be, const BlockShape& s, const BlockWeights& w, const BlockGrads& g,
                    const BlockCache& c, BlockScratch& k, const BlockGradStash& st, float* dy, float* dx,
                    const BackGlue* glue, const BackScatter* scatter, bool dy_formed) {
  const int d = s.d, R = c.B * c.n;
  const size_t Rd = static_cast<size_t>(R) * d;
  const float p = c.p;

  if ((scatter || dy_formed) && (w.packed || glue))
    throw Error("block_backward: a scattered input gradient is for the unfused path, without a glue");
  if (w.packed) {  // the backend packed them: it has the fused kernels
    float* dx2 = p > 0 ? k.dx2.get() : st.da;
    be.block_out_backward(s, w, c, st, dy, dx2, k.datt.get(), glue);
    be.block_attention_backward(s, c, st, k.datt.get());
    be.block_in_backward(s, w, c, st, dx2, dx);
    return;
  }
  if (c.half || st.half) throw Error("block_backward: bf16 buffers need the backend's fused chains");

  // MLP branch. dm: the gradient at mlp c_proj's output (dy itself without dropout), its bf16 copy kept in dm16
  // (where the backend keeps one) by whichever operation writes it, and taken by mlp c_proj's dx product.
  void* dm16 = st.b16.dm;
  const bool dm_is_dy = p <= 0 && st.dm == dy;
  if (glue) {
    Axpy2dOp ops[4];
    DotPairOp dot{};
    const int count = glue_ops(*glue, dy, c.B, c.n, d, ops, dot);
    if (dm16 && dm_is_dy) {
      keeping(be, dy, dm16, Rd, [&] { be.axpy2d_batch_twin(ops, count, glue->P ? &dot : nullptr, dy, Rd); });
    } else {
      be.axpy2d_batch(ops, count, glue->P ? &dot : nullptr);
    }
  }
  if (p > 0) {
    keeping(be, st.dm, dm16, Rd, [&] { be.dropout_backward(dy, st.dm, Rd, p, c.seed, c.stream * 4 + 2); });
  } else if (st.dm != dy) {
    keeping(be, st.dm, dm16, Rd, [&] { be.copy(st.dm, dy, Rd); });
  } else if (dm16 && !glue && !dy_formed) {  // dy came from the caller: the copy by a cast, offered to the product
    be.keep_bf16_begin(dy, dm16, Rd, false);
    be.keep_bf16_end();
  }
  if (st.dg_half && c.f_half && st.b16.dg && be.block_fc_dact(s)) {
    keeping(
        be, st.dg, st.b16.dg, Rd * 4,
        [&] { be.linear_backward_dx_act_half(w.mlp_proj_w, st.dm, c.f, st.dg, R, 4 * d, d, s.gelu, c.f_dgelu); },
        true);
  } else {
    if (c.f_dgelu) throw Error("block_backward: f holds GELU's derivative, which the fused dx product alone reads");
    if (st.dg_half) be.linear_backward_dx_half(w.mlp_proj_w, st.dm, st.dg, R, 4 * d, d);
    else be.linear_backward(c.g, w.mlp_proj_w, st.dm, st.dg, nullptr, nullptr, R, 4 * d, d);
    keeping(be, st.dg, st.b16.dg, Rd * 4,
            [&] { be.activation_backward(s.gelu, c.f, st.dg, st.dg, Rd * 4, c.f_half, st.dg_half); }, true);
  }
  if (st.dh_half) be.linear_backward_dx_half(w.fc_w, st.dg, st.dh2, R, d, 4 * d);
  else be.linear_backward(c.h2, w.fc_w, st.dg, st.dh2, nullptr, nullptr, R, d, 4 * d);
  // x2's gradient: the residual's dy plus ln_2's. Without dropout it is also attn c_proj's output gradient.
  float* dx2 = p > 0 ? k.dx2.get() : st.da;
  keeping(be, st.da, p > 0 ? nullptr : st.b16.da, Rd, [&] {
    be.layernorm_backward_res(c.x2, w.ln2_w, c.mean2, c.rstd2, st.dh2, dy, dx2, nullptr, nullptr, R, d, st.dh_half,
                              st.ln2);
  });

  // Attention branch.
  if (p > 0)
    keeping(be, st.da, st.b16.da, Rd, [&] { be.dropout_backward(dx2, st.da, Rd, p, c.seed, c.stream * 4 + 1); });
  const bool datt_half = c.qkv_half && be.block_datt_half(s);
  if (datt_half) be.linear_backward_dx_half(w.attn_proj_w, st.da, k.datt.get(), R, d, d);
  else be.linear_backward(c.att, w.attn_proj_w, st.da, k.datt.get(), nullptr, nullptr, R, d, d);
  keeping(
      be, st.dqkv, st.b16.dqkv, Rd * 3,
      [&] {
        be.attention_backward(c.qkv, c.probs, k.datt.get(), st.dqkv, c.B, c.n, d, s.heads, p, c.seed, c.stream * 4 + 0,
                              c.qkv_half, datt_half);
      },
      true);
  if (st.dh_half) be.linear_backward_dx_half(w.attn_w, st.dqkv, st.dh1, R, d, 3 * d);
  else be.linear_backward(c.h1, w.attn_w, st.dqkv, st.dh1, nullptr, nullptr, R, d, 3 * d);
  if (scatter) {
    if (scatter->ns + scatter->nx != c.n)
      throw Error("block_backward: the scatter's rows (ns + nx) are not the window's");
    keeping(be, scatter->dy, scatter->dy16, static_cast<size_t>(c.B) * scatter->dys, [&] {
      be.layernorm_backward_scatter(c.x, w.ln1_w, c.mean1, c.rstd1, st.dh1, dx2, *scatter, c.B, d, st.dh_half,
                                    st.ln1);
    });
  } else {
    be.layernorm_backward_res(c.x, w.ln1_w, c.mean1, c.rstd1, st.dh1, dx2, dx, nullptr, nullptr, R, d, st.dh_half,
                              st.ln1);
  }
}

void block_weight_grads(Backend& be, const BlockShape& s, const BlockWeights& w, const BlockGrads& g,
                        const BlockCache& a, const BlockGradStash& st, int rows) {
  const int d = s.d;
  // Each product reads an operand's bf16 values where the layer holds them (b16), else its float32 ones.
  auto grad = [&](const float* x, const void* x16, const float* dy, const void* dy16, float* gw, float* gb, int in,
                  int out) {
    be.linear_weight_grad(x16 ? x16 : x, x16 != nullptr, dy16 ? dy16 : dy, dy16 != nullptr, gw, gb, rows, in, out);
  };
  grad(a.h1, a.b16.h1, st.dqkv, st.b16.dqkv, g.attn_w, g.attn_b, d, 3 * d);
  grad(a.att, a.b16.att, st.da, st.b16.da, g.attn_proj_w, g.attn_proj_b, d, d);
  grad(a.h2, a.b16.h2, st.dg, st.b16.dg, g.fc_w, g.fc_b, d, 4 * d);
  grad(a.g, a.b16.g, st.dm, st.b16.dm, g.mlp_proj_w, g.mlp_proj_b, 4 * d, d);
  if (st.ln1.w) {  // the LayerNorms' backward passes left their sums per application
    be.layernorm_parts_finish(st.ln1, st.ln_part_rows, d, g.ln1_w, g.ln1_b);
    be.layernorm_parts_finish(st.ln2, st.ln_part_rows, d, g.ln2_w, g.ln2_b);
    return;
  }
  be.layernorm_backward(a.x, w.ln1_w, a.mean1, a.rstd1, st.dh1, nullptr, g.ln1_w, g.ln1_b, rows, d, st.dh_half);
  be.layernorm_backward(a.x2, w.ln2_w, a.mean2, a.rstd2, st.dh2, nullptr, g.ln2_w, g.ln2_b, rows, d, st.dh_half);
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
  be.linear_forward_res(k.att.get(), w.attn_proj_w, w.attn_proj_b, x, k.x2.get(), R, d, d);
  be.layernorm_forward(k.x2.get(), w.ln2_w, w.ln2_b, k.h.get(), k.mean.get(), k.rstd.get(), R, d);
  be.linear_forward(k.h.get(), w.fc_w, w.fc_b, k.f.get(), R, d, 4 * d);
  be.activation_forward(s.gelu, k.f.get(), k.f.get(), Rd * 4);
  be.linear_forward_res(k.f.get(), w.mlp_proj_w, w.mlp_proj_b, k.x2.get(), y, R, 4 * d, d);
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
  be.linear_forward_res(k.att.get(), w.attn_proj_w, w.attn_proj_b, x, k.x2.get(), S, d, d);
  be.layernorm_forward(k.x2.get(), w.ln2_w, w.ln2_b, k.h.get(), k.mean.get(), k.rstd.get(), S, d);
  be.linear_forward(k.h.get(), w.fc_w, w.fc_b, k.f.get(), S, d, 4 * d);
  be.activation_forward(s.gelu, k.f.get(), k.f.get(), Sd * 4);
  be.linear_forward_res(k.f.get(), w.mlp_proj_w, w.mlp_proj_b, k.x2.get(), y, S, 4 * d, d);
}

}  // namespace rt
