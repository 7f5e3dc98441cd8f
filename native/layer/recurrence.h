// The sliding-window recurrence of DESIGN.md section 1, written once over the Backend interface:
// L stacked layers, each applying its own block T progressively to windows of width w (forget or
// accumulate), or to the whole sequence when w = 0.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "layer/backend.h"
#include "layer/block.h"

namespace rt {

struct LayerConfig {
  int d = 0, heads = 0, layers = 1, window = 0;
  bool accumulate = false;
  float alpha_init = 0.5f;
  bool alpha_learnable = true;
  bool gelu = true, bias = false;
  float dropout = 0;
  uint64_t seed = 0;

  void validate() const;  // throws rt::Error naming the bad field
};

struct NamedParam {
  std::string name;
  std::shared_ptr<Tensor> value, grad;
};

class LayerStack {
 public:
  LayerStack(const LayerConfig& cfg, Backend& be);
  ~LayerStack();
  LayerStack(const LayerStack&) = delete;
  LayerStack& operator=(const LayerStack&) = delete;

  const LayerConfig& config() const { return cfg_; }
  std::vector<NamedParam>& params() { return params_; }

  // x: float32 [B, N, d]. window < 0 uses the config's. training turns dropout on; keep_for_backward
  // keeps the activations (memory linear in N) or, when false, reuses one cache (memory constant in N).
  // check_finite refuses NaN/Inf input; a trainer turns it off and looks at the loss instead.
  std::shared_ptr<Tensor> forward(const Tensor& x, bool training, uint64_t seed, int window, bool keep_for_backward,
                                  bool check_finite = true);
  // dy: float32 [B, N, d] -> dx; gradients accumulate into the params' grad tensors. Consumes the cache.
  std::shared_ptr<Tensor> backward(const Tensor& dy, bool check_finite = true);
  void zero_grad();
  bool has_cache() const { return !layer_caches_.empty() || pending_; }
  Backend& backend() const { return be_; }
  const BlockShape& shape() const { return shape_; }
  const BlockWeights& weights(int l) const { return lw_[l].w; }
  // clamp(a, 0, 1) of layer l when the variant accumulates, else 0.
  float alpha(int l) const;
  void drop_cache() {
    layer_caches_.clear();
    pending_ = nullptr;
  }

 private:
  struct LayerWeights {
    BlockWeights w;
    BlockGrads g;
    float* alpha;
    float* alpha_grad;
  };
  // What one layer's forward keeps: its input and output sequences (accumulate reads P from them) and
  // one BlockCache per application of T, each a view into the layer's BlockArena.
  struct LayerCache {
    DeviceBuffer input, output;
    BlockArena arena;
    std::vector<BlockCache> apps;
    DeviceBuffer packed;  // the backend's packed weights (block_weights), made by the forward, read by the backward
    // (accumulate) alpha_state's [a, clamp(a, 0, 1)], written by the forward itself in backend memory: the
    // backward's clamp gradient needs a as the forward saw it, and neither pass reads it on the host.
    DeviceBuffer alpha_dev;
  };

  // A forward (and the backward after it) recorded as CUDA graphs for one shape, replayed whenever the shape
  // comes again: the caller's input is copied into x, the seed into seed, and the replay leaves the output at
  // y (memory the graph holds). The activations stay in the graph's memory between steps, so a graph costs
  // the memory of one forward's activations for as long as it is kept (kMaxGraphs shapes, least recently used
  // dropped first).
  struct Shape {
    int B = 0, N = 0, w = -1;
    float p = -1;  // dropout rate
    bool operator==(const Shape& o) const { return B == o.B && N == o.N && w == o.w && p == o.p; }
  };
  struct GraphEntry {
    explicit GraphEntry(Backend& b) : be(b) {}
    ~GraphEntry() {
      be.graph_destroy(fwd);
      be.graph_destroy(bwd);
    }
    GraphEntry(const GraphEntry&) = delete;
    GraphEntry& operator=(const GraphEntry&) = delete;
    Backend& be;
    Shape shape;
    bool keep = false;
    uint64_t last_use = 0;
    void* fwd = nullptr;
    void* bwd = nullptr;
    DeviceBuffer x, seed, dy;
    const float* y = nullptr;
    const float* dx = nullptr;
    std::vector<LayerCache> caches;  // the recording's, until the backward is recorded from them
  };
  static constexpr int kMaxGraphs = 2;

  // Every layer from `in`; returns where the last layer's output is (caches[L-1].output, or ping or pong).
  const float* forward_layers(const float* in, int B, int N, int w, float p, uint64_t seed, bool keep,
                              std::vector<LayerCache>& caches, DeviceBuffer& ping, DeviceBuffer& pong);
  void forward_layer(int l, const float* X, float* Y, int B, int N, int w, float p, uint64_t seed, bool keep,
                     LayerCache& cache);
  // Every layer's backward from dy; returns where dx is (g1 or g2). keep_caches leaves the caches as they are
  // (a recording, which may have to be run again without the graph if it fails).
  const float* backward_layers(const float* dy, int B, int N, int w, std::vector<LayerCache>& caches, bool keep_caches,
                               DeviceBuffer& g1, DeviceBuffer& g2);
  // X is the layer's input sequence as the forward saw it.
  void backward_layer(int l, const float* dY, float* dX, int B, int N, int w, const float* X, LayerCache& cache);
  // The graph entry for this shape (made, to be recorded, when the shape comes twice in a row), or null.
  GraphEntry* graph_for(int B, int N, int w, float p, bool keep);
  std::shared_ptr<Tensor> forward_graph(GraphEntry& g, const Tensor& x, uint64_t seed);
  std::shared_ptr<Tensor> backward_graph(GraphEntry& g, const Tensor& dy);
  void drop_graphs() noexcept;
  // Layer l's weights for block_forward / block_backward, with the backend's packed copy for its fused
  // kernels (held by `packed`) when it has them.
  BlockWeights block_weights(int l, DeviceBuffer& packed) const;

  LayerConfig cfg_;
  Backend& be_;
  BlockShape shape_;
  std::vector<NamedParam> params_;
  std::vector<LayerWeights> lw_;
  std::vector<LayerCache> layer_caches_;
  int cache_B_ = 0, cache_N_ = 0, cache_w_ = 0;
  bool graphs_on_ = false;
  std::vector<std::unique_ptr<GraphEntry>> graphs_;
  GraphEntry* pending_ = nullptr;  // the replayed forward the next backward differentiates
  uint64_t graph_clock_ = 0;
  Shape last_shape_[2];  // the last call's shape, without and with activations kept
};

}  // namespace rt
