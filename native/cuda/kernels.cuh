// CUDA kernels, the mirror of cpu/kernels.h: same names, same layouts (float32, row-major), same
// accumulate-versus-write conventions, so the CUDA backend is a line-for-line translation of the CPU one.
// Pointers are device memory; every function queues its work on rt::cuda::stream() and returns without
// waiting. `bf16`: matrix products take bf16 operands into the tensor cores with float32 accumulation;
// false runs them in plain float32 (for exact checks against the CPU).
#pragma once
#include <cuda_bf16.h>

#include <cstddef>
#include <cstdint>
#include <functional>

#include "core/op_types.h"

namespace rt {
struct BlockShape;
struct BlockWeights;
struct BlockCache;
struct BlockGradStash;
struct WindowGlue;
struct BackScatter;
struct BackGlue;
}  // namespace rt

namespace rt::cuda {

// ---- matmul.cu ----
// Batched operands: item z of `count` starts at (z / inner) * outer + (z % inner) * inner_stride
// elements (a [B, H] batch of heads inside [B, n, 3d] rows needs both levels).
struct Strides {
  long long outer = 0, inner = 0;
};
struct Batch {
  int count = 1, inner = 1;
  Strides a, b, c;
};
// C[M,N] = alpha * op(A) op(B) + beta * C (+ bias[N] when given); op(A) is M x K (transA: A stored K x M),
// op(B) is K x N (transB: B stored N x K). beta == 0 never reads C. Long reductions over K with few
// output tiles are split over K into a workspace and summed in a fixed order (deterministic).
// res (ldc apart, may equal C only when beta == 0): added in the epilogue, C = alpha*AB + bias + res
// (+ beta*C), so a residual connection costs no extra pass.
// A_twin: A's bf16 twin (twin.cuh: A not transposed, lda == K, K a multiple of 8), which the Hopper kernel
// reads instead of casting A itself; the other kernels ignore it. A may be null where A_twin holds its values
// alone (rows of lda == K, not batched): the other kernels then read them cast back to float32.
// C_half: C is written as bf16 (ldc == N, beta == 0, no residual, not batched); the Hopper kernel rounds its
// float32 results in the epilogue, any other one through a float32 scratch (the same bits).
// act: an activation in the product with a bf16 C (GemmAct), by the Hopper TMA kernel's epilogue where it
// runs, else by a pass of activation.cu's after the product (the same bits either way). Forward (x null):
// act(C) written beside C at out. Backward (x set): C becomes act'(x) C, the gradient at the activation's
// input from the one at its output (rounded to bf16 first, as the unfused path holds it); out unused.
// dgelu (GELU only): the forward writes GELU'(C) into C rather than C itself, beside act(C) at out; the backward's x
// holds that GELU'(f), so C becomes x C (RT_CUDA_KEEP_DGELU: the layer keeps the derivative, not f).
struct GemmAct {
  __nv_bfloat16* out;                 // M x N bf16, rows of N (ldc)
  bool gelu;                          // GELU through phi_fast (the bf16 mode's), else ReLU
  const __nv_bfloat16* x = nullptr;  // M x N bf16, rows of N: the activation's input (with dgelu: GELU'(input))
  bool dgelu = false;
};
void gemm(bool bf16, bool transA, bool transB, int M, int N, int K, float alpha, const float* A, int lda,
          const float* B, int ldb, float beta, float* C, int ldc, const float* bias = nullptr,
          const Batch* batch = nullptr, const float* res = nullptr, const __nv_bfloat16* A_twin = nullptr,
          bool C_half = false, const GemmAct* act = nullptr);

// The bf16 kernel products run on. Auto (the default): mma.sync, 128x128 tiles in two stages (MmaBig2)
// when they fill the GPU, else 64x64 in three (MmaSmall). The others force one, for benchmarks and checks
// (Wmma: the WMMA kernel, tile by size).
// MmaBig2 / MmaSmall2: two pipeline stages instead of three, for two / four blocks per SM.
// Wgmma: the Hopper kernel (matmul_sm90.cu, 128x128 tiles, operands first copied to bf16), which Auto picks
// instead of MmaBig2 for single products on a compute-capability 9.0 GPU (RT_CUDA_WGMMA=0 turns that off);
// where it cannot run, MmaBig2 runs instead.
enum class GemmKernel { Auto, MmaBig, MmaSmall, MmaBig2, MmaSmall2, Wmma, WmmaBig, WmmaSmall, Wgmma };
void set_gemm_kernel(GemmKernel k);

// y[n,out] = x W^T + b (+ res[n,out] when given) (written). y may be res.
// x_twin: x's bf16 twin, if its producer wrote one (twin.cuh); x may then be null (the twin alone holds its
// values: Twin::only).
// y_half: y is written as bf16 (gemm's C_half).
void linear_forward(bool bf16, const float* x, const float* W, const float* b, float* y, int n, int in, int out,
                    const float* res = nullptr, const __nv_bfloat16* x_twin = nullptr, bool y_half = false);
// y[n,out] = x W^T + b written as bf16, and act(y) beside it (gemm's act): c_fc and its activation in one
// product where the Hopper kernel can (block_forward, Backend::linear_forward_act).
void linear_forward_act(bool bf16, const float* x, const float* W, const float* b, float* y, int n, int in, int out,
                        const __nv_bfloat16* x_twin, const GemmAct& act);
// dx = act'(x) (dy W) written as bf16 (gemm's act, backward): mlp c_proj's dx product and the activation's
// backward in one (block_backward, Backend::linear_backward_dx_act_half). x: bf16, n x in.
// dgelu: x holds GELU'(f) (GemmAct::dgelu), and dx = x (dy W).
void linear_backward_dx_act(bool bf16, const float* W, const float* dy, float* dx, int n, int in, int out,
                            const __nv_bfloat16* dy_twin, const __nv_bfloat16* x, bool gelu, bool dgelu = false);
// dx = dy W (written; skipped when null); dW += dy^T x; db += column sums of dy. dy_twin: dy's bf16 twin
// (for the dx product), if its producer wrote one; dy may then be null when dW and db are.
// dx_half: dx written as bf16 (behind its float pointer).
void linear_backward(bool bf16, const float* x, const float* W, const float* dy, float* dx, float* dW, float* db,
                     int n, int in, int out, const __nv_bfloat16* dy_twin = nullptr, bool dx_half = false);

// dst[e] += sum over k < chunks of part[k * count + e], k in order (per-chunk partial sums, added up the
// same way every run).
void add_chunk_sums(const float* part, int chunks, int count, float* dst);

// ---- weight_grad.cu ----
// dW[out,in] += dy^T x; db[out] += column sums of dy (db may be null): the weight gradients over many rows
// (block_weight_grads), bf16 products with float32 accumulation, each float32 operand read from memory once
// and converted on chip, partial tiles per row chunk summed in a fixed order (deterministic). Runs whatever
// the shape; linear_backward(bf16) takes it when weight_grad_preferred(n, in, out) (the rule is in
// weight_grad.cu). RT_CUDA_DW=0 in the environment (read once), or set_weight_grad(false), turns that off.
void linear_weight_grad(const float* x, const float* dy, float* dW, float* db, int n, int in, int out);
// The same where x (x_half) or x and dy (dy_half) hold bf16, with rows of a multiple of 8 elements, 16-byte
// aligned (Backend::block_half's buffers; db from dy's bf16 values then).
void linear_weight_grad(const void* x, bool x_half, const void* dy, bool dy_half, float* dW, float* db, int n, int in,
                        int out);
bool weight_grad_preferred(int n, int in, int out);
void set_weight_grad(bool on);

// ---- layernorm.cu ----
// twin (here and in the activations): also write a bf16 copy of the output there (twin.cuh), when not null.
void layernorm_forward(const float* x, const float* w, const float* b, float* y, float* mean, float* rstd, int n,
                       int d, __nv_bfloat16* twin = nullptr);
// The window glue (WindowGlue) forming x [B, np, d] and layernorm_forward of it in one pass (ln_1's input on the
// unfused path, Backend::layernorm_forward_glue): x written as the glue's batch writes it, Y's copy made, y (and
// its twin) and the stats as layernorm_forward's. For the d that layernorm_glue_fits (its register kernels).
bool layernorm_glue_fits(int d);
void layernorm_forward_glue(const WindowGlue& glue, float* x, int B, int np, const float* w, const float* b, float* y,
                            float* mean, float* rstd, int d, __nv_bfloat16* twin = nullptr);
// dx += ...; dw += ...; db += ... (db may be null). dy_half: dy holds bf16 behind its float pointer (the same
// bits as a float32 dy holding the same values).
void layernorm_backward(const float* x, const float* w, const float* mean, const float* rstd, const float* dy,
                        float* dx, float* dw, float* db, int n, int d, bool dy_half = false);
// dx = dres + ... (written; dres may equal dx, which is layernorm_backward, or be null: zeros); dw += ...; db +=
// ... (db may be null).
// parts: also leave the rows' dw and db sums as layernorm_part_rows(n, d) rows of partial sums there (for the d
// where that is not -1).
void layernorm_backward_res(const float* x, const float* w, const float* mean, const float* rstd, const float* dy,
                            const float* dres, float* dx, float* dw, float* db, int n, int d,
                            __nv_bfloat16* twin = nullptr, bool dy_half = false, LnParts parts = {});
// layernorm_backward_res with ln_1's dx scattered as BackScatter (layer/backend.h) says, and dY's rows copied, in
// one pass (Backend::layernorm_backward_scatter): the bits of dx then BackGlue's batch. twin: dy's bf16 copy (its
// rows written here), or null. For the d that layernorm_glue_fits.
void layernorm_backward_scatter(const float* x, const float* w, const float* mean, const float* rstd, const float* dy,
                                const float* dres, const BackScatter& s, int B, int d, __nv_bfloat16* twin = nullptr,
                                bool dy_half = false, LnParts parts = {});
// The rows of partial sums a backward over n rows leaves (-1: none for this d), and their sum over
// `rows` rows (in order, deterministic) added to dw and db (db may be null).
int layernorm_part_rows(int n, int d);
// RT_CUDA_LN_PARTS (default on; =0 turns it off): the LayerNorms' backward passes leave partial sums (the
// block's, Backend::block_ln_parts, and the head's ln_f) rather than a pass of their own over all rows.
bool ln_parts_wanted();
// RT_CUDA_LN_PIPE (layernorm.cu; default on): the dx kernels with partial sums copy the next pass's rows into
// shared memory while they work on this pass's, for the calls after. The same bits.
void set_ln_pipe(bool on);
bool ln_pipe();
void layernorm_parts_finish(LnParts parts, int rows, int d, float* dw, float* db);

// ---- attention.cu ----
// As cpu::attention_forward / attention_backward (probs [B,H,n,n] before dropout, upper triangle 0;
// dropout mask index ((b*H+h)*n+i)*n+j of rng(seed, stream)). Window pairs run fused, one block per
// (batch, head); long sequences go through batched matrix products (precision `bf16`).
// twin: a bf16 copy of out / dqkv (twin.cuh), written by the tensor-core kernels only: the caller offers
// one only where those run (attention_writes_twin).
// qkv_half: qkv holds bf16 (BlockCache::half), which the tensor-core kernels read as it is (the same bits:
// they round float32 to bf16) and the others through a float32 copy.
void attention_forward(bool bf16, const float* qkv, float* probs, float* out, int B, int n, int d, int H, float p,
                       uint64_t seed, uint64_t stream, __nv_bfloat16* twin = nullptr, bool qkv_half = false);
// dout_half: dout holds bf16 (Backend::block_datt_half), read as it is by the tensor-core kernel (the same
// bits as a float32 dout holding the same values) and by the others through a float32 copy.
void attention_backward(bool bf16, const float* qkv, const float* probs, const float* dout, float* dqkv, int B,
                        int n, int d, int H, float p, uint64_t seed, uint64_t stream, __nv_bfloat16* twin = nullptr,
                        bool qkv_half = false, bool dout_half = false);
bool attention_writes_twin(bool bf16, int n, int d, int H);
// Whether probs may be null in both calls for this window: the tensor-core kernels then write none in the forward
// and recompute them in the backward, with the same bits (attention_mma.cuh's probs_rows_mma). The shapes of
// attention_writes_twin, unless RT_CUDA_ATTN_KEEP_PROBS=1 (set_attn_keep_probs) keeps the buffer, for comparison.
bool attention_recomputes_probs(bool bf16, int n, int d, int H);
void set_attn_keep_probs(bool keep);
// The forward of a bf16 qkv on the tensor cores by a kernel of this many blocks an SM, each walking several
// (element, head) units with the next unit's loads in flight (0: a block a unit; RT_CUDA_ATTN_PERSIST, default
// 2), for the calls after. The same bits either way.
void set_attn_persist(int blocks_per_sm);
int attn_persist();
// RT_CUDA_ATTN_ASYNC / RT_CUDA_ATTN_STAGES (attention.cu; defaults 3 and 2): the forward of a bf16 qkv by the
// cp.async kernel, its blocks an SM (0: off, the kernels above) and stages, for the calls after. The same bits.
void set_attn_async(int blocks_per_sm, int stages);
int attn_async();
int attn_stages();
// attention_backward with dqkv in bf16 only (a bf16 gradient stash: Backend::block_half): the tensor-core
// kernel writes just the bf16 copy; other shapes go through a float32 scratch and a cast.
void attention_backward_bf16(bool bf16, const float* qkv, const float* probs, const float* dout,
                             __nv_bfloat16* dqkv, int B, int n, int d, int H, float p, uint64_t seed, uint64_t stream,
                             bool qkv_half = false);

// ---- block_fused.cu ----
// One block application's row-local chains as one kernel each (the Backend's block_in_forward & co., whose
// comments in layer/backend.h say what each writes), for d = 32, 64, 96 or 128. `bf16`: tensor-core
// products from a bf16 packed copy of the weights; false: float32 FMA from a float32 one (the check mode).
bool block_fusable(int d);
size_t fused_weights_floats(bool bf16, int d);
void pack_fused_weights(bool bf16, const BlockShape& s, const BlockWeights& w, float* dst);
void block_in_forward(bool bf16, const BlockShape& s, const BlockWeights& w, const BlockCache& c,
                      const WindowGlue* glue);
// Whether the fused chains take relu' from g and keep no f (relu; RT_CUDA_RELU_G=0 keeps f).
bool relu_from_g(const BlockShape& s);
// Whether block_out_forward computes the window's attention itself (bf16, head size 16, n = 64: two
// row blocks an element; RT_CUDA_FUSED_ATTN=0 turns it off).
bool block_out_attention(bool bf16, const BlockShape& s, int n);
void block_out_forward(bool bf16, const BlockShape& s, const BlockWeights& w, const BlockCache& c, float* y);
void block_out_backward(bool bf16, const BlockShape& s, const BlockWeights& w, const BlockCache& c,
                        const BlockGradStash& st, float* dy, float* dx2, float* datt, const BackGlue* glue);
// Blocks of a fused chain over `rows` rows (one per tile): how many of alpha's parts block_out_backward
// leaves with a BackGlue that has P.
int fused_row_blocks(int rows);
void block_in_backward(bool bf16, const BlockShape& s, const BlockWeights& w, const BlockCache& c,
                       const BlockGradStash& st, const float* dx2, float* dx);

// ---- activation.cu ----
// fast: Phi within 7.5e-8 (activation.cuh's phi_fast), for the bf16 mode; else normcdff. x_half, dy_half: x, dy
// hold bf16 behind their float pointers.
void gelu_forward(const float* x, float* y, size_t n, __nv_bfloat16* twin = nullptr, bool fast = false,
                  bool x_half = false);
void gelu_backward(const float* x, const float* dy, float* dx, size_t n, __nv_bfloat16* twin = nullptr,
                   bool fast = false, bool x_half = false, bool dy_half = false);
// The bf16 mode's GELU when the layer keeps GELU'(f) rather than f (RT_CUDA_KEEP_DGELU): g = GELU(f) and f
// overwritten by GELU'(f), both bf16 (the values gemm's act with dgelu writes); and its backward, dx = x dy with x
// that GELU'(f) (map2's kinds of operand).
void gelu_forward_dact(__nv_bfloat16* f, __nv_bfloat16* g, size_t n);
void mul_backward(const float* x, const float* dy, float* dx, size_t n, __nv_bfloat16* twin = nullptr,
                  bool x_half = false, bool dy_half = false);
void relu_forward(const float* x, float* y, size_t n, __nv_bfloat16* twin = nullptr, bool x_half = false);
void relu_backward(const float* x, const float* dy, float* dx, size_t n, __nv_bfloat16* twin = nullptr,
                   bool x_half = false, bool dy_half = false);

// ---- dropout.cu ----
void dropout_forward(const float* x, float* y, size_t n, float p, uint64_t seed, uint64_t stream);
void dropout_backward(const float* dy, float* dx, size_t n, float p, uint64_t seed, uint64_t stream);

// ---- decode.cu ----
void attention_cached(const float* qkv, int cap, int B, int t0, int c, int d, int H, float* out);

// ---- embedding.cu ----
// As cpu::embedding_forward / embedding_backward, with `tokens` in device memory (already range-checked).
void embedding_forward(const int32_t* tokens, const float* wte, const float* wpe, float* out, int B, int N, int d,
                       float p, uint64_t seed, uint64_t stream);
void embedding_backward(const int32_t* tokens, const float* dout, float* dwte, float* dwpe, int B, int N, int d, int V,
                        float p, uint64_t seed, uint64_t stream);

// ---- softmax_xent.cu ----
// As cpu::head_xent, with `targets` [B*P] in device memory and `count` (the scored rows) counted by the
// caller; totals (device, two doubles) receives the summed loss and the number of argmax hits.
void head_xent(bool bf16, const float* Y, const float* lnw, const float* lnb, const float* W, const int32_t* targets,
               int B, int N, int d, int V, int P, int ignore_index, int64_t count, float* dY, float* dlnw, float* dlnb,
               float* dW, double* totals);
void head_logits(bool bf16, const float* Y, const float* lnw, const float* lnb, const float* W, int B, int N, int d,
                 int V, int P, float* logits);

// ---- adamw.cu ----
// One step over `count` tensors (device pointers) at step *step_count + 1 (a device int32, advanced unless
// the step is skipped); nothing waits. The returned function reads the norm and the skip, waiting for them.
std::function<AdamWResult()> adamw_step(const AdamWTensor* tensors, size_t count, const AdamWHyper& h,
                                        double max_norm, int32_t* step_count);

}  // namespace rt::cuda
