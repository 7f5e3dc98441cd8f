// One pre-LN transformer block T (nanoGPT): x = x + Attn(LN1(x)); x = x + MLP(LN2(x)), applied to a
// batch of B sequences of n tokens, written once over the Backend interface.
#pragma once
#include <cstdint>
#include <vector>

#include "layer/backend.h"

namespace rt {

struct BlockShape {
  int d = 0;
  int heads = 0;
  bool gelu = true;
  bool bias = false;
};

// Pointers into the backend's memory; biases are null when the block has none. packed: the backend's own
// copy of the matrices for its fused kernels (Backend::pack_fused_weights), made by the layer once per
// forward and kept for its backward; null runs the separate kernels.
struct BlockWeights {
  const float *ln1_w, *ln1_b, *attn_w, *attn_b, *attn_proj_w, *attn_proj_b;
  const float *ln2_w, *ln2_b, *fc_w, *fc_b, *mlp_proj_w, *mlp_proj_b;
  const float* packed = nullptr;
};
struct BlockGrads {
  float *ln1_w, *ln1_b, *attn_w, *attn_b, *attn_proj_w, *attn_proj_b;
  float *ln2_w, *ln2_b, *fc_w, *fc_b, *mlp_proj_w, *mlp_proj_b;
};

// What one application keeps for its backward: per token 16*d floats (x, h1, qkv, att, x2, h2, f, g)
// plus heads*n attention probabilities (none where the backend recomputes them: probs null) and 4
// statistics. The pointers are views into a BlockArena: a layer's (training: every application kept), or
// one of a single application of the largest n (the inference path: one cache reused for every application).
struct BlockCache {
  int B = 0, n = 0;       // the current application's shape (n <= capacity)
  int capacity = 0;       // tokens per sequence the buffers can hold
  float *x = nullptr, *h1 = nullptr, *mean1 = nullptr, *rstd1 = nullptr, *qkv = nullptr, *probs = nullptr,
        *att = nullptr, *x2 = nullptr, *h2 = nullptr, *mean2 = nullptr, *rstd2 = nullptr, *f = nullptr,
        *g = nullptr;
  float p = 0;            // dropout rate used in forward (0 when not training)
  uint64_t seed = 0, stream = 0;
  bool half = false;      // h1, qkv, h2 and g hold bf16 (Backend::block_half), behind their float pointers
  bool qkv_half = false;  // qkv holds bf16 (half, or Backend::block_qkv_half on the unfused path)
  bool f_half = false;    // f holds bf16 (Backend::block_f_half on the unfused path)
  bool f_dgelu = false;   // f holds GELU'(c_fc's output), not the output (Backend::block_keeps_dgelu)
  // The bf16 values of the weight products' operands h1, att, h2, g, or nulls: the buffers themselves where
  // half, or the copies of Backend::block_keeps_bf16.
  struct Bf16 {
    void *h1 = nullptr, *att = nullptr, *h2 = nullptr, *g = nullptr;
  } b16;
};

// Every application's BlockCache of one layer (training), one buffer per field, application k's B*n_k
// rows at a running offset: the Linear inputs h1, att, h2, g of all applications are then contiguous,
// and each shared weight's gradient sum_k dy_k^T x_k is one product over all rows (block_weight_grads).
// Memory is linear in N: with w > 0 the m+1 applications hold exactly 2N tokens per sequence (N when
// w = 0), so per token of the sequence 2 * (16*d + 4) floats plus at most 4*heads*w attention
// probabilities (sum_k n_k^2 <= 2w * 2N; none for the windows whose backward recomputes them,
// Backend::attention_recomputes_probs: the CUDA backend's bf16 tensor-core shapes), per layer (w = 0: one
// application of N tokens, 16*d + 4 floats and heads*N probabilities per token, x being the layer's input
// itself). Those are float32 counts: bf16
// buffers (Backend::block_half) take half as much, f none where the backend keeps none (half where it keeps
// f and dg in bf16: Backend::block_f_half), and the bf16 copies
// of Backend::block_keeps_bf16 add 3.5*d floats' worth per kept token, and replace h1, h2 and g where the
// backend writes those alone (Backend::block_bf16_only: 6*d floats fewer).
struct BlockArena {
  int B = 0;
  std::vector<int> n;            // tokens per sequence of each application
  std::vector<size_t> row;       // first row (of B * n_k) of each application
  // First float of each application's probabilities, or kNoProbs where the backend recomputes them
  // (Backend::attention_recomputes_probs: BlockCache::probs is then null).
  static constexpr size_t kNoProbs = static_cast<size_t>(-1);
  std::vector<size_t> prob;
  size_t rows = 0;               // B * sum n_k
  bool half = false;             // h1, qkv, h2, g in bf16 (Backend::block_half)
  bool only = false;             // h1, h2, g kept as their bf16 copies alone (Backend::block_bf16_only)
  bool qkv_half = false;         // qkv in bf16 (half, or Backend::block_qkv_half)
  bool f_half = false;           // f in bf16 (Backend::block_f_half)
  bool f_dgelu = false;          // f holds GELU'(c_fc's output) (Backend::block_keeps_dgelu)
  DeviceBuffer x, h1, mean1, rstd1, qkv, probs, att, x2, h2, mean2, rstd2, f, g;
  DeviceBuffer h1_16, att_16, h2_16, g_16;  // Backend::block_keeps_bf16's copies, or none

