// The interface the recurrence is written against, once, for every device. A backend owns memory
// (alloc/free of float buffers on its device) and runs the kernels of one transformer block on it.
// Pointers passed in are the backend's own memory. Strided 2-D helpers exist because a window is a
// slice along time of a [B, N, d] tensor: B rows of len*d floats, N*d apart.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>

#include <vector>

#include "core/alpha.h"
#include "core/error.h"
#include "core/op_types.h"
#include "core/tensor.h"

namespace rt {

struct BlockShape;
struct BlockWeights;
struct BlockCache;
struct BlockGradStash;

// One strided 2-D update of Backend::axpy2d_batch: acc ? dst += alpha * x : dst = alpha * x + (y or 0), over
// rows x cols with the strides of axpy2d / acc2d. With `scale` set, alpha is multiplied by *scale (backend
// memory), read when the op runs: a captured CUDA graph replays the op with whatever alpha is then. With
// x2 set, alpha * x2 is added after that, rounded as a second acc2d would: two sources into the same rows
// (P's gradient from both halves of a window's input) in one op, which a batch could not hold as two.
struct Axpy2dOp {
  float* dst;
  size_t ds;
  float alpha;
  const float* x;
  size_t xs;
  const float* y;
  size_t ys;
  size_t rows, cols;
  bool acc;
  const float* scale = nullptr;
  const float* x2 = nullptr;
  size_t x2s = 0;
  void* twin = nullptr;  // bf16 copy of dst, same strides (set by a backend's axpy2d_batch_twin)
};

// How a window pair application's input x [B, n, d] is formed from the recurrence's tensors (each a batch
// of row blocks, one per element, with the given row strides in floats): rows t < ns are S's rows t plus
// alpha * P's rows t, rows t >= ns are X's rows t - ns plus alpha * P's rows t - ns (no P: S's and X's rows
// alone; alpha: backend memory, as Axpy2dOp::scale). Besides, Ysrc's rows t < ns are copied into Y's (no Y:
// nothing), a copy the recurrence needs once per window and that reads what x's rows read. block_forward
// hands it to a fused in-chain, which forms x as it loads its tile; other paths run glue_ops' batch first.
struct WindowGlue {
  const float *S = nullptr, *X = nullptr, *P = nullptr, *alpha = nullptr, *Ysrc = nullptr;
  float* Y = nullptr;
  size_t Ss = 0, Xs = 0, Ps = 0, Ys = 0, Ysrcs = 0;
  int ns = 0;
};

// The backward's counterpart, for window k >= 2 of recurrence.cc's backward: window k-1's output gradient
// [B, n, d] formed from din, window k's input gradient (rows of ns + nx per element), as a fused out-chain
// reads it. Rows t < ns are dY's rows t plus alpha * din's rows t and, for t < nx, plus alpha * din's rows
// ns + t (no alpha, forget: dY's rows alone); rows t >= ns are din's rows t - ns. Besides, dX's rows t < nx
// get din's rows ns + t added, and with P each block of the fused chain leaves its share of alpha's
// gradient, the sum of P's rows t < ns times din's rows t and (t < nx) ns + t, in parts[block]; glue_ops
// (layer/block.h) makes the same as an axpy2d batch with its dot pair for the other paths.
struct BackGlue {
  const float *din = nullptr, *dY = nullptr, *alpha = nullptr, *P = nullptr;
  float* dX = nullptr;
  double* parts = nullptr;
  size_t dins = 0, dYs = 0, Ps = 0, dXs = 0;
  int ns = 0, nx = 0;
  // The glue that moves din alone (no alpha, no P): din's rows to dy's and dX's, dY's into dy.
  static BackGlue moving(const float* din, size_t dins, const float* dY, size_t dYs, float* dX, size_t dXs, int ns,
                         int nx) {
    BackGlue g;
    g.din = din;
    g.dins = dins;
    g.dY = dY;
    g.dYs = dYs;
    g.dX = dX;
    g.dXs = dXs;
    g.ns = ns;
    g.nx = nx;
    return g;
  }
};

// Where ln_1's backward of window k >= 2 puts its input gradient din (rows of ns + nx per element) when the
// next window's BackGlue would only move it (forget: no alpha, no P), so that no din is written and read
// back: din's rows t < ns become window k-1's output gradient dy's rows ns + t, rows t >= ns are added to
// dX's rows t - ns, and dY's rows t < ns are copied into dy's rows t (dy: [B, 2 ns, d], row strides dys,
// dYs, dXs in floats). dy16: dy's bf16 copy to keep (Backend::keep_bf16_begin), or null.
struct BackScatter {
  float* dy = nullptr;
  const float* dY = nullptr;
  float* dX = nullptr;
  void* dy16 = nullptr;
  size_t dys = 0, dYs = 0, dXs = 0;
  int ns = 0, nx = 0;
};

// The operands of one Backend::dot2d.
struct Dot2dArgs {
  const float* a;
  size_t as;
  const float* b;
  size_t bs;
  size_t rows, cols;
};
// dot2d(d[0]) + dot2d(d[1]), computed within an axpy2d_batch (alpha's gradient of one backward window rides
// on that window's glue launch) and left in part[0 .. dot_parts()), backend memory, in the backend's own
// split; alpha_grad_parts sums the windows' parts in a fixed order: the same bits every run, graph or not.
struct DotPairOp {
  Dot2dArgs d[2];
  double* part;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;
  // Where alloc() puts memory, and so where the tensors of a LayerStack over this backend live.
  virtual Device device() const { return Device::CPU; }
  // Waits until every operation queued on the backend has finished (a no-op on the CPU, whose kernels
  // return when done). The addon calls it before handing host values (a loss, a norm) to JavaScript.
  virtual void synchronize() {}
  // Ends a call whose results stay on the backend (device tensors): the CUDA backend returns at once,
  // leaving the work queued on its one stream, so that JavaScript's next call is issued while this one
  // still runs (the next host read waits for it, and reports a kernel fault if one happened).
  // RT_CUDA_SYNC=1 waits at the end of every call instead.
  virtual void end_call() {}

