// One pre-LN transformer block T (nanoGPT): x = x + Attn(LN1(x)); x = x + MLP(LN2(x)), applied to a
// batch of B sequences of n tokens, written once over the Backend interface.
#pragma once
#include <cstdint>

#include "layer/backend.h"

namespace rt {

struct BlockShape {
  int d = 0;
  int heads = 0;
  bool gelu = true;
  bool bias = false;
};

// Pointers into the backend's memory; biases are null when the block has none.
struct BlockWeights {
  const float *ln1_w, *ln1_b, *attn_w, *attn_b, *attn_proj_w, *attn_proj_b;
  const float *ln2_w, *ln2_b, *fc_w, *fc_b, *mlp_proj_w, *mlp_proj_b;
};
struct BlockGrads {
  float *ln1_w, *ln1_b, *attn_w, *attn_b, *attn_proj_w, *attn_proj_b;
  float *ln2_w, *ln2_b, *fc_w, *fc_b, *mlp_proj_w, *mlp_proj_b;
};

// What one application keeps for its backward: per token 16*d floats (x, h1, qkv, att, x2, h2, f, g)
// plus heads*n attention probabilities and 4 statistics. Memory for a whole sequence is therefore linear
// in N: each of the ~2N/w applications holds at most 2w tokens.
// Without gradients a single cache is reused for every application (capacity = the largest n).
struct BlockCache {
  int B = 0, n = 0;       // the current application's shape (n <= capacity)
  int capacity = 0;       // tokens per sequence the buffers can hold
  DeviceBuffer x, h1, mean1, rstd1, qkv, probs, att, x2, h2, mean2, rstd2, f, g;
  float p = 0;            // dropout rate used in forward (0 when not training)
  uint64_t seed = 0, stream = 0;

  void allocate(Backend& be, const BlockShape& s, int B, int capacity);
};

// Scratch for the backward of one application, sized for B x capacity tokens; reused across windows.
struct BlockScratch {
  int B = 0, capacity = 0;
  DeviceBuffer dm, dg, dh, dx2, da, datt, dqkv;
  void allocate(Backend& be, const BlockShape& s, int B, int capacity);
};

// cache.x must hold the input [B, n, d]; y [B, n, d] is written. Dropout rate p with streams
// stream*4 + {0: attention probabilities, 1: after attention's c_proj, 2: after the MLP}.
void block_forward(Backend& be, const BlockShape& s, const BlockWeights& w, BlockCache& cache, float* y,
                   float p, uint64_t seed, uint64_t stream);

// dy [B, n, d] -> dx [B, n, d] (written); weight gradients accumulate into g.
void block_backward(Backend& be, const BlockShape& s, const BlockWeights& w, const BlockGrads& g,
                    const BlockCache& cache, BlockScratch& scratch, const float* dy, float* dx);

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
