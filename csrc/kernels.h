// Shared declarations of the mda_fast kernels (no torch, no pybind11 here).
//
// Every op is one core: per sample n, G_n = sum_t m_t a_t b_tᵀ over tokens t, computed tile by tile over T,
// followed by an epilogue (Mode). For a block, the "a" operand is the output-side tokens (Y, rows of G) and
// the "b" operand the input-side tokens (X with an optional implicit ones column, columns of G).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace mdaf {

enum Mode : int {
  kScore = 0,   // S[n, k] (+)= sum_b <P_b[k], G_b,n>      S: fp32 [N, K]; P_b: fp32 [K, M_b, C_b]
  kSquare = 1,  // out_b [M, C] += sum_n G_n ⊙ G_n
  kSum = 2,     // out_b [M, C] += sum_n G_n                (covariance: a = b = X̃)
  kStore = 3,   // out_b [N, M, C] = G_n                    (fp32 workspace)
};

enum DType : int { kF32 = 0, kBF16 = 1, kF16 = 2 };

// Tokens [N, T, width] at ptr, element (n, t, j) at ptr[n*sn + t*st + j] (elements, not bytes);
// `bias` appends an implicit ones column, so the operand has width + bias columns.
struct Operand {
  std::uintptr_t ptr = 0;
  std::int64_t sn = 0, st = 0;
  int width = 0;
  bool bias = false;
  int cols() const { return width + (bias ? 1 : 0); }
};

struct BlockDesc {
  Operand a, b;             // rows of G: a.cols() (= M), columns: b.cols() (= C)
  std::uintptr_t P = 0;     // kScore: fp32 [K, M, C]
  std::uintptr_t out = 0;   // kSquare/kSum: fp32 [M, C]; kStore: fp32 [N, M, C]
};

// mask: fp32 [N, T] or 0 (all ones). S: fp32 [N, K] (kScore only).
// CPU kScore writes S (no need to zero it); the CUDA kScore adds into S (zero it first).
void cpu_run(int mode, int dtype, const std::vector<BlockDesc>& blocks, std::uintptr_t mask, std::int64_t N,
             std::int64_t T, std::int64_t K, std::uintptr_t S);
int cpu_max_threads();

#ifdef MDA_FAST_WITH_CUDA
void cuda_run(int mode, int dtype, const std::vector<BlockDesc>& blocks, std::uintptr_t mask, std::int64_t N,
              std::int64_t T, std::int64_t K, std::uintptr_t S, std::uintptr_t stream);
std::string cuda_compiler_version();   // nvcc version the .cu was compiled with
int cuda_runtime_version();            // cudaRuntimeGetVersion (static cudart)
int cuda_driver_version();             // 0 when no driver is present
int cuda_device_count();               // 0 when no driver/GPU is present
#endif

}  // namespace mdaf