  virtual float* alloc(size_t n) = 0;  // n floats, uninitialised; throws rt::Error when out of memory
  virtual void release(float* p) = 0;
  virtual void zero(float* p, size_t n) = 0;
  virtual void copy(float* dst, const float* src, size_t n) = 0;
  // Between host memory and the backend's (plain copies on the CPU).
  virtual void upload(float* dst, const float* host, size_t n) = 0;
  virtual void download(float* host, const float* src, size_t n) = 0;

  // For r in [0, rows): dst[r*ds .. +cols] = alpha * x[r*xs .. +cols] + (y ? y[r*ys .. +cols] : 0).
  virtual void axpy2d(float* dst, size_t ds, float alpha, const float* x, size_t xs, const float* y,
                      size_t ys, size_t rows, size_t cols) = 0;
  // For r in [0, rows): dst[r*ds .. +cols] += alpha * x[r*xs .. +cols].
  virtual void acc2d(float* dst, size_t ds, float alpha, const float* x, size_t xs, size_t rows,
                     size_t cols) = 0;
  // Up to kMaxAxpyBatch independent axpy2d / acc2d updates (no op's dst overlaps another op's dst or
  // sources), and optionally a dot pair (whose operands no op writes); a device backend runs them as one
  // launch (the recurrence's per-window glue is a handful of tiny copies, each otherwise a launch of its own).
  static constexpr int kMaxAxpyBatch = 4;
  virtual void axpy2d_batch(const Axpy2dOp* ops, int count, const DotPairOp* dot) {
    for (int i = 0; i < count; ++i) {
      const Axpy2dOp& o = ops[i];
      const float a = o.scale ? o.alpha * *o.scale : o.alpha;
      if (o.acc) acc2d(o.dst, o.ds, a, o.x, o.xs, o.rows, o.cols);
      else axpy2d(o.dst, o.ds, a, o.x, o.xs, o.y, o.ys, o.rows, o.cols);
      if (o.x2) acc2d(o.dst, o.ds, a, o.x2, o.x2s, o.rows, o.cols);
    }
    if (dot) {
      const Dot2dArgs &p = dot->d[0], &q = dot->d[1];
      *dot->part = dot2d(p.a, p.as, p.b, p.bs, p.rows, p.cols) + dot2d(q.a, q.as, q.b, q.bs, q.rows, q.cols);
    }
  }
  void axpy2d_batch(const Axpy2dOp* ops, int count) { axpy2d_batch(ops, count, nullptr); }
  // axpy2d_batch, where the ops whose rows lie wholly in [src, src + n) also write the bf16 copy of what they write
  // there, a twin of src that the next operation may take (a device backend's; the default runs the batch).
  virtual void axpy2d_batch_twin(const Axpy2dOp* ops, int count, const DotPairOp* dot, const float* /*src*/,
                                 size_t /*n*/) {
    axpy2d_batch(ops, count, dot);
  }
  // Sum over r, c of a[r*as + c] * b[r*bs + c], accumulated in double.
  virtual double dot2d(const float* a, size_t as, const float* b, size_t bs, size_t rows, size_t cols) = 0;
  // How many doubles a DotPairOp writes at its part.
  virtual int dot_parts() const { return 1; }
  // True when every value is finite (input validation).
  virtual bool all_finite(const float* x, size_t n) = 0;

