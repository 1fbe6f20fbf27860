// CUDA kernels: per-sample outer-product accumulation on tensor cores with four epilogues (see kernels.h).
//
// One CTA (4 warps) owns a BM x BN tile of G for one block of the block table and a range of samples. Per sample
// it loops over T in chunks of BK tokens: the chunk of a (masked) and b (with the implicit ones column) is
// loaded into registers with 16-byte loads where rows are aligned (the next chunk's loads are issued before the
// current chunk's MMAs), stored to shared memory, and each warp accumulates a 32 x 32 sub-tile in fp32 wmma
// fragments (bf16/fp16: m16n16k16; fp32: m16n16k8 tf32 with a 3-pass hi/lo split, which keeps fp32 accuracy).
// kSum on a == b (covariance) runs only the tiles on or above the diagonal and mirrors them.
// Every CUDA API call is checked and cudaGetLastError() follows every launch; kernels run on the caller's stream.
// The G tile only ever lives in registers and shared memory; the epilogue consumes it:
//   kScore : dot with the P_k tiles, CTA reduction, one atomicAdd into S[n, k] per (CTA, k);
//   kSquare: squares summed over the CTA's samples in registers, one atomicAdd per element at the end;
//   kSum   : fragments accumulate over all of the CTA's samples, one atomicAdd per element at the end;
//   kStore : G tile written to an fp32 workspace (route B of eigen_sq_accumulate).
#include "kernels.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <algorithm>
#include <cstring>
#include <sstream>
#include <type_traits>
#include <stdexcept>
#include <string>

#define MDAF_CUDA_CHECK(expr)                                                                        \
  do {                                                                                               \
    cudaError_t err__ = (expr);                                                                      \
    if (err__ != cudaSuccess) {                                                                      \
      std::ostringstream os__;                                                                       \
      os__ << "CUDA error " << cudaGetErrorName(err__) << " (" << cudaGetErrorString(err__) << ") at " \
           << __FILE__ << ":" << __LINE__ << " in " #expr;                                           \
      throw std::runtime_error(os__.str());                                                          \
    }                                                                                                \
  } while (0)

