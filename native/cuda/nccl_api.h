// Our own declarations of the part of NCCL 2.x we call, so that the addon compiles without NCCL's headers
// (CI has none) and links without libnccl: native/cuda/nccl.cu opens libnccl.so.2 at run time and looks the
// functions up by these names. Values are NCCL's public ABI (nccl.h, 2.x), which NCCL keeps stable:
// enum values never change, and ncclConfig_t is versioned by its leading size/magic/version fields, so a
// prefix of it (the 2.14 layout) is read correctly by every later library.
#pragma once
#include <climits>
#include <cstddef>

namespace rt::nccl {

constexpr int kUniqueIdBytes = 128;  // NCCL_UNIQUE_ID_BYTES
struct UniqueId {
  char internal[kUniqueIdBytes];
};

struct Comm;            // struct ncclComm, opaque
using Comm_t = Comm*;   // ncclComm_t
using CudaStream = void*;  // cudaStream_t (a pointer to an opaque CUstream_st)

enum Result : int {  // ncclResult_t
  Success = 0,
  UnhandledCudaError = 1,
  SystemError = 2,
  InternalError = 3,
  InvalidArgument = 4,
  InvalidUsage = 5,
  RemoteError = 6,
  InProgress = 7,
  Timeout = 8,
};

enum DataType : int {  // ncclDataType_t (the ones we use)
  Int32 = 2,
  Float32 = 7,
};

enum RedOp : int {  // ncclRedOp_t
  Sum = 0,
  Avg = 4,  // NCCL >= 2.10
};

// ncclConfig_t as of NCCL 2.14 (ncclConfig_v21400). Later versions append fields; the library copies only
// `size` bytes and fills the rest with its defaults.
struct Config {
  size_t size;
  unsigned int magic;
  unsigned int version;
  int blocking;
  int cgaClusterSize;
  int minCTAs;
  int maxCTAs;
  const char* netName;
};
constexpr unsigned int kConfigMagic = 0xcafebeef;  // NCCL_API_MAGIC
constexpr int kConfigUndefInt = INT_MIN;           // NCCL_CONFIG_UNDEF_INT
constexpr int kConfigVersion = 21400;              // NCCL_VERSION(2, 14, 0)

// NCCL_VERSION(X, Y, Z) of the 2.9+ scheme: X * 10000 + Y * 100 + Z (2.8 and older: X * 1000 + Y * 100 + Z).
constexpr int kAvgSince = 21000;         // ncclAvg: 2.10.0
constexpr int kNonBlockingSince = 21400; // ncclCommInitRankConfig with blocking = 0: 2.14.0

extern "C" {
using GetVersionFn = Result (*)(int* version);
using GetUniqueIdFn = Result (*)(UniqueId* id);
using CommInitRankFn = Result (*)(Comm_t* comm, int nranks, UniqueId id, int rank);
using CommInitRankConfigFn = Result (*)(Comm_t* comm, int nranks, UniqueId id, int rank, Config* config);
using AllReduceFn = Result (*)(const void* send, void* recv, size_t count, DataType type, RedOp op, Comm_t comm,
                               CudaStream stream);
using GroupFn = Result (*)();
using CommFn = Result (*)(Comm_t comm);
using GetErrorStringFn = const char* (*)(Result r);
using CommGetAsyncErrorFn = Result (*)(Comm_t comm, Result* async_error);
}

}  // namespace rt::nccl