  // The kernels of one block; semantics as in cpu/kernels.h.
  virtual void linear_forward(const float* x, const float* W, const float* b, float* y, int n, int in,
                              int out) = 0;
  virtual void linear_backward(const float* x, const float* W, const float* dy, float* dx, float* dW,
                               float* db, int n, int in, int out) = 0;
  // y = x W^T + b + res (a residual connection; y must not be res). A device backend fuses the add into
  // the product's epilogue; the default runs linear_forward and then the add.
  virtual void linear_forward_res(const float* x, const float* W, const float* b, const float* res, float* y, int n,
                                  int in, int out) {
    linear_forward(x, W, b, y, n, in, out);
    axpy2d(y, 0, 1.0f, y, 0, res, 0, 1, static_cast<size_t>(n) * out);
  }
  virtual void layernorm_forward(const float* x, const float* w, const float* b, float* y, float* mean,
                                 float* rstd, int n, int d) = 0;
  // dy_half: dy holds bf16 behind its float pointer (block_dh_half's dh1, dh2).
  virtual void layernorm_backward(const float* x, const float* w, const float* mean, const float* rstd,
                                  const float* dy, float* dx, float* dw, float* db, int n, int d,
                                  bool dy_half = false) = 0;
  // dx = dres + (layernorm_backward's dx contribution) (written, not accumulated; dres may be dx itself);
  // dw, db accumulate as in layernorm_backward. The residual connection's gradient passing round the
  // LayerNorm, in one pass on a device backend; the default copies then accumulates.
  // parts (where block_ln_parts): also leave these rows' dw and db sums as layernorm_part_rows(n, d) rows of
  // partial sums there; the default leaves one, their whole sums.
  virtual void layernorm_backward_res(const float* x, const float* w, const float* mean, const float* rstd,
                                      const float* dy, const float* dres, float* dx, float* dw, float* db, int n,
                                      int d, bool dy_half = false, LnParts parts = {}) {
    if (dx != dres) copy(dx, dres, static_cast<size_t>(n) * d);
    layernorm_backward(x, w, mean, rstd, dy, dx, dw, db, n, d, dy_half);
    if (parts.w) {
      zero(parts.w, d);
      zero(parts.b, d);
      layernorm_backward(x, w, mean, rstd, dy, nullptr, parts.w, parts.b, n, d, dy_half);
    }
  }
  // Whether the block's LayerNorms leave their dw and db per application as partial sums (LnParts) in their
  // backward passes, added up once by layernorm_parts_finish, rather than in a pass of their own over all rows.
  virtual bool block_ln_parts(const BlockShape&) const { return false; }
  virtual int layernorm_part_rows(int /*n*/, int /*d*/) const { return 1; }
  // dw += the sum of `rows` rows of partial sums (in order), db likewise.
  virtual void layernorm_parts_finish(LnParts parts, int rows, int d, float* dw, float* db) {
    for (int r = 0; r < rows; ++r) {
      const size_t o = static_cast<size_t>(r) * d;
      acc2d(dw, d, 1.0f, parts.w + o, d, 1, d);
      if (db) acc2d(db, d, 1.0f, parts.b + o, d, 1, d);
    }
  }
  // Whether attention_backward recomputes a window of n tokens' probabilities from qkv, so that probs may be null
  // in both calls (the forward then writes none): a training arena keeps no probs for such windows (BlockArena).
  virtual bool attention_recomputes_probs(const BlockShape&, int /*n*/) const { return false; }
  // qkv_half: qkv holds bf16 behind its float pointer (block_qkv_half).
  virtual void attention_forward(const float* qkv, float* probs, float* out, int B, int n, int d, int H,
                                 float p, uint64_t seed, uint64_t stream, bool qkv_half) = 0;
  // dout_half: dout holds bf16 behind its float pointer (block_datt_half).
  virtual void attention_backward(const float* qkv, const float* probs, const float* dout, float* dqkv,
                                  int B, int n, int d, int H, float p, uint64_t seed, uint64_t stream,
                                  bool qkv_half, bool dout_half) = 0;
  virtual void attention_cached(const float* qkv, int cap, int B, int t0, int c, int d, int H, float* out) = 0;
  // Row-wise form for sequences at different positions (continuous batching): row r is the query at
  // position t[r] of the sequence in cache slot slot[r]. The default runs one attention_cached per row;
  // a backend may fuse it.
  virtual void attention_cached_rows(const float* qkv, int cap, const int* slot, const int* t, int S, int d, int H,
                                     float* out) {
    const size_t seq = static_cast<size_t>(cap) * 3 * d;
    for (int r = 0; r < S; ++r) attention_cached(qkv + slot[r] * seq, cap, 1, t[r], 1, d, H, out + static_cast<size_t>(r) * d);
  }
  // x_half, dy_half: x, dy hold bf16 behind their float pointers (block_f_half's f and dg).
  virtual void activation_forward(bool gelu, const float* x, float* y, size_t n, bool x_half = false) = 0;
  virtual void activation_backward(bool gelu, const float* x, const float* dy, float* dx, size_t n,
                                   bool x_half = false, bool dy_half = false) = 0;
  virtual void dropout_forward(const float* x, float* y, size_t n, float p, uint64_t seed,
                               uint64_t stream) = 0;
  virtual void dropout_backward(const float* dy, float* dx, size_t n, float p, uint64_t seed,
                                uint64_t stream) = 0;