namespace mdaf {
namespace {

using namespace nvcuda;

constexpr int BM = 64, BN = 64, BK = 32;
constexpr int NTHREADS = 128;  // 4 warps, 2 x 2 warp grid of 32 x 32 sub-tiles
constexpr int MAX_BLOCKS = 16;
constexpr int CLD = BN + 4;    // fp32 leading dimension of the epilogue tile
constexpr int PER_THREAD = BM * BN / NTHREADS;

struct DevOperand {
  const void* ptr;
  long long sn, st;
  int width, bias;
  int vec;  // every token row starts 16-byte aligned: full 16-byte groups inside [0, width) load as one uint4
};

struct DevBlock {
  DevOperand a, b;
  const float* P;
  float* out;
  int M, C, tiles_n, tile_begin;
  int symmetric;  // kSum with a == b: only tiles on/above the diagonal run, and mirror their result
};

struct BlockTable {
  DevBlock blk[MAX_BLOCKS];
  int nblocks;
};

// Per-dtype wmma shape and conversions: bf16/fp16 use m16n16k16 fragments, fp32 m16n16k8 tf32 ones (3xTF32).
template <typename T>
struct Elem {
  static_assert(std::is_same<T, __nv_bfloat16>::value || std::is_same<T, __half>::value, "bf16 or fp16");
  static constexpr int FK = 16;
  static constexpr int PAD = 8;
  using FragT = T;
  __device__ static float to_float(T v) {
    if constexpr (std::is_same<T, __half>::value) return __half2float(v);
    else return __bfloat162float(v);
  }
  __device__ static T from_float(float v) {
    if constexpr (std::is_same<T, __half>::value) return __float2half_rn(v);
    else return __float2bfloat16_rn(v);
  }
};
template <>
struct Elem<float> {
  static constexpr int FK = 8;  // wmma k for tf32
  static constexpr int PAD = 4;
  using FragT = wmma::precision::tf32;
  __device__ static float to_float(float v) { return v; }
  __device__ static float from_float(float v) { return v; }
};

// A thread's share of one chunk: tokens [t0, t0+BK) x columns [c0, c0+W) of an operand, cut into 16-byte groups
// of VEC = 16 / sizeof(T) columns; group v = tid + r*NTHREADS is (token v / (W/VEC), columns (v % (W/VEC))*VEC...).
// fetch_chunk reads global memory into registers (scaled by the mask when `masked`; out-of-range entries are zero;
// column `width` is the implicit ones column when bias is set): one 16-byte load when the group lies inside the
// row and rows are aligned, element loads otherwise. commit_chunk writes the registers to smem dst[BK][LD] with
// 16-byte stores. Splitting the two lets the next chunk's loads overlap the MMAs.
template <typename T>
struct ChunkShape {
  static constexpr int VEC = 16 / int(sizeof(T));
  static constexpr int GROUPS = BM / VEC;                 // 16-byte groups per token row (BM == BN)
  static constexpr int NV = BK * GROUPS / NTHREADS;       // groups per thread
  static_assert((BK * GROUPS) % NTHREADS == 0, "chunk must split evenly over the threads");
  static_assert(BM == BN, "a and b chunks share one shape");
};

template <typename T>
__device__ __forceinline__ void fetch_chunk(uint4 (&reg)[ChunkShape<T>::NV], const DevOperand& op, long long n,
                                            int t0, int c0, int T_len, const float* mask, bool masked) {
  using CS = ChunkShape<T>;
  const T* src = static_cast<const T*>(op.ptr);
#pragma unroll
  for (int r = 0; r < CS::NV; ++r) {
    const int v = threadIdx.x + r * NTHREADS;
    const int t = t0 + v / CS::GROUPS;
    const int cb = c0 + (v % CS::GROUPS) * CS::VEC;
    const bool tin = t < T_len;
    const float m = (tin && masked && mask != nullptr) ? mask[n * T_len + t] : 1.0f;
    const T* row = src + n * op.sn + (long long)t * op.st;
    if (tin && op.vec && cb + CS::VEC <= op.width) {
      uint4 raw = *reinterpret_cast<const uint4*>(row + cb);
      if (m != 1.0f) {
        T* e = reinterpret_cast<T*>(&raw);
#pragma unroll
        for (int i = 0; i < CS::VEC; ++i) e[i] = Elem<T>::from_float(Elem<T>::to_float(e[i]) * m);
      }
      reg[r] = raw;
    } else {
      T e[CS::VEC];
#pragma unroll
      for (int i = 0; i < CS::VEC; ++i) {
        const int c = cb + i;
        float x = 0.0f;
        if (tin) {
          if (c < op.width) {
            x = Elem<T>::to_float(row[c]);
          } else if (c == op.width && op.bias) {
            x = 1.0f;
          }
          x *= m;
        }
        e[i] = Elem<T>::from_float(x);
      }
      memcpy(&reg[r], e, 16);
    }
  }
}

template <typename T, int LD>
__device__ __forceinline__ void commit_chunk(T* dst, const uint4 (&reg)[ChunkShape<T>::NV]) {
  using CS = ChunkShape<T>;
  static_assert((LD * sizeof(T)) % 16 == 0, "smem rows must stay 16-byte aligned");
#pragma unroll
  for (int r = 0; r < CS::NV; ++r) {
    const int v = threadIdx.x + r * NTHREADS;
    *reinterpret_cast<uint4*>(dst + (v / CS::GROUPS) * LD + (v % CS::GROUPS) * CS::VEC) = reg[r];
  }
}

// 3xTF32 split of a loaded fp32 fragment: hi keeps tf32(x), lo gets tf32(x - hi), so hi + lo carries ~fp32 precision.
template <typename Frag>
__device__ __forceinline__ void split_tf32(Frag& hi, Frag& lo) {
#pragma unroll
  for (int i = 0; i < hi.num_elements; ++i) {
    const float v = hi.x[i];
    const float h = wmma::__float_to_tf32(v);
    hi.x[i] = h;
    lo.x[i] = wmma::__float_to_tf32(v - h);
  }
}

template <typename T>
__device__ __forceinline__ void mma_chunk(
    const T* As, const T* Bs, int wm, int wn,
    wmma::fragment<wmma::accumulator, 16, 16, Elem<T>::FK, float> (&acc)[2][2]) {
  constexpr int FK = Elem<T>::FK;
  constexpr int ALD = BM + Elem<T>::PAD, BLD = BN + Elem<T>::PAD;
  using FT = typename Elem<T>::FragT;
#pragma unroll
  for (int kk = 0; kk < BK; kk += FK) {
    wmma::fragment<wmma::matrix_a, 16, 16, FK, FT, wmma::col_major> a[2];
    wmma::fragment<wmma::matrix_b, 16, 16, FK, FT, wmma::row_major> b[2];
#pragma unroll
    for (int f = 0; f < 2; ++f) {
      // A = a-chunkᵀ: element (row i, col k) at As[k * ALD + i] -> column major with ld ALD.
      wmma::load_matrix_sync(a[f], As + kk * ALD + wm * 32 + f * 16, ALD);
      wmma::load_matrix_sync(b[f], Bs + kk * BLD + wn * 32 + f * 16, BLD);
    }
    if constexpr (std::is_same<T, float>::value) {
      // 3xTF32: x = hi + lo, x·y ≈ hi·hi' + hi·lo' + lo·hi' (error ~ fp32).
      wmma::fragment<wmma::matrix_a, 16, 16, FK, FT, wmma::col_major> a_lo[2];
      wmma::fragment<wmma::matrix_b, 16, 16, FK, FT, wmma::row_major> b_lo[2];
#pragma unroll
      for (int f = 0; f < 2; ++f) {
        split_tf32(a[f], a_lo[f]);
        split_tf32(b[f], b_lo[f]);
      }
#pragma unroll
      for (int fi = 0; fi < 2; ++fi)
#pragma unroll
        for (int fj = 0; fj < 2; ++fj) {
          wmma::mma_sync(acc[fi][fj], a_lo[fi], b[fj], acc[fi][fj]);
          wmma::mma_sync(acc[fi][fj], a[fi], b_lo[fj], acc[fi][fj]);
          wmma::mma_sync(acc[fi][fj], a[fi], b[fj], acc[fi][fj]);
        }
    } else {
#pragma unroll
      for (int fi = 0; fi < 2; ++fi)
#pragma unroll
        for (int fj = 0; fj < 2; ++fj) wmma::mma_sync(acc[fi][fj], a[fi], b[fj], acc[fi][fj]);
    }
  }
}

// The CTA's accumulator fragments -> Cs [BM][CLD] fp32, between barriers (Cs's previous contents fully consumed
// before, the whole tile visible to every thread after).
template <typename T>
__device__ __forceinline__ void stage_tile(
    float* Cs, const wmma::fragment<wmma::accumulator, 16, 16, Elem<T>::FK, float> (&acc)[2][2], int wm, int wn) {
  __syncthreads();
#pragma unroll
  for (int fi = 0; fi < 2; ++fi)
#pragma unroll
    for (int fj = 0; fj < 2; ++fj)
      wmma::store_matrix_sync(Cs + (wm * 32 + fi * 16) * CLD + wn * 32 + fj * 16, acc[fi][fj], CLD,
                              wmma::mem_row_major);
  __syncthreads();
}

__device__ __forceinline__ float block_sum(float v, float* red) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // red[] may still be read from the previous call
  if (lane == 0) red[warp] = v;
  __syncthreads();
  float tot = 0.0f;
  if (threadIdx.x == 0) {
#pragma unroll
    for (int w = 0; w < NTHREADS / 32; ++w) tot += red[w];
  }
  return tot;  // valid in thread 0 only
}

// SQ: compiled for kSquare only (its per-thread sum of squares costs 32 registers the other modes do not need).
template <typename T, bool SQ>
__global__ void __launch_bounds__(NTHREADS)
    g_tile_kernel(const __grid_constant__ BlockTable tab, const float* __restrict__ mask, int N, int T_len, int K, int mode,
                  int n_base, int n_per_cta, float* __restrict__ S) {
  constexpr int ALD = BM + Elem<T>::PAD, BLD = BN + Elem<T>::PAD;
  __shared__ __align__(128) T As[BK * ALD];
  __shared__ __align__(128) T Bs[BK * BLD];
  __shared__ __align__(128) float Cs[BM * CLD];
  __shared__ float red[NTHREADS / 32];

  const int tile = blockIdx.x;
  int bi = 0;
  while (bi + 1 < tab.nblocks && tile >= tab.blk[bi + 1].tile_begin) ++bi;
  const DevBlock& blk = tab.blk[bi];
  const int lt = tile - blk.tile_begin;
  const int ti = lt / blk.tiles_n, tj = lt % blk.tiles_n;
  const int i0 = ti * BM, j0 = tj * BN;
  static_assert(BM == BN, "the symmetric covariance path pairs tile (ti, tj) with (tj, ti)");
  if (mode == kSum && blk.symmetric && tj < ti) return;  // its mirror tile (tj, ti) writes both halves
  const int warp = threadIdx.x / 32, wm = warp / 2, wn = warp % 2;

  const long long nb = (long long)n_base + (long long)blockIdx.y * n_per_cta;
  const long long ne = min((long long)N, nb + n_per_cta);

  wmma::fragment<wmma::accumulator, 16, 16, Elem<T>::FK, float> acc[2][2];
  float sq[SQ ? PER_THREAD : 1];
#pragma unroll
  for (int r = 0; r < (SQ ? PER_THREAD : 1); ++r) sq[r] = 0.0f;
#pragma unroll
  for (int fi = 0; fi < 2; ++fi)
#pragma unroll
    for (int fj = 0; fj < 2; ++fj) wmma::fill_fragment(acc[fi][fj], 0.0f);

  for (long long n = nb; n < ne; ++n) {
    if (mode != kSum) {
#pragma unroll
      for (int fi = 0; fi < 2; ++fi)
#pragma unroll
        for (int fj = 0; fj < 2; ++fj) wmma::fill_fragment(acc[fi][fj], 0.0f);
    }
    uint4 ra[ChunkShape<T>::NV], rb[ChunkShape<T>::NV];
    fetch_chunk<T>(ra, blk.a, n, 0, i0, T_len, mask, true);
    fetch_chunk<T>(rb, blk.b, n, 0, j0, T_len, mask, false);
    for (int t0 = 0; t0 < T_len; t0 += BK) {
      __syncthreads();  // previous chunk fully consumed
      commit_chunk<T, ALD>(As, ra);
      commit_chunk<T, BLD>(Bs, rb);
      __syncthreads();
      if (t0 + BK < T_len) {  // prefetch the next chunk into registers while the tensor cores run
        fetch_chunk<T>(ra, blk.a, n, t0 + BK, i0, T_len, mask, true);
        fetch_chunk<T>(rb, blk.b, n, t0 + BK, j0, T_len, mask, false);
      }
      mma_chunk<T>(As, Bs, wm, wn, acc);
    }
    if (mode == kSum) continue;

    stage_tile<T>(Cs, acc, wm, wn);  // G tile of sample n -> Cs (fp32, row major)

    if constexpr (SQ) {
#pragma unroll
      for (int r = 0; r < PER_THREAD; ++r) {
        const int e = threadIdx.x + r * NTHREADS;
        const float g = Cs[(e / BN) * CLD + e % BN];
        sq[r] += g * g;
      }
    } else if (mode == kStore) {
      float* out = blk.out + n * (long long)blk.M * blk.C;
      for (int e = threadIdx.x; e < BM * BN; e += NTHREADS) {
        const int i = i0 + e / BN, j = j0 + e % BN;
        if (i < blk.M && j < blk.C) out[(long long)i * blk.C + j] = Cs[(e / BN) * CLD + e % BN];
      }
    } else {  // kScore
      for (int k = 0; k < K; ++k) {
        const float* Pk = blk.P + (long long)k * blk.M * blk.C;
        float part = 0.0f;
#pragma unroll 4
        for (int r = 0; r < PER_THREAD; ++r) {
          const int e = threadIdx.x + r * NTHREADS;
          const int i = i0 + e / BN, j = j0 + e % BN;
          if (i < blk.M && j < blk.C) part += Cs[(e / BN) * CLD + e % BN] * Pk[(long long)i * blk.C + j];
        }
        const float tot = block_sum(part, red);
        if (threadIdx.x == 0) atomicAdd(S + n * K + k, tot);
      }
    }
  }

  if (mode == kSum) {
    if (nb >= ne) return;
    stage_tile<T>(Cs, acc, wm, wn);
#pragma unroll
    for (int r = 0; r < PER_THREAD; ++r) {
      const int e = threadIdx.x + r * NTHREADS;
      const int i = i0 + e / BN, j = j0 + e % BN;
      if (i < blk.M && j < blk.C) {
        const float v = Cs[(e / BN) * CLD + e % BN];
        atomicAdd(blk.out + (long long)i * blk.C + j, v);
        if (blk.symmetric && tj > ti) atomicAdd(blk.out + (long long)j * blk.C + i, v);  // M == C here
      }
    }
  } else if constexpr (SQ) {
    if (nb >= ne) return;
#pragma unroll
    for (int r = 0; r < PER_THREAD; ++r) {
      const int e = threadIdx.x + r * NTHREADS;
      const int i = i0 + e / BN, j = j0 + e % BN;
      if (i < blk.M && j < blk.C) atomicAdd(blk.out + (long long)i * blk.C + j, sq[r]);
    }
  }
}

template <typename T>
DevOperand make_operand(const Operand& h) {
  constexpr long long VEC = 16 / sizeof(T);
  const bool vec = h.ptr % 16 == 0 && h.sn % VEC == 0 && h.st % VEC == 0;
  return DevOperand{reinterpret_cast<const void*>(h.ptr), h.sn, h.st, h.width, h.bias ? 1 : 0, vec ? 1 : 0};
}

template <typename T>
void launch_typed(int mode, const std::vector<BlockDesc>& blocks, const float* mask, std::int64_t N,
                  std::int64_t T_len, std::int64_t K, float* S, cudaStream_t stream) {
  int device = 0, sms = 0;
  MDAF_CUDA_CHECK(cudaGetDevice(&device));
  MDAF_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  for (std::size_t g0 = 0; g0 < blocks.size(); g0 += MAX_BLOCKS) {
    BlockTable tab{};
    tab.nblocks = int(std::min<std::size_t>(MAX_BLOCKS, blocks.size() - g0));
    long long tiles = 0;
    for (int b = 0; b < tab.nblocks; ++b) {
      const BlockDesc& h = blocks[g0 + b];
      DevBlock& d = tab.blk[b];
      d.a = make_operand<T>(h.a);
      d.b = make_operand<T>(h.b);
      d.P = reinterpret_cast<const float*>(h.P);
      d.out = reinterpret_cast<float*>(h.out);
      d.M = h.a.cols();
      d.C = h.b.cols();
      d.tiles_n = (d.C + BN - 1) / BN;
      d.symmetric = (mode == kSum && h.a.ptr == h.b.ptr && h.a.sn == h.b.sn && h.a.st == h.b.st &&
                     h.a.width == h.b.width && h.a.bias == h.b.bias) ? 1 : 0;
      d.tile_begin = int(tiles);
      tiles += (long long)((d.M + BM - 1) / BM) * d.tiles_n;
    }
    if (tiles == 0) continue;
    if (tiles > 0x7fffffffLL) throw std::invalid_argument("cuda_run: too many tiles");
    // Samples per CTA: one for kScore/kStore (their output is per sample); for kSquare/kSum enough to give every
    // SM a few CTAs while amortising the final atomics.
    int n_per_cta = 1;
    if (mode == kSquare || mode == kSum) {
      const long long want_ctas = 4LL * sms;
      const long long groups = std::max<long long>(1, std::min<long long>(N, (want_ctas + tiles - 1) / tiles));
      n_per_cta = int((N + groups - 1) / groups);
      if (n_per_cta < 1) n_per_cta = 1;
    }
    const long long ygroups = (N + n_per_cta - 1) / n_per_cta;
    for (long long y0 = 0; y0 < ygroups; y0 += 65535) {
      const long long ny = std::min<long long>(65535, ygroups - y0);
      const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(ny), 1u);
      if (mode == kSquare) {
        g_tile_kernel<T, true><<<grid, NTHREADS, 0, stream>>>(tab, mask, int(N), int(T_len), int(K), mode,
                                                              int(y0 * n_per_cta), n_per_cta, S);
      } else {
        g_tile_kernel<T, false><<<grid, NTHREADS, 0, stream>>>(tab, mask, int(N), int(T_len), int(K), mode,
                                                               int(y0 * n_per_cta), n_per_cta, S);
      }
      MDAF_CUDA_CHECK(cudaGetLastError());
    }
  }
}

}  // namespace

