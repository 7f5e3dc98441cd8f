// The TMA-fed, warp-specialized Hopper GEMM of matmul_tma_sm90.cu, called by matmul_sm90.cu's gemm_sm90 once
// the operands' bf16 K-major copies exist (A: M rows, B: N rows, each of Kp elements, 16-byte aligned).
#pragma once
#include <cuda_bf16.h>

#include "cuda/gemm_args.cuh"

struct CUtensorMap_st;

namespace rt::cuda {
// The copy engine's map of a bf16 matrix of R rows of Kp elements (rows 16-byte aligned), read in boxes of bk (64 or
// 32) elements by `rows` rows, swizzled 128B (bk 64) or 64B (32): the TMA products' operands, and weight_grad_sm90's
// stages (RT_CUDA_DW_TMA). False where the driver has no encoder or the matrix does not suit it.
bool tma_map_bf16(CUtensorMap_st* map, const __nv_bfloat16* p, int R, int Kp, int rows, int bk);
// Launches the product over `splits` splits of K (g.ws and g.kchunk as gemm() set them) and returns true; or
// returns false, having launched nothing, where the driver has no tensor-map encoder or the kernel cannot run
// here (the caller then uses its own kernels). RT_CUDA_GEMM_TMA=0 turns it off.
// act_applied: whether it also wrote g.act's output (GemmArgs::act; else the caller applies it).
bool gemm_tma(const gemm_detail::GemmArgs& g, const __nv_bfloat16* A, const __nv_bfloat16* B, int Kp, int splits,
              bool* act_applied);
// Turns it on or off for the products launched after (kernels_check compares both; default: on, unless
// RT_CUDA_GEMM_TMA=0).
void set_tma_gemm(bool on);
// Its epilogue staged through shared memory and stored by the copy engine (store_tile_staged) where C allows
// (unsplit, beta 0, C and its rows 16-byte aligned), for the products launched after; the same bits as the
// direct stores. Default on; RT_CUDA_TMA_STORE=0 turns it off.
void set_tma_store(bool on);
bool tma_store();
// A float32 C's residual values loaded two boxes ahead in the staged epilogue, for the products launched after
// (the same bits). Default on; RT_CUDA_RES_PREFETCH=0 turns it off.
void set_res_prefetch(bool on);
bool res_prefetch();
// A float32 C's residual and bias as the accumulators' starting values (the products added onto them; alpha 1),
// ahead of the prefetch, for the products launched after: the same terms in another order, so not the same bits.
// Default on; RT_CUDA_RES_ACC=0 turns it off.
void set_res_acc(bool on);
bool res_acc();
// Products it has launched with the residual in the accumulators (kernels_check: that they did).
long res_acc_launches();
// 128 x 96 tiles (RT_CUDA_TMA_BN96): 0 never, 1 (the default) where they spread the work more evenly over the SMs, 2 for
// every product not on 192-wide tiles (kernels_check), for the products launched after.
void set_tma_bn96(int mode);
int tma_bn96();
#ifdef RT_GEMM_DIAG
// A diagnostic build's variant of the staged products launched after (matmul_tma_sm90.cu's kDiag*: 0 the
// product; 1 without the engine's stores, 2 without the epilogue, 3 without the tensor-core products, 4 without
// the operand loads, 5 without the proxy fence before each staged box's store). Their outputs are not the
// product's: for timing alone (kernels_check --gemm-diag).
void set_tma_diag(int mode);
// The registers a thread and the local memory (spills) a thread of the kernel launched last.
void tma_last_kernel(int* regs, int* local_bytes);
#endif
// The activation's backward in the product (GemmArgs::act_x) on 128 x 96 tiles rather than 128 x 128, for the
// products launched after (the same bits): 1 (the default) only where it evaluates act' (GELU', ReLU') and not
// where it multiplies by a kept GELU' (kActMul), 2 for every such product, 0 never (RT_CUDA_TMA_X96).
void set_tma_x96(int mode);
int tma_x96();
// Products of the activation's backward it has launched on 128 x 96 tiles (kernels_check: that they did).
long tma_x96_launches();
// Products it has launched in this process (kernels_check: that a product ran here, not on the fallback).
long tma_launches();
// Those of them that applied an activation in the epilogue (GemmArgs::act).
long tma_act_launches();
}  // namespace rt::cuda