  // The products' weights converted once per layer pass, for a backend whose products would otherwise
  // convert them at every window application (the CUDA backend's bf16 copies for its Hopper GEMM):
  // weight_copies_size floats (0: none) at dst, which weight_copies_begin fills in the layout of the forward's
  // products or the backward's; the products of those weights on this thread use them until
  // weight_copies_end. The caller keeps dst until the work queued meanwhile has run (stream order).
  virtual size_t weight_copies_size(const BlockShape&) const { return 0; }
  virtual void weight_copies_begin(const BlockShape&, const BlockWeights&, bool /*backward*/, float* /*dst*/) {}
  virtual void weight_copies_end() noexcept {}

  // ---- Fused block chains (layer/block.cc). A window application of a small block is a few microseconds
  // of work per kernel, so launches, not arithmetic, set its time: a backend that returns true from
  // fused_block(s) runs each row-local chain of the block as one kernel, and block_forward / block_backward
  // call these four instead of the separate ops (attention stays separate: it mixes rows). Each writes
  // exactly what the separate ops would (the cache, the gradient stash), so the rest of the layer cannot
  // tell the difference. The defaults are never reached (fused_block is false) and say so if they are.
  virtual bool fused_block(const BlockShape&) const { return false; }
  // The fused kernels read the block's matrices from a copy in the layout (and precision) they want, made
  // once per layer forward (its backward reuses it): fused_weights_size floats of backend memory, filled by
  // pack_fused_weights, handed to the four ops as BlockWeights::packed.
  virtual size_t fused_weights_size(const BlockShape&) const { return 0; }
  // The doubles of alpha's gradient a fused out-chain over `rows` rows leaves (BackGlue::parts).
  virtual int fused_parts(int /*rows*/) const { return 0; }
  virtual void pack_fused_weights(const BlockShape&, const BlockWeights&, float* /*dst*/) { no_fused(); }
  // cache.x -> h1, mean1, rstd1, qkv; with glue, cache.x is first written as glue says (and its Y copy made).
  virtual void block_in_forward(const BlockShape&, const BlockWeights&, const BlockCache&,
                                const WindowGlue* /*glue*/) {
    no_fused();
  }
  // Whether the layer must keep f (c_fc's output) for the backward; the CUDA fused chains under relu take
  // relu' from g instead, and the arena then holds no f.
  virtual bool block_keeps_f(const BlockShape&) const { return true; }
  // Whether the fused chains keep h1, qkv, h2 and g (BlockCache) and dg, dqkv (BlockGradStash) as bf16
  // rather than float32 (BlockCache::half, BlockGradStash::half): they are read back only as operands of bf16
  // products (the weight products; g also for relu's sign, qkv by the attention, dqkv by in_backward), which
  // round them to bf16 anyway, so storing them rounded halves their bytes for the same weight gradients (the
  // biases of c_fc and c_attn excepted, summed from the rounded dg and dqkv). The layer then sizes those
  // buffers in bf16 elements, and block_weight_grads hands them to linear_weight_grad as bf16.
  virtual bool block_half(const BlockShape&) const { return false; }
  // The unfused path's counterpart of block_half: whether the layer keeps bf16 copies of h1, att, h2, g
  // (BlockCache::b16) and of dqkv, da, dg (BlockGradStash::b16) beside the float32 buffers, for
  // block_weight_grads. Their producers write such a copy for the next product anyway (a twin); kept, it
  // halves the weight products' reads, for the same dW bits (the biases of c_attn, attn c_proj and c_fc
  // summed from the rounded gradients).
  virtual bool block_keeps_bf16(const BlockShape&) const { return false; }
  // Around the one operation that writes src (n floats): after keep_bf16_end, dst holds src rounded to bf16.
  // only: src is read by nothing but the product right after (and through dst by the weight products), so the
  // backend may leave src's float32 values unwritten and have that product read dst.
  virtual void keep_bf16_begin(const float* /*src*/, void* /*dst*/, size_t /*n*/, bool /*only*/) {}
  // Whether keep_bf16_begin's only is granted for this shape (then the layer allocates no float32 buffers for
  // those outputs: their pointers only name them, pointing at the bf16 copies).
  virtual bool block_bf16_only(const BlockShape&) const { return false; }
  // Whether the unfused path keeps qkv as bf16 alone for windows of these sizes (a training arena's): c_attn's
  // product writes it rounded (linear_forward_half) and the attention reads it so. Only where the attention
  // rounds q, k, v to bf16 itself for every window (its tensor cores), so that the results keep their bits.
  virtual bool block_qkv_half(const BlockShape&, const std::vector<int>& /*n*/) const { return false; }
  // Whether the unfused path keeps f (c_fc's output) and dg (the gradient at the activation's output) as bf16
  // alone: the products write them rounded (linear_forward_half, linear_backward_dx_half) and the activation
  // reads them so (as a bf16 autocast would), writing its output's bf16 copy alone. Only where block_bf16_only
  // holds (so never with block_half), which that last needs.
  virtual bool block_f_half(const BlockShape&) const { return false; }
  virtual void linear_backward_dx_half(const float* /*W*/, const float* /*dy*/, float* /*dx*/, int /*n*/, int /*in*/,
                                       int /*out*/) {
    throw Error(std::string(name()) + ": has no bf16 outputs");
  }
  virtual void linear_forward_half(const float* /*x*/, const float* /*W*/, const float* /*b*/, float* /*y*/,
                                   int /*n*/, int /*in*/, int /*out*/) {
    throw Error(std::string(name()) + ": has no bf16 outputs");
  }
  // Whether the unfused path, where f is bf16 (block_f_half), runs c_fc and its activation as one operation
  // (linear_forward_act_half) rather than a product and a pass.
  virtual bool block_fc_act(const BlockShape&) const { return false; }
  // y = x W^T + b written as bf16 (as linear_forward_half) and act(y) (GELU or ReLU of y's rounded values, as
  // activation_forward with x_half) written as act_y's bf16 copy alone: the copy keep_bf16_begin(act_y, ...,
  // only) asked for, which the product after claims.
  // dgelu (block_keeps_dgelu): y holds GELU'(y) instead, GELU's derivative at y's rounded values.
  virtual void linear_forward_act_half(const float* /*x*/, const float* /*W*/, const float* /*b*/, float* /*y*/,
                                       float* /*act_y*/, int /*n*/, int /*in*/, int /*out*/, bool /*gelu*/,
                                       bool /*dgelu*/) {
    throw Error(std::string(name()) + ": has no fused activation products");
  }
  // Whether the unfused path forms ln_1's input from the window glue in ln_1's own pass
  // (layernorm_forward_glue) rather than a glue batch first.
  virtual bool block_ln_glue(const BlockShape&) const { return false; }
  // cache x [B, n, d] formed as glue says (glue_ops' batch, Y's copy included), then layernorm_forward of it.
  virtual void layernorm_forward_glue(const WindowGlue& /*glue*/, float* /*x*/, int /*B*/, int /*n*/, const float* /*w*/,
                                      const float* /*b*/, float* /*y*/, float* /*mean*/, float* /*rstd*/, int /*d*/) {
    throw Error(std::string(name()) + ": has no layernorm_forward_glue");
  }
  // Whether ln_1's backward may scatter its input gradient as BackScatter says (layernorm_backward_scatter) in
  // place of the next window's BackGlue batch.
  virtual bool block_ln_back_glue(const BlockShape&) const { return false; }
  // layernorm_backward_res with dx = din, scattered as sc says (B elements of sc.ns + sc.nx rows).
  // (layer/block.h's layernorm_backward_scatter_by_glue does it with a backend's other operations.)
  virtual void layernorm_backward_scatter(const float* /*x*/, const float* /*w*/, const float* /*mean*/,
                                          const float* /*rstd*/, const float* /*dy*/, const float* /*dres*/,
                                          const BackScatter& /*sc*/, int /*B*/, int /*d*/, bool /*dy_half*/,
                                          LnParts /*parts*/ = {}) {
    throw Error(std::string(name()) + ": has no layernorm_backward_scatter");
  }
  // Whether the unfused path (where block_keeps_bf16 holds) keeps a bf16 copy of dm too, the gradient at mlp
  // c_proj's output (BlockGradStash::b16.dm): written by the operation that writes dm (the window glue, with
  // axpy2d_batch_twin), taken by mlp c_proj's dx product in place of a cast, and read by its weight product.
  virtual bool block_keeps_dm(const BlockShape&) const { return false; }
  // Whether the unfused path (where block_f_half holds) keeps dh1 and dh2, the gradients at the LayerNorms'
  // outputs, as bf16: the dx products of c_attn and c_fc write them rounded (linear_backward_dx_half), as a
  // bf16 autocast would hold them, and the LayerNorm backward (dx per window, dw and db over all rows) reads
  // them so (dy_half).
  virtual bool block_dh_half(const BlockShape&) const { return false; }
  // Whether the unfused path, where f is bf16 (block_f_half) and the cache's qkv is (the tensor-core attention
  // for every window), writes datt, the gradient at the attention's output, as bf16 alone: attn c_proj's dx
  // product writes it rounded (linear_backward_dx_half), as a bf16 autocast would hold it, and the attention
  // backward, its only reader, reads it so (dout_half).
  virtual bool block_datt_half(const BlockShape&) const { return false; }
  // Whether the unfused path, where f and dg are bf16 (block_f_half), runs mlp c_proj's dx product and the
  // activation's backward as one operation (linear_backward_dx_act_half).
  virtual bool block_fc_dact(const BlockShape&) const { return false; }
  // Whether the unfused path, where block_fc_act and block_fc_dact both hold and the activation is GELU, keeps
  // GELU'(f) in f's buffer rather than f (BlockCache::f_dgelu): c_fc's product writes it beside GELU(f), and mlp
  // c_proj's dx product multiplies by it rather than working GELU' out of f; f itself has no other reader.
  virtual bool block_keeps_dgelu(const BlockShape&) const { return false; }
  // dx = act'(x) (dy W), with dy W rounded to bf16 first (as linear_backward_dx_half writes it and
  // activation_backward with x_half and dy_half reads it), written as dx's bf16 copy alone (the copy
  // keep_bf16_begin(dx, ..., only) asked for). x: bf16 behind its float pointer (block_f_half's f).
  // dgelu (block_keeps_dgelu): x holds GELU'(f) as linear_forward_act_half wrote it, and dx = x (dy W).
  virtual void linear_backward_dx_act_half(const float* /*W*/, const float* /*dy*/, const float* /*x*/, float* /*dx*/,
                                           int /*n*/, int /*in*/, int /*out*/, bool /*gelu*/, bool /*dgelu*/) {
    throw Error(std::string(name()) + ": has no fused activation products");
  }
  virtual void keep_bf16_end() {}
  // The window's attention between the fused chains (attention_forward / attention_backward on the cache's
  // and stash's buffers, in the precisions they keep): cache.qkv -> probs, att with the cache's dropout;
  // datt -> st.dqkv.
  virtual void block_attention_forward(const BlockShape&, const BlockCache&) { no_fused(); }
  virtual void block_attention_backward(const BlockShape&, const BlockCache&, const BlockGradStash&,
                                        const float* /*datt*/) {
    no_fused();
  }
  // dW += dy^T x and db += dy's column sums over n rows, as linear_backward computes them, where x_half /
  // dy_half say that the operand holds bf16 (BlockCache::b16 and BlockGradStash::b16). Only a backend whose
  // block_half or block_keeps_bf16 can return true takes bf16.
  virtual void linear_weight_grad(const void* x, bool x_half, const void* dy, bool dy_half, float* dW, float* db,
                                  int n, int in, int out) {
    if (x_half || dy_half) throw Error(std::string(name()) + ": keeps no bf16 operands");
    linear_backward(static_cast<const float*>(x), nullptr, static_cast<const float*>(dy), nullptr, dW, db, n, in, out);
  }
  // Whether block_out_forward also computes the window's attention (cache.qkv -> probs, att) for this
  // shape, so that attention_forward is not called before it.
  virtual bool block_out_attention(const BlockShape&, const BlockCache&) const { return false; }
  // cache.att, cache.x -> x2, h2, mean2, rstd2, f, g and the block's output y (with the cache's dropout).
  virtual void block_out_forward(const BlockShape&, const BlockWeights&, const BlockCache&, float* /*y*/) {
    no_fused();
  }
  // dy -> st.dm (unless it is dy and there is no dropout), st.dg, st.dh2, dx2 (x2's gradient), st.da (only
  // with dropout: without, dx2 is st.da) and datt, the gradient at the attention's output. With glue, dy is
  // first written as glue says (with its dX rows and alpha's parts).
  virtual void block_out_backward(const BlockShape&, const BlockWeights&, const BlockCache&, const BlockGradStash&,
                                  float* /*dy*/, float* /*dx2*/, float* /*datt*/, const BackGlue* /*glue*/) {
    no_fused();
  }
  // st.dqkv, dx2 -> st.dh1 and dx = dx2 + ln_1's input gradient.
  virtual void block_in_backward(const BlockShape&, const BlockWeights&, const BlockCache&, const BlockGradStash&,
                                 const float* /*dx2*/, float* /*dx*/) {
    no_fused();
  }

