#include "layer/recurrence.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "core/error.h"
#include "core/rng.h"

namespace rt {

namespace {

// Limits that catch a mistaken config before any allocation; far above any model this package trains
// on one machine.
constexpr int kMaxD = 1 << 16;
constexpr int kMaxLayers = 1024;

std::string str(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

// Tokens in window k of a sequence of N split into windows of width w (m windows, the last partial).
inline int window_len(int k, int m, int N, int w) { return k < m - 1 ? w : N - (m - 1) * w; }

// Tokens per sequence of each application of T, in order: [N] when w = 0, else S_0 = T(X_0), the m-1
// window pairs, and Y_{m-1} = T(S_{m-1}).
std::vector<int> app_lengths(int N, int w) {
  if (w == 0) return {N};
  const int m = (N + w - 1) / w;
  std::vector<int> n;
  n.reserve(m + 1);
  n.push_back(window_len(0, m, N, w));
  for (int k = 1; k < m; ++k) n.push_back(w + window_len(k, m, N, w));
  n.push_back(window_len(m - 1, m, N, w));
  return n;
}

// The backend's once-per-pass copies of a layer's weights (Backend::weight_copies_begin), for one pass.
class WeightCopies {
 public:
  WeightCopies(Backend& be, const BlockShape& s, const BlockWeights& w, bool backward) : be_(be) {
    const size_t n = be.weight_copies_size(s);
    if (!n) return;
    buf_ = DeviceBuffer(be, n);
    be.weight_copies_begin(s, w, backward, buf_.get());
    active_ = true;
  }
  ~WeightCopies() {
    if (active_) be_.weight_copies_end();
  }
  WeightCopies(const WeightCopies&) = delete;
  WeightCopies& operator=(const WeightCopies&) = delete;

 private:
  Backend& be_;
  DeviceBuffer buf_;
  bool active_ = false;
};

}  // namespace

void LayerConfig::validate() const {
  RT_CHECK(d > 0 && d <= kMaxD, "config.d: expected an integer in [1, " + std::to_string(kMaxD) + "], got " + std::to_string(d));
  RT_CHECK(heads > 0, "config.heads: expected a positive integer, got " + std::to_string(heads));
  RT_CHECK(d % heads == 0, "config.heads: must divide config.d (d = " + std::to_string(d) + ", heads = " +
                               std::to_string(heads) + ")");
  RT_CHECK(layers > 0 && layers <= kMaxLayers,
           "config.layers: expected an integer in [1, " + std::to_string(kMaxLayers) + "], got " + std::to_string(layers));
  RT_CHECK(window >= 0, "config.window: expected a non-negative integer (0 = plain transformer), got " + std::to_string(window));
  RT_CHECK(std::isfinite(alpha_init), "config.alpha.init: expected a finite number");
  RT_CHECK(dropout >= 0 && dropout < 1, "config.dropout: expected a number in [0, 1), got " + str(dropout));
  // 12 d^2 weights per layer must fit comfortably in memory.
  double floats = 12.0 * d * d * layers;
  RT_CHECK(floats < double(kMaxElements), "config: d and layers give " + str(floats) + " weights, too many for this machine");
}

LayerStack::LayerStack(const LayerConfig& cfg, Backend& be) : cfg_(cfg), be_(be) {
  cfg_.validate();
  graphs_on_ = be.graphs();
  shape_ = BlockShape{cfg.d, cfg.heads, cfg.gelu, cfg.bias};
  const int64_t d = cfg.d;
  const float std_proj = 0.02f / std::sqrt(2.0f * cfg.layers);
  uint64_t param_index = 0;

  // nanoGPT's init: normal(0, 0.02) for Linear, 0.02/sqrt(2L) for the c_proj weights, LayerNorm 1 and 0.
  auto add = [&](const std::string& name, std::vector<int64_t> shape, float std, float fill) -> float* {
    NamedParam p{name, Tensor::create(DType::F32, shape), Tensor::create(DType::F32, shape)};
    float* v = p.value->f32();
    size_t n = p.value->numel();
    if (std > 0) {
      uint64_t key = rng_key(cfg.seed, 0x1000 + param_index);
      for (size_t i = 0; i < n; ++i) {
        float u1 = std::max(rng_uniform(key, 2 * i), 1e-12f), u2 = rng_uniform(key, 2 * i + 1);
        v[i] = std * std::sqrt(-2.0f * std::log(u1)) * std::cos(6.283185307179586f * u2);
      }
    } else {
      std::fill(v, v + n, fill);
    }
    // Parameters live on the backend's device: initialised on the host (the same numbers whatever the
    // device), then copied there; the gradient starts as zeros there.
    if (be.device() != Device::CPU) {
      p.value = p.value->to(be.device());
      p.grad = Tensor::create(DType::F32, shape, be.device());
    }
    ++param_index;
    params_.push_back(std::move(p));
    return params_.back().value->f32();
  };

  params_.reserve(static_cast<size_t>(cfg.layers) * 13);
  lw_.resize(cfg.layers);
  for (int l = 0; l < cfg.layers; ++l) {
    const std::string pre = "transformer.h." + std::to_string(l) + ".";
    size_t first = params_.size();
    add(pre + "ln_1.weight", {d}, 0, 1);
    if (cfg.bias) add(pre + "ln_1.bias", {d}, 0, 0);
    add(pre + "attn.c_attn.weight", {3 * d, d}, 0.02f, 0);
    if (cfg.bias) add(pre + "attn.c_attn.bias", {3 * d}, 0, 0);
    add(pre + "attn.c_proj.weight", {d, d}, std_proj, 0);
    if (cfg.bias) add(pre + "attn.c_proj.bias", {d}, 0, 0);
    add(pre + "ln_2.weight", {d}, 0, 1);
    if (cfg.bias) add(pre + "ln_2.bias", {d}, 0, 0);
    add(pre + "mlp.c_fc.weight", {4 * d, d}, 0.02f, 0);
    if (cfg.bias) add(pre + "mlp.c_fc.bias", {4 * d}, 0, 0);
    add(pre + "mlp.c_proj.weight", {d, 4 * d}, std_proj, 0);
    if (cfg.bias) add(pre + "mlp.c_proj.bias", {d}, 0, 0);
    add(pre + "alpha", {1}, 0, cfg.alpha_init);

    // Bind the block's pointers by position (bias entries present or not).
    size_t i = first;
    auto next = [&](bool present, float** gp) -> float* {
      if (!present) { *gp = nullptr; return nullptr; }
      *gp = params_[i].grad->f32();
      return params_[i++].value->f32();
    };
    LayerWeights& L = lw_[l];
    L.w.ln1_w = next(true, &L.g.ln1_w);
    L.w.ln1_b = next(cfg.bias, &L.g.ln1_b);
    L.w.attn_w = next(true, &L.g.attn_w);
    L.w.attn_b = next(cfg.bias, &L.g.attn_b);
    L.w.attn_proj_w = next(true, &L.g.attn_proj_w);
    L.w.attn_proj_b = next(cfg.bias, &L.g.attn_proj_b);
    L.w.ln2_w = next(true, &L.g.ln2_w);
    L.w.ln2_b = next(cfg.bias, &L.g.ln2_b);
    L.w.fc_w = next(true, &L.g.fc_w);
    L.w.fc_b = next(cfg.bias, &L.g.fc_b);
    L.w.mlp_proj_w = next(true, &L.g.mlp_proj_w);
    L.w.mlp_proj_b = next(cfg.bias, &L.g.mlp_proj_b);
    L.alpha = next(true, &L.alpha_grad);
  }
}

float LayerStack::alpha(int l) const {
  if (!cfg_.accumulate) return 0.0f;
  float a = 0;
  be_.download(&a, lw_[l].alpha, 1);
  return alpha_used(a);
}

void LayerStack::zero_grad() {
  for (auto& p : params_) be_.zero(p.grad->f32(), p.grad->numel());
}

BlockWeights LayerStack::block_weights(int l, DeviceBuffer& packed) const {
  BlockWeights W = lw_[l].w;
  if (be_.fused_block(shape_)) {
    packed = DeviceBuffer(be_, be_.fused_weights_size(shape_));
    be_.pack_fused_weights(shape_, W, packed.get());
    W.packed = packed.get();
  }
  return W;
}

std::shared_ptr<Tensor> LayerStack::forward(const Tensor& x, bool training, uint64_t seed, int window, bool keep,
                                            bool check_finite) {
  RT_CHECK(x.dtype == DType::F32, "x: expected a float32 tensor, got " + std::string(dtype_name(x.dtype)));
  RT_CHECK(x.device() == be_.device(), std::string("x: expected a tensor on '") + device_name(be_.device()) +
                                           "', got one on '" + device_name(x.device()) + "'");
  RT_CHECK(x.shape.size() == 3 && x.shape[2] == cfg_.d,
           "x: expected shape [batch, N, " + std::to_string(cfg_.d) + "], got " + x.shape_string());
  RT_CHECK(x.shape[0] >= 1 && x.shape[1] >= 1, "x: batch and N must be at least 1, got " + x.shape_string());
  RT_CHECK(x.shape[0] * x.shape[1] <= (int64_t(1) << 31) / 4 / cfg_.d,
           "x: too many tokens for one call, got " + x.shape_string());
  const int w = window < 0 ? cfg_.window : window;
  RT_CHECK(w >= 0, "window: expected a non-negative integer, got " + std::to_string(window));
  const int B = static_cast<int>(x.shape[0]), N = static_cast<int>(x.shape[1]);
  const size_t total = static_cast<size_t>(B) * N * cfg_.d;
  RT_CHECK(!check_finite || be_.all_finite(x.f32(), total), "x: contains NaN or Infinity");

  layer_caches_.clear();
  pending_ = nullptr;
  const float p = training ? cfg_.dropout : 0.0f;
  if (GraphEntry* g = graph_for(B, N, w, p, keep)) {
    try {
      return forward_graph(*g, x, seed);
    } catch (const Error& e) {
      // A recording the backend refused (or a replay that failed): off for this stack, and this call runs
      // as it would have without graphs.
      std::fprintf(stderr, "recurrent-transformer: CUDA graphs turned off for this model: %s\n", e.what());
      graphs_on_ = false;
      drop_graphs();
    }
  }
  std::vector<LayerCache> caches(cfg_.layers);
  DeviceBuffer ping, pong;
  const float* out = forward_layers(x.f32(), B, N, w, p, seed, keep, caches, ping, pong);
  auto y = Tensor::create(DType::F32, {B, N, cfg_.d}, be_.device());
  be_.copy(y->f32(), out, total);
  if (keep) {
    layer_caches_ = std::move(caches);
    cache_B_ = B;
    cache_N_ = N;
    cache_w_ = w;
  }
  return y;
}

const float* LayerStack::forward_layers(const float* in, int B, int N, int w, float p, uint64_t seed, bool keep,
                                        std::vector<LayerCache>& caches, DeviceBuffer& ping,
                                        DeviceBuffer& pong) {
  const size_t total = static_cast<size_t>(B) * N * cfg_.d;
  if (!keep) {
    ping = DeviceBuffer(be_, total);
    pong = DeviceBuffer(be_, total);
  }
  for (int l = 0; l < cfg_.layers; ++l) {
    LayerCache& c = caches[l];
    float* out;
    if (keep) {
      if (l == 0) {
        // Layer 0's input is kept by copy: accumulate reads P_0 from it in backward, and the caller's
        // tensor may be disposed or reused meanwhile.
        c.input = DeviceBuffer(be_, total);
        be_.copy(c.input.get(), in, total);
        in = c.input.get();
      }
      c.output = DeviceBuffer(be_, total);
      out = c.output.get();
    } else {
      out = (l % 2 == 0 ? ping : pong).get();
    }
    forward_layer(l, in, out, B, N, w, p, seed, keep, c);
    in = out;
  }
  return in;
}

void LayerStack::forward_layer(int l, const float* X, float* Y, int B, int N, int w, float p, uint64_t seed,
                               bool keep, LayerCache& cache) {
  const size_t d = cfg_.d, Nd = static_cast<size_t>(N) * d;
  const LayerWeights& L = lw_[l];
  // alpha * P in the glue ops: 1 * alpha_dev[1], which each op reads itself (Axpy2dOp::scale).
  const float* alpha_at = nullptr;
  if (cfg_.accumulate) {
    cache.alpha_dev = DeviceBuffer(be_, 2);
    be_.alpha_state(cache.alpha_dev.get(), L.alpha);
    alpha_at = cache.alpha_dev.get() + 1;
  }
  const BlockWeights W = block_weights(l, cache.packed);
  const WeightCopies copies(be_, shape_, W, false);

  const int m = w == 0 ? 1 : (N + w - 1) / w;
  const int nmax = (w == 0 || m == 1) ? N : 2 * w;
  BlockArena single_arena;  // without gradients: one cache of the largest application, reused
  BlockCache single;
  if (keep) {
    // Every application's cache, field by field in one arena (w = 0: the input X is the cache's x).
    const std::vector<int> lengths = app_lengths(N, w);
    cache.arena.allocate(be_, shape_, B, lengths, w != 0);
    cache.apps.clear();
    cache.apps.reserve(lengths.size());
    for (size_t k = 0; k < lengths.size(); ++k) cache.apps.push_back(cache.arena.view(shape_, static_cast<int>(k)));
  } else {
    single_arena.allocate(be_, shape_, B, {nmax}, true, false);
    single = single_arena.view(shape_, 0);
  }
  // Each application's dropout stream is unique within the call: (layer, application index).
  int app_index = 0;
  auto next_app = [&](int n) -> BlockCache& {
    BlockCache& c = keep ? cache.apps[app_index] : single;
    c.n = n;
    return c;
  };
  auto stream_of = [&](int app) { return (static_cast<uint64_t>(l) << 32) | static_cast<uint64_t>(app); };
  auto run = [&](BlockCache& c, float* out, const WindowGlue* glue) {
    block_forward(be_, shape_, W, c, out, p, seed, stream_of(app_index++), glue);
  };

  if (w == 0) {
    // The block only reads its input: X itself (kept by the caller until the backward) serves as x.
    BlockCache& c = next_app(N);
    c.x = const_cast<float*>(X);
    run(c, Y, nullptr);
    return;
  }

  DeviceBuffer out(be_, static_cast<size_t>(B) * nmax * d);  // one application's output

  // S_0 = T(X_0)
  const int len0 = window_len(0, m, N, w);
  {
    BlockCache& c = next_app(len0);
    be_.axpy2d(c.x, len0 * d, 1.0f, X, Nd, nullptr, 0, B, len0 * d);
    run(c, out.get(), nullptr);
  }
  const float* S = out.get();
  size_t S_stride = len0 * d;
  // Y_{k-1} = Z[:, :w] of window k's application is copied out of `out` by the next window's input glue,
  // which reads `out` anyway (one launch fewer per window, or none with the fused in-chain, which forms the
  // input as it loads it); under accumulate that glue reads P_k = Y_{k-1} from `out` too, not from Y, which
  // it is writing. copy_y(j) is that copy of Y_j.
  auto copy_y = [&](int j) -> Axpy2dOp {
    return {Y + static_cast<size_t>(j) * w * d, Nd, 1.0f, out.get(), S_stride, nullptr, 0, size_t(B), w * d, false};
  };
  for (int k = 1; k < m; ++k) {
    const int lk = window_len(k, m, N, w), n = w + lk;
    BlockCache& c = next_app(n);
    // The window pair's input [A + S_{k-1}, A[:, :lk] + X_k] (forget: [S_{k-1}, X_k]), with the copy of
    // the previous window's Y. P_{k-1} is X_0 for k = 1, else Y_{k-2} (the first half of `out`);
    // A = alpha * P_{k-1}.
    WindowGlue glue;
    glue.S = S;
    glue.Ss = S_stride;
    glue.X = X + static_cast<size_t>(k) * w * d;
    glue.Xs = Nd;
    glue.ns = w;
    if (cfg_.accumulate) {
      glue.P = k == 1 ? X : out.get();
      glue.Ps = k == 1 ? Nd : S_stride;
      glue.alpha = alpha_at;
    }
    if (k >= 2) {
      glue.Y = Y + static_cast<size_t>(k - 2) * w * d;
      glue.Ys = Nd;
      glue.Ysrc = out.get();
      glue.Ysrcs = S_stride;
    }
    run(c, out.get(), &glue);
    S = out.get() + w * d;
    S_stride = n * d;
  }
  // Y_{m-1} = T(S_{m-1})
  const int last = window_len(m - 1, m, N, w);
  BlockCache& c = next_app(last);
  {
    Axpy2dOp ops[2];
    int count = 0;
    ops[count++] = {c.x, last * d, 1.0f, S, S_stride, nullptr, 0, size_t(B), last * d, false};
    if (m >= 2) ops[count++] = copy_y(m - 2);
    be_.axpy2d_batch(ops, count);
  }
  run(c, out.get(), nullptr);
  be_.axpy2d(Y + static_cast<size_t>(m - 1) * w * d, Nd, 1.0f, out.get(), last * d, nullptr, 0, B, last * d);
}

std::shared_ptr<Tensor> LayerStack::backward(const Tensor& dy, bool check_finite) {
  RT_CHECK(!layer_caches_.empty() || pending_,
           "backward: no forward pass to differentiate; call forward (with gradients kept) before each backward");
  RT_CHECK(dy.dtype == DType::F32, "dy: expected a float32 tensor, got " + std::string(dtype_name(dy.dtype)));
  RT_CHECK(dy.device() == be_.device(), std::string("dy: expected a tensor on '") + device_name(be_.device()) +
                                            "', got one on '" + device_name(dy.device()) + "'");
  RT_CHECK(dy.shape.size() == 3 && dy.shape[0] == cache_B_ && dy.shape[1] == cache_N_ && dy.shape[2] == cfg_.d,
           "dy: expected shape [" + std::to_string(cache_B_) + ", " + std::to_string(cache_N_) + ", " +
               std::to_string(cfg_.d) + "] (the forward output's), got " + dy.shape_string());
  const int B = cache_B_, N = cache_N_, w = cache_w_;
  const size_t total = static_cast<size_t>(B) * N * cfg_.d;
  RT_CHECK(!check_finite || be_.all_finite(dy.f32(), total), "dy: contains NaN or Infinity");

  if (pending_) {
    GraphEntry& g = *pending_;
    pending_ = nullptr;
    return backward_graph(g, dy);
  }
  std::vector<LayerCache> caches = std::move(layer_caches_);
  layer_caches_.clear();
  DeviceBuffer g1, g2;
  const float* out = backward_layers(dy.f32(), B, N, w, caches, false, g1, g2);
  auto dx = Tensor::create(DType::F32, {B, N, cfg_.d}, be_.device());
  be_.copy(dx->f32(), out, total);
  return dx;
}

const float* LayerStack::backward_layers(const float* dy, int B, int N, int w, std::vector<LayerCache>& caches,
                                         bool keep_caches, DeviceBuffer& g1, DeviceBuffer& g2) {
  const size_t total = static_cast<size_t>(B) * N * cfg_.d;
  g1 = DeviceBuffer(be_, total);
  g2 = DeviceBuffer(be_, total);
  be_.copy(g1.get(), dy, total);
  float* dY = g1.get();
  float* dX = g2.get();
  for (int l = cfg_.layers - 1; l >= 0; --l) {
    const float* X = l == 0 ? caches[0].input.get() : caches[l - 1].output.get();
    backward_layer(l, dY, dX, B, N, w, X, caches[l]);
    if (!keep_caches) {
      caches[l].apps.clear();  // free each layer's activations as soon as its gradients are done
      caches[l].arena.reset();
    }
    std::swap(dY, dX);
  }
  return dY;
}

void LayerStack::backward_layer(int l, const float* dY, float* dX, int B, int N, int w, const float* X,
                                LayerCache& cache) {
  const size_t d = cfg_.d, Nd = static_cast<size_t>(N) * d;
  const LayerWeights& L = lw_[l];
  const float* Y = cache.output.get();
  // alpha (accumulate only): each op multiplies by alpha_dev[1] itself, as in the forward.
  const float* alpha_at = cache.alpha_dev.get() ? cache.alpha_dev.get() + 1 : nullptr;
  const bool drop = cache.apps.front().p > 0;  // every application ran at the forward's rate
  const int m = w == 0 ? 1 : (N + w - 1) / w;
  const int nmax = (w == 0 || m == 1) ? N : 2 * w;
  BlockScratch scratch;
  scratch.allocate(be_, shape_, B, nmax, drop);
  // The weights do not change between a forward and its backward: the forward's packed copy serves.
  BlockWeights W = L.w;
  W.packed = cache.packed.get();
  const WeightCopies copies(be_, shape_, W, true);
  // The Linear layers' output gradients of every application, for one weight-gradient product each at
  // the end. Without dropout the gradient at mlp c_proj's output is the block's dy itself: it is assembled
  // straight into the stash (w = 0: it is dY).
  BlockGradArena stash;
  stash.allocate(be_, shape_, cache.arena.rows, !(w == 0 && !drop));
  // Where the backend's LayerNorm backward passes leave their dw, db partial sums (block_ln_parts): each
  // application its rows of them, in application order, ln_1's and ln_2's w and b rows in four blocks.
  std::vector<int> part_at;
  int part_rows = 0;
  DeviceBuffer ln_parts;
  if (!W.packed && be_.block_ln_parts(shape_)) {
    for (const BlockCache& a : cache.apps) {
      part_at.push_back(part_rows);
      part_rows += be_.layernorm_part_rows(a.B * a.n, static_cast<int>(d));
    }
    ln_parts = DeviceBuffer(be_, 4 * static_cast<size_t>(part_rows) * d);
  }
  auto view = [&](int app) {
    BlockGradStash st = stash.view(shape_, cache.arena, app);
    if (!st.dm) st.dm = const_cast<float*>(dY);
    if (ln_parts.get()) {
      float* at = ln_parts.get() + static_cast<size_t>(part_at[app]) * d;
      const size_t block = static_cast<size_t>(part_rows) * d;
      st.ln1 = {at, at + block};
      st.ln2 = {at + 2 * block, at + 3 * block};
      st.ln_part_rows = part_rows;
    }
    return st;
  };
  auto back = [&](int app, float* dout, float* din, const BackGlue* glue, const BackScatter* scatter = nullptr,
                  bool formed = false) {
    block_backward(be_, shape_, W, L.g, cache.apps[app], scratch, view(app), dout, din, glue, scatter, formed);
  };
  auto weight_grads = [&] {
    block_weight_grads(be_, shape_, L.w, L.g, cache.apps[0], view(0), static_cast<int>(cache.arena.rows));
  };

  if (w == 0) {
    back(0, const_cast<float*>(dY), dX, nullptr);
    weight_grads();
    return;
  }

  const size_t span = static_cast<size_t>(B) * nmax * d;
  DeviceBuffer dout_buf, din(be_, span);
  if (drop) dout_buf = DeviceBuffer(be_, span);
  // Where application app's output gradient is assembled.
  auto dout = [&](int app) -> float* { return drop ? dout_buf.get() : view(app).dm; };
  be_.zero(dX, static_cast<size_t>(B) * Nd);

  // Final application: Y_{m-1} = T(S_{m-1}).
  const int last = window_len(m - 1, m, N, w);
  {
    float* o = dout(m);
    be_.axpy2d(o, last * d, 1.0f, dY + static_cast<size_t>(m - 1) * w * d, Nd, nullptr, 0, B, last * d);
    back(m, o, din.get(), nullptr);
  }
  const float* dS = din.get();  // gradient of S_{k}, read before din is next overwritten
  size_t dS_stride = last * d;
  // From window 2 on, window k's input gradient (din) becomes window k-1's output gradient as window k-1's
  // backward reads it (BackGlue: one launch fewer per window, two with the fused out-chain, which forms it
  // as it loads it): its first half dY_{k-2} (+ dP under accumulate, P_{k-1} = Y_{k-2} feeding window k),
  // its second half dS_{k-1}, with window k's dX rows and alpha's dot products. The last window's output
  // gradient is assembled here, and window 1's input gradient by the batch after its backward.
  BackGlue glue;
  bool assembled = false;
  // alpha's gradient: each window's dot products leave parts in backend memory, summed once at the end: one
  // slot a window (dot_parts() doubles, in the order of the loop) from the glue batches, or with the fused
  // chains window 1's slot and then fused_parts(rows) doubles a window from windows m-1 .. 2.
  const bool dalpha = cfg_.accumulate && cfg_.alpha_learnable;
  const bool fused = W.packed != nullptr;
  const size_t slot = dalpha ? static_cast<size_t>(be_.dot_parts()) : 0;
  const size_t slots = fused ? std::min(m - 1, 1) : m - 1;
  const size_t per_window = dalpha && fused ? static_cast<size_t>(be_.fused_parts(B * 2 * w)) : 0;
  const size_t more = per_window * std::max(m - 2, 0);
  DeviceBuffer dalpha_parts(be_, 2 * (slot * slots + more));  // doubles, two floats each
  double* parts = reinterpret_cast<double*>(dalpha_parts.get());
  double* more_parts = parts + slot * slots;

  // Forget mode, where the backend offers it: window k's ln_1 backward writes its input gradient straight into
  // window k-1's output gradient and dX (BackScatter) rather than into din for window k-1's glue to move.
  const bool scatter_on = !fused && !cfg_.accumulate && be_.block_ln_back_glue(shape_);
  bool formed = false;  // window k's output gradient already formed by window k+1's scatter
  for (int k = m - 1; k >= 1; --k) {
    const int lk = window_len(k, m, N, w), n = w + lk;
    float* o = dout(k);
    // Z = [Y_{k-1}, S_k]; Y_{k-1} is also P_k, which the next window read.
    if (!assembled && !formed) {
      const Axpy2dOp ops[2] = {
          {o, n * d, 1.0f, dY + static_cast<size_t>(k - 1) * w * d, Nd, nullptr, 0, size_t(B), w * d, false},
          {o + w * d, n * d, 1.0f, dS, dS_stride, nullptr, 0, size_t(B), lk * d, false}};
      be_.axpy2d_batch(ops, 2);
    }
    float* dXk = dX + static_cast<size_t>(k) * w * d;
    const float* dY2 = k >= 2 ? dY + static_cast<size_t>(k - 2) * w * d : nullptr;  // dY_{k-2}
    // Window k-1 (k >= 2) is a full one: its output gradient has 2 w rows, as the scatter's dy wants.
    const bool scatter = scatter_on && k >= 2;
    // (dy16: dm is dy itself without dropout)
    const BackScatter sc = scatter ? BackScatter{dout(k - 1), dY2, dXk, drop ? nullptr : view(k - 1).b16.dm,
                                                 2 * static_cast<size_t>(w) * d, Nd, Nd, w, lk}
                                   : BackScatter{};
    back(k, o, din.get(), assembled ? &glue : nullptr, scatter ? &sc : nullptr, formed);
    if (scatter) {
      // Window k-1's output gradient and dX's rows already where they belong.
    } else if (k >= 2) {
      // Window k-1's output gradient, formed in its backward (the next back()).
      glue = BackGlue::moving(din.get(), n * d, dY2, Nd, dXk, Nd, w, lk);
      if (cfg_.accumulate) {
        // Both halves of window k's input added A = alpha * P_{k-1} (P_{k-1} = Y_{k-2}, the first half of
        // window k-1's output), the second only its first lk rows: P's gradient, alpha times both halves'
        // input gradients, goes straight into window k-1's output gradient, with dY_{k-2}.
        glue.alpha = alpha_at;
        if (dalpha) {
          glue.P = Y + static_cast<size_t>(k - 2) * w * d;
          glue.Ps = Nd;
          glue.parts = fused ? more_parts + (m - 1 - k) * per_window : parts + (m - 1 - k) * slot;
        }
      }
    } else {
      // Window 1: its input gradient's second half into dX, and under accumulate P_0 = X_0's gradient, alpha
      // times both halves' (x2; past lk the first's alone), into dX too, with alpha's dot products.
      Axpy2dOp ops[3];
      int count = 0;
      ops[count++] = {dXk, Nd, 1.0f, din.get() + w * d, n * d, nullptr, 0, size_t(B), lk * d, true};
      DotPairOp dot{};
      if (cfg_.accumulate) {
        ops[count++] = {dX, Nd, 1.0f, din.get(), n * d, nullptr, 0, size_t(B), lk * d, true, alpha_at,
                        din.get() + w * d, n * d};
        if (lk < w)
          ops[count++] = {dX + lk * d, Nd, 1.0f, din.get() + lk * d, n * d, nullptr, 0, size_t(B), (w - lk) * d, true,
                          alpha_at};
        dot = {{{X, Nd, din.get(), n * d, size_t(B), w * d}, {X, Nd, din.get() + w * d, n * d, size_t(B), lk * d}},
               fused ? parts : parts + (m - 2) * slot};
      }
      be_.axpy2d_batch(ops, count, dalpha ? &dot : nullptr);
    }
    assembled = k >= 2 && !scatter;
    formed = scatter;
    dS = din.get();  // (not written by a scattering window: read only where the next window is not formed)
    dS_stride = n * d;
  }
  // First application: S_0 = T(X_0).
  const int len0 = window_len(0, m, N, w);
  {
    float* o = dout(0);
    be_.axpy2d(o, len0 * d, 1.0f, dS, dS_stride, nullptr, 0, B, len0 * d);
    back(0, o, din.get(), nullptr);
  }
  be_.acc2d(dX, Nd, 1.0f, din.get(), len0 * d, B, len0 * d);
  weight_grads();

  if (dalpha && m > 1)
    be_.alpha_grad_parts(L.alpha_grad, cache.alpha_dev.get(), parts, static_cast<int>(slots), more_parts,
                         static_cast<int>(more));
}

// ---- CUDA graphs: one forward (and its backward) recorded per shape, replayed when the shape comes again.

LayerStack::~LayerStack() {
  layer_caches_.clear();
  drop_graphs();
}

void LayerStack::drop_graphs() noexcept {
  pending_ = nullptr;
  graphs_.clear();
}

LayerStack::GraphEntry* LayerStack::graph_for(int B, int N, int w, float p, bool keep) {
  if (!graphs_on_) return nullptr;
  ++graph_clock_;
  const Shape now{B, N, w, p};
  for (auto& e : graphs_)
    if (e->shape == now && e->keep == keep) {
      e->last_use = graph_clock_;
      return e.get();
    }
  // A shape is recorded when it comes twice in a row (among calls that keep activations, or among those that
  // do not): a fixed-shape training loop or evaluation records at its second call, while random window widths
  // do not record a graph at every step for a shape that may not come again.
  Shape& last = last_shape_[keep ? 1 : 0];
  const bool again = last == now;
  last = now;
  if (!again) return nullptr;
  // At most kMaxGraphs shapes hold graphs (each holds the memory of a forward's activations).
  if (static_cast<int>(graphs_.size()) >= kMaxGraphs) {
    auto old = std::min_element(graphs_.begin(), graphs_.end(),
                                [](const auto& a, const auto& b) { return a->last_use < b->last_use; });
    if (pending_ == old->get()) pending_ = nullptr;
    graphs_.erase(old);
  }
  auto g = std::make_unique<GraphEntry>(be_);
  g->shape = now, g->keep = keep, g->last_use = graph_clock_;
  const size_t total = static_cast<size_t>(B) * N * cfg_.d;
  g->x = DeviceBuffer(be_, total);
  g->seed = DeviceBuffer(be_, 2);
  if (keep) g->dy = DeviceBuffer(be_, total);
  graphs_.push_back(std::move(g));
  return graphs_.back().get();
}

std::shared_ptr<Tensor> LayerStack::forward_graph(GraphEntry& g, const Tensor& x, uint64_t seed) {
  const Shape& s = g.shape;
  const size_t total = static_cast<size_t>(s.B) * s.N * cfg_.d;
  uint64_t* seed_at = reinterpret_cast<uint64_t*>(g.seed.get());
  be_.copy(g.x.get(), x.f32(), total);
  be_.set_seed(seed_at, seed);
  if (!g.fwd) {
    std::vector<LayerCache> caches(cfg_.layers);
    DeviceBuffer ping, pong;  // (without gradients) released at the end of this block, but the graph's memory
    be_.graph_begin(seed_at);
    try {
      g.y = forward_layers(g.x.get(), s.B, s.N, s.w, s.p, 0, g.keep, caches, ping, pong);
      g.fwd = be_.graph_end();
    } catch (...) {
      be_.graph_abort();
      throw;
    }
    if (g.keep) g.caches = std::move(caches);
  }
  be_.graph_launch(g.fwd);
  auto y = Tensor::create(DType::F32, {s.B, s.N, cfg_.d}, be_.device());
  be_.copy(y->f32(), g.y, total);
  if (g.keep) {
    pending_ = &g;
    cache_B_ = s.B;
    cache_N_ = s.N;
    cache_w_ = s.w;
  }
  return y;
}

std::shared_ptr<Tensor> LayerStack::backward_graph(GraphEntry& g, const Tensor& dy) {
  const Shape& s = g.shape;
  const size_t total = static_cast<size_t>(s.B) * s.N * cfg_.d;
  be_.copy(g.dy.get(), dy.f32(), total);
  auto dx = Tensor::create(DType::F32, {s.B, s.N, cfg_.d}, be_.device());
  if (!g.bwd) {
    DeviceBuffer g1, g2;
    const float* out = nullptr;
    be_.graph_begin(reinterpret_cast<const uint64_t*>(g.seed.get()));
    try {
      out = backward_layers(g.dy.get(), s.B, s.N, s.w, g.caches, true, g1, g2);
      g.bwd = be_.graph_end();
    } catch (const Error& e) {
      be_.graph_abort();
      // The replayed forward's activations are in g.caches: differentiate them without the graph, then stop
      // using graphs in this stack.
      std::fprintf(stderr, "recurrent-transformer: CUDA graphs turned off for this model: %s\n", e.what());
      DeviceBuffer h1, h2;
      out = backward_layers(g.dy.get(), s.B, s.N, s.w, g.caches, false, h1, h2);
      be_.copy(dx->f32(), out, total);
      graphs_on_ = false;
      drop_graphs();
      return dx;
    }
    g.dx = out;
    g.caches.clear();  // their memory stays the graphs'
  }
  be_.graph_launch(g.bwd);
  be_.copy(dx->f32(), g.dx, total);
  return dx;
}

}  // namespace rt