void cuda_run(int mode, int dtype, const std::vector<BlockDesc>& blocks, std::uintptr_t mask, std::int64_t N,
              std::int64_t T, std::int64_t K, std::uintptr_t S, std::uintptr_t stream) {
  if (mode < kScore || mode > kStore) throw std::invalid_argument("cuda_run: unknown mode");
  if (N < 0 || T < 0 || K < 0) throw std::invalid_argument("cuda_run: negative size");
  if (N > 0x7fffffffLL || T > 0x7fffffffLL || K > 0x7fffffffLL)
    throw std::invalid_argument("cuda_run: N, T and K must fit in int32");
  if (blocks.empty()) throw std::invalid_argument("cuda_run: no blocks");
  for (const auto& b : blocks) {
    if ((b.a.width > 0 && !b.a.ptr) || (b.b.width > 0 && !b.b.ptr)) throw std::invalid_argument("cuda_run: bad operand");
    if (mode == kScore ? (K > 0 && !b.P) : !b.out) throw std::invalid_argument("cuda_run: missing output pointer");
  }
  if (mode == kScore && N * K > 0 && !S) throw std::invalid_argument("cuda_run: missing S");
  if (N == 0 || (mode == kScore && K == 0)) return;
  const float* m = reinterpret_cast<const float*>(mask);
  float* s = reinterpret_cast<float*>(S);
  cudaStream_t st = reinterpret_cast<cudaStream_t>(stream);
  switch (dtype) {
    case kF32: launch_typed<float>(mode, blocks, m, N, T, K, s, st); break;
    case kBF16: launch_typed<__nv_bfloat16>(mode, blocks, m, N, T, K, s, st); break;
    case kF16: launch_typed<__half>(mode, blocks, m, N, T, K, s, st); break;
    default: throw std::invalid_argument("cuda_run: unknown dtype code");
  }
}

std::string cuda_compiler_version() {
  return std::to_string(__CUDACC_VER_MAJOR__) + "." + std::to_string(__CUDACC_VER_MINOR__) + "." +
         std::to_string(__CUDACC_VER_BUILD__);
}

int cuda_runtime_version() {
  int v = 0;
  MDAF_CUDA_CHECK(cudaRuntimeGetVersion(&v));
  return v;
}

int cuda_driver_version() {
  int v = 0;
  if (cudaDriverGetVersion(&v) != cudaSuccess) return 0;
  return v;
}

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return 0;
  }
  return n;
}

}  // namespace mdaf