  // with_x false leaves x to the caller (a single application whose input already lives elsewhere);
  // for_grads false: a forward only, which keeps no bf16 copies for weight products.
  void allocate(Backend& be, const BlockShape& s, int B, const std::vector<int>& n, bool with_x = true,
                bool for_grads = true);
  BlockCache view(const BlockShape& s, int k) const;  // application k's cache
  void reset() { *this = BlockArena(); }
};

// The output gradients of the four Linear layers, kept for every application of one layer during its
// backward, laid out like BlockArena (application k at its row offset): dqkv (c_attn's), da (attn
// c_proj's, after the dropout backward), dg (c_fc's, after the activation backward), dm (mlp c_proj's,
// after the dropout backward), and the LayerNorms' output gradients dh1 (ln_1's, from c_attn) and dh2
// (ln_2's, from c_fc), so that their weight gradients are one reduction over all rows too. 11*d floats per
// kept token, so 2 * 11*d per token of the sequence, for the one layer being differentiated (freed before
// the next).
struct BlockGradStash {
  float *dm = nullptr, *dg = nullptr, *da = nullptr, *dqkv = nullptr;  // one application's rows
  float *dh1 = nullptr, *dh2 = nullptr;
  bool half = false;  // dg and dqkv hold bf16 (Backend::block_half), behind their float pointers
  bool dg_half = false;  // dg holds bf16 (Backend::block_f_half on the unfused path)
  bool dh_half = false;  // dh1 and dh2 hold bf16 (Backend::block_dh_half)
  struct Bf16 {       // the same for dqkv, da, dg (BlockCache::b16), and dm (Backend::block_keeps_dm)
    void *dqkv = nullptr, *da = nullptr, *dg = nullptr, *dm = nullptr;
  } b16;
  // Where the application's ln_1 and ln_2 backward passes leave their dw, db partial sums (Backend::
  // block_ln_parts; else none), and how many rows of them all applications leave (from the first's, where
  // block_weight_grads adds them up).
  LnParts ln1, ln2;
  int ln_part_rows = 0;
};
struct BlockGradArena {
  bool half = false;
  bool dg_half = false;  // dg in bf16 (Backend::block_f_half)
  bool dh_half = false;  // dh1, dh2 in bf16 (Backend::block_dh_half)
  DeviceBuffer dm, dg, da, dqkv, dh1, dh2;
  DeviceBuffer dqkv_16, da_16, dg_16;  // Backend::block_keeps_bf16's copies, or none
  DeviceBuffer dm_16;                  // Backend::block_keeps_dm's, or none
  // with_dm false: the caller points dm at memory of its own (the layer's dy, when it is already there).
  void allocate(Backend& be, const BlockShape& s, size_t rows, bool with_dm = true);
  BlockGradStash view(const BlockShape& s, const BlockArena& a, int k) const;
};

// Scratch for the backward of one application, sized for B x capacity tokens; reused across windows.
struct BlockScratch {
  int B = 0, capacity = 0;
  DeviceBuffer dx2, datt;
  void allocate(Backend& be, const BlockShape& s, int B, int capacity, bool dropout);
};

// cache.x must hold the input [B, n, d], or glue says how to form it there (backend.h); y [B, n, d] is
// written (y is none of the cache's buffers). Dropout rate p with streams stream*4 + {0: attention
// probabilities, 1: after attention's c_proj, 2: after the MLP}.
void block_forward(Backend& be, const BlockShape& s, const BlockWeights& w, BlockCache& cache, float* y,
                   float p, uint64_t seed, uint64_t stream, const WindowGlue* glue = nullptr);

// glue as a batch of axpy2d ops into x ([B][n][d] rows), for the paths that form x before the block runs:
// the same values (alpha * P + S, one fused multiply-add an element) as the fused in-chain computes.
int glue_ops(const WindowGlue& glue, float* x, int B, int n, int d, Axpy2dOp (&ops)[3]);
// The backward's: glue into dy ([B][n][d] rows), its dX rows and (with P) its dot pair, whose parts go to
// glue.parts in the backend's dot_parts() layout.
int glue_ops(const BackGlue& glue, float* dy, int B, int n, int d, Axpy2dOp (&ops)[4], DotPairOp& dot);

// Backend::layernorm_backward_scatter by a backend's other operations: layernorm_backward_res into a scratch din,
// then the BackGlue batch (glue_ops) that would have moved it, so the same bits (the CPU's, under
// RT_CPU_LN_BACK_GLUE, for tests of the plumbing).
void layernorm_backward_scatter_by_glue(Backend& be, const float* x, const float* w, const float* mean,
                                        const float* rstd, const float* dy, const float* dres, const BackScatter& sc,
                                        int B, int d, bool dy_half, LnParts parts);

// dy [B, n, d] -> dx [B, n, d] (written; dx is not dy), dy first formed as glue says when given (its dot
// pair then needs a fused backend or glue.parts in the dot_parts() layout: glue_ops). No weight gradient is
// computed here: the output gradients of the four Linear layers and the LayerNorms' go to st (st.dm may be
// dy itself when p == 0, which saves a copy), and block_weight_grads adds them up over all applications.
// With scatter (Backend::block_ln_back_glue, unfused path only), dx is not written: ln_1's backward puts it
// where scatter says, forming the previous window's dy, whose own block_backward is then told dy_formed (dy
// and its kept bf16 copy written by the operation just before, no glue).
void block_backward(Backend& be, const BlockShape& s, const BlockWeights& w, const BlockGrads& g,
                    const BlockCache& cache, BlockScratch& scratch, const BlockGradStash& st, float* dy,
                    float* dx, const BackGlue* glue = nullptr, const BackScatter* scatter = nullptr,
                    bool dy_formed = false);

// The weight (and bias) gradients of `rows` kept rows: inputs from a (h1, att, h2, g; x, x2 and their
// statistics for the LayerNorms), output gradients from st (application 0's view of a BlockGradArena: the
// start of each field). One product per Linear weight, one reduction per LayerNorm, accumulated into g.
void block_weight_grads(Backend& be, const BlockShape& s, const BlockWeights& w, const BlockGrads& g,
                        const BlockCache& a, const BlockGradStash& st, int rows);

// Scratch for block_chunk, sized for B x rows new tokens.
struct ChunkScratch {
  int capacity = 0;  // B * rows
  DeviceBuffer h, mean, rstd, qkv, att, x2, f;
  void ensure(Backend& be, const BlockShape& s, int tokens);
};

// Inference only: T applied to c new tokens x [B, c, d] at positions t0 .. t0+c-1 of an application
// whose keys and values live in kv ([B, cap, 3d]; rows < t0 filled by earlier calls). Writes their
// rows into kv and the block's output to y [B, c, d]. No dropout, nothing kept for backward.
void block_chunk(Backend& be, const BlockShape& s, const BlockWeights& w, float* kv, int cap, int B, int t0, int c,
                 const float* x, float* y, ChunkScratch& k);

// Inference only: one new token for each of S sequences at different positions (continuous batching):
// row r of x [S, d] is the token at position t[r] of the application cached in slot slot[r] of kv
// ([slots, cap, 3d]). Writes its key/value row there and the block's output to y [S, d].
void block_rows(Backend& be, const BlockShape& s, const BlockWeights& w, float* kv, int cap, const int* slot,
                const int* t, int S, const float* x, float* y, ChunkScratch& k);

}  // namespace rt