  // ---- alpha, kept in backend memory, so that no host read sits inside a forward or backward (a CUDA
  // graph replays both; the defaults work on host memory: the CPU backend's). st[0] = *param (alpha as
  // stored), st[1] = alpha_used(st[0]) (core/alpha.h).
  virtual void alpha_state(float* st, const float* param) {
    st[0] = *param;
    st[1] = alpha_used(st[0]);
  }
  // *grad += float(dalpha) where the clamp passes the gradient (alpha_passes_grad(st[0])), dalpha the sum, slot
  // 0 first, of the values of `slots` dot pairs whose parts lie dot_parts() apart from `parts` (here one
  // double each, as the default axpy2d_batch leaves them), then of the `count` doubles at `more` in order
  // (the fused out-chains' shares, BackGlue::parts).
  virtual void alpha_grad_parts(float* grad, const float* st, const double* parts, int slots,
                                const double* more = nullptr, int count = 0) {
    double dalpha = 0;
    for (int j = 0; j < slots; ++j) dalpha += parts[j];
    for (int j = 0; j < count; ++j) dalpha += more[j];
    if (alpha_passes_grad(st[0])) *grad += static_cast<float>(dalpha);
  }
  // *dst = seed, in the backend's order of work (dst: one uint64 in backend memory, two floats of alloc).
  virtual void set_seed(uint64_t* dst, uint64_t seed) { *dst = seed; }

  // ---- CUDA graphs (layer/recurrence.cc). A device backend whose launches cost more than the small kernels
  // they start can record a forward or backward once and replay it: graph_begin starts recording (nothing
  // runs; every dropout mask draws its seed from *seed, in backend memory, instead of the value passed in;
  // every block alloc hands out stays the graph's until graph_destroy, whoever releases it), graph_end
  // returns the recorded graph, graph_abort ends a recording that failed. A replay reads and writes the
  // very addresses the recording saw.
  virtual bool graphs() const { return false; }
  virtual void graph_begin(const uint64_t* /*seed*/) { throw Error(std::string(name()) + ": has no graphs"); }
  virtual void* graph_end() { throw Error(std::string(name()) + ": has no graphs"); }
  virtual void graph_abort() noexcept {}
  virtual void graph_launch(void* /*graph*/) { throw Error(std::string(name()) + ": has no graphs"); }
  virtual void graph_destroy(void* /*graph*/) noexcept {}

  // ---- The model's ops around the layer stack (cpu/embedding.cc, softmax_xent.cc, adamw.cc and their
  // cuda/ mirrors); semantics as in cpu/kernels.h. Tokens and targets are HOST int32 arrays already checked
  // against the vocabulary by the caller: they are small, are made by JavaScript, and a device backend
  // copies them over itself. `fp32` picks float32 matrix products on a device whose default is bf16.
  virtual void embedding_forward(const int32_t* tokens, const float* wte, const float* wpe, float* out, int B, int N,
                                 int d, int V, float p, uint64_t seed, uint64_t stream) = 0;
  virtual void embedding_backward(const int32_t* tokens, const float* dout, float* dwte, float* dwpe, int B, int N,
                                  int d, int V, float p, uint64_t seed, uint64_t stream) = 0;
  // The head and its loss, with the loss and the hit count left where the backend computed them: the
  // returned function reads them (on a device, waiting for it then), so that the caller can queue more work
  // in between (the backward, whatever the loss).
  virtual std::function<XentResult()> head_xent(const float* Y, const float* lnw, const float* lnb, const float* W,
                                                const int32_t* targets, int B, int N, int d, int V, int P,
                                                int ignore_index, float* dY, float* dlnw, float* dlnb, float* dW,
                                                bool fp32) = 0;
  virtual void head_logits(const float* Y, const float* lnw, const float* lnb, const float* W, int B, int N, int d, int V,
                           int P, float* logits, bool fp32) = 0;
  // One optimizer step over every tensor: the global gradient norm (double, fixed order), then, when it is
  // finite, clipping to max_norm (when > 0), the AdamW update of each tensor at step *count + 1 (h.step is
  // ignored), and *count advanced. `count` (one int32, the steps applied so far) lives where the tensors do:
  // on a device the skip decision never leaves it, so nothing waits. The returned function reads the norm
  // (on a device, waiting for the step then), as head_xent's does.
  virtual std::function<AdamWResult()> adamw_step(const std::vector<AdamWTensor>& tensors, AdamWHyper h,
                                                  double max_norm, int32_t* count) = 0;
 private:
  [[noreturn]] void no_fused() const { throw Error(std::string(name()) + ": has no fused block kernels"); }
};

Backend& cpu_backend();
#ifdef RT_CUDA
// The CUDA backend (cuda/backend.cu), created at first use; throws rt::Error naming the reason when no
// usable GPU or driver is there. fp32 (or RT_CUDA_FP32=1 in the environment) runs the matrix products in
// float32 instead of bf16 on the tensor cores, for exact checks. Declared only in builds with CUDA.
Backend& cuda_backend(bool fp32 = false);
#endif

// A buffer of the backend's memory that frees itself (RAII over alloc/release).
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(Backend& be, size_t n) : be_(&be), n_(n), p_(n ? be.alloc(n) : nullptr) {}
  ~DeviceBuffer() { reset(); }
  DeviceBuffer(DeviceBuffer&& o) noexcept : be_(o.be_), n_(o.n_), p_(o.p_) { o.p_ = nullptr; o.n_ = 0; }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) { reset(); be_ = o.be_; n_ = o.n_; p_ = o.p_; o.p_ = nullptr; o.n_ = 0; }
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  float* get() const { return p_; }
  size_t size() const { return n_; }
  void reset() { if (p_) be_->release(p_); p_ = nullptr; n_ = 0; }

 private:
  Backend* be_ = nullptr;
  size_t n_ = 0;
  float* p_ = nullptr;
};

}  // namespace rt
