// C++17 + OpenMP CPU kernels: blocked per-sample outer-product accumulation with four epilogues.
//
// Per sample, tokens are processed in chunks of TC. A chunk's tokens with a non-zero mask are packed into fp32
// panels (a: MR rows of G per panel, scaled by the mask; b: NR columns of G per panel), and an MR x NR register
// tile of G accumulates over the chunk's tokens (loop over T inside). G of one sample lives in a per-thread
// buffer (cache resident for the demo shapes) and is consumed by the epilogue.
#include "kernels.h"

#include <omp.h>
#if defined(__F16C__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <vector>

namespace mdaf {
namespace {

#if defined(__AVX512F__)
constexpr int MR = 8;    // rows of the register tile (8 x 16 fp32 accumulators: 8 zmm / 16 ymm of 32)
#else
constexpr int MR = 6;    // rows of the register tile (6 x 16 fp32 accumulators: 12 of 16 ymm)
#endif
constexpr int NR = 16;   // columns of the register tile
constexpr int TC = 128;  // tokens per packed chunk

inline int round_up(int x, int m) { return (x + m - 1) / m * m; }

inline float f16_to_float(std::uint16_t h) {
  const std::uint32_t sign = std::uint32_t(h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1fu;
  const std::uint32_t man = h & 0x3ffu;
  std::uint32_t u;
  if (exp == 0) {
    const float f = std::ldexp(float(man), -24);  // zero or subnormal
    return sign ? -f : f;
  } else if (exp == 31) {
    u = sign | 0x7f800000u | (man << 13);  // inf / nan
  } else {
    u = sign | ((exp + 112u) << 23) | (man << 13);
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// dst[0, width) = fp32 values of src[0, width).
template <int DT>
inline void convert_row(std::uintptr_t base, std::int64_t off, int width, float* __restrict dst) {
  if constexpr (DT == kF32) {
    std::memcpy(dst, reinterpret_cast<const float*>(base) + off, sizeof(float) * width);
  } else if constexpr (DT == kBF16) {
    const std::uint16_t* src = reinterpret_cast<const std::uint16_t*>(base) + off;
#pragma omp simd
    for (int j = 0; j < width; ++j) {
      const std::uint32_t u = std::uint32_t(src[j]) << 16;
      float f;
      std::memcpy(&f, &u, 4);
      dst[j] = f;
    }
  } else {
    const std::uint16_t* src = reinterpret_cast<const std::uint16_t*>(base) + off;
    int j = 0;
#if defined(__F16C__)
    for (; j + 8 <= width; j += 8)
      _mm256_storeu_ps(dst + j, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + j))));
#endif
    for (; j < width; ++j) dst[j] = f16_to_float(src[j]);
  }
}

// Per-thread scratch, sized for the largest block of a call.
struct Workspace {
  std::vector<std::int64_t> tok;
  std::vector<float> w, row, apan, bpan, g, local;
  Workspace(int Mp, int Cp, bool need_local)
      : tok(TC), w(TC), row(std::size_t(std::max(Mp, Cp))), apan(std::size_t(TC) * Mp), bpan(std::size_t(TC) * Cp),
        g(std::size_t(Mp) * Cp), local(need_local ? std::size_t(Mp) * Cp : 0) {}
};

// Packs columns [0, npanels*W) of operand `op` for the kk selected tokens into panels [npanels][kk][W];
// columns past op.cols() are zero. Row r is scaled by w[r] when w is given. `row` holds npanels*W floats.
template <int DT>
void pack_panels(const Operand& op, std::int64_t n, const std::int64_t* tok, const float* w, int kk, int W,
                 int npanels, float* __restrict buf, float* __restrict row) {
  const int total = npanels * W;
  for (int j = op.width; j < total; ++j) row[j] = 0.0f;
  if (op.bias && op.width < total) row[op.width] = 1.0f;
  for (int r = 0; r < kk; ++r) {
    convert_row<DT>(op.ptr, n * op.sn + tok[r] * op.st, op.width, row);
    const float scale = w ? w[r] : 1.0f;
    for (int p = 0; p < npanels; ++p) {
      float* __restrict d = buf + (std::size_t(p) * kk + r) * W;
      const float* __restrict s = row + std::size_t(p) * W;
#pragma omp simd
      for (int c = 0; c < W; ++c) d[c] = s[c] * scale;
    }
  }
}

// c[MR x NR] (leading dimension ldc) += a_panelᵀ b_panel over kk tokens.
inline void micro_kernel(const float* __restrict a, const float* __restrict b, int kk, float* __restrict c,
                         int ldc) {
  float acc[MR][NR];
  for (int r = 0; r < MR; ++r)
    for (int s = 0; s < NR; ++s) acc[r][s] = c[r * ldc + s];
  for (int t = 0; t < kk; ++t) {
    const float* at = a + t * MR;
    const float* bt = b + t * NR;
    for (int r = 0; r < MR; ++r) {
      const float av = at[r];
#pragma omp simd
      for (int s = 0; s < NR; ++s) acc[r][s] += av * bt[s];
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int s = 0; s < NR; ++s) c[r * ldc + s] = acc[r][s];
}

// g[Mp x Cp] += sum over tokens [tb, te) of sample n of m_t a_t b_tᵀ. With `upper` (a == b, so G is symmetric)
// register tiles lying entirely below the diagonal are skipped; entries (i, j) with i <= j are always exact.
template <int DT>
void accumulate_tokens(const BlockDesc& blk, std::int64_t n, std::int64_t tb, std::int64_t te, const float* mask,
                       std::int64_t T, Workspace& ws, float* g, bool upper = false) {
  const int M = blk.a.cols(), C = blk.b.cols();
  const int Mp = round_up(M, MR), Cp = round_up(C, NR);
  for (std::int64_t t0 = tb; t0 < te; t0 += TC) {
    const std::int64_t t1 = std::min<std::int64_t>(t0 + TC, te);
    int kk = 0;
    for (std::int64_t t = t0; t < t1; ++t) {
      const float m = mask ? mask[n * T + t] : 1.0f;
      if (m != 0.0f) {
        ws.tok[kk] = t;
        ws.w[kk] = m;
        ++kk;
      }
    }
    if (kk == 0) continue;
    pack_panels<DT>(blk.a, n, ws.tok.data(), ws.w.data(), kk, MR, Mp / MR, ws.apan.data(), ws.row.data());
    pack_panels<DT>(blk.b, n, ws.tok.data(), nullptr, kk, NR, Cp / NR, ws.bpan.data(), ws.row.data());
    for (int pi = 0; pi < Mp / MR; ++pi) {
      const float* ap = ws.apan.data() + std::size_t(pi) * kk * MR;
      for (int pj = 0; pj < Cp / NR; ++pj) {
        if (upper && (pj + 1) * NR <= pi * MR) continue;  // tile strictly below the diagonal
        micro_kernel(ap, ws.bpan.data() + std::size_t(pj) * kk * NR, kk, g + std::size_t(pi) * MR * Cp + pj * NR,
                     Cp);
      }
    }
  }
}

template <int DT>
void run_typed(int mode, const std::vector<BlockDesc>& blocks, const float* mask, std::int64_t N, std::int64_t T,
               std::int64_t K, float* S) {
  int Mp_max = MR, Cp_max = NR;
  for (const auto& b : blocks) {
    Mp_max = std::max(Mp_max, round_up(b.a.cols(), MR));
    Cp_max = std::max(Cp_max, round_up(b.b.cols(), NR));
  }
  if (mode == kScore) {
#pragma omp parallel
    {
      Workspace ws(Mp_max, Cp_max, false);
      std::vector<double> s(K);
#pragma omp for schedule(dynamic, 1)
      for (std::int64_t n = 0; n < N; ++n) {
        std::fill(s.begin(), s.end(), 0.0);
        for (const auto& blk : blocks) {
          const int M = blk.a.cols(), C = blk.b.cols(), Cp = round_up(C, NR);
          float* g = ws.g.data();
          std::fill(g, g + std::size_t(round_up(M, MR)) * Cp, 0.0f);
          accumulate_tokens<DT>(blk, n, 0, T, mask, T, ws, g);
          const float* P = reinterpret_cast<const float*>(blk.P);
          for (std::int64_t k = 0; k < K; ++k) {
            const float* Pk = P + k * std::int64_t(M) * C;
            double tot = 0.0;
            for (int i = 0; i < M; ++i) {
              float part = 0.0f;
              const float* gi = g + std::size_t(i) * Cp;
              const float* pi = Pk + std::size_t(i) * C;
#pragma omp simd reduction(+ : part)
              for (int j = 0; j < C; ++j) part += gi[j] * pi[j];
              tot += part;
            }
            s[k] += tot;
          }
        }
        for (std::int64_t k = 0; k < K; ++k) S[n * K + k] = float(s[k]);
      }
    }
    return;
  }
  for (const auto& blk : blocks) {
    const int M = blk.a.cols(), C = blk.b.cols();
    const int Mp = round_up(M, MR), Cp = round_up(C, NR);
    float* out = reinterpret_cast<float*>(blk.out);
    if (mode == kStore) {
#pragma omp parallel
      {
        Workspace ws(Mp, Cp, false);
#pragma omp for schedule(dynamic, 1)
        for (std::int64_t n = 0; n < N; ++n) {
          float* g = ws.g.data();
          std::fill(ws.g.begin(), ws.g.end(), 0.0f);
          accumulate_tokens<DT>(blk, n, 0, T, mask, T, ws, g);
          float* on = out + n * std::int64_t(M) * C;
          for (int i = 0; i < M; ++i) std::memcpy(on + std::size_t(i) * C, g + std::size_t(i) * Cp, sizeof(float) * C);
        }
      }
      continue;
    }
    // kSquare: per-sample G, squared into a thread-local sum. kSum: work items are (sample, token chunk) pairs
    // accumulated straight into the thread-local G, so N = 1 with long T still uses every thread.
    const std::int64_t chunks = mode == kSum ? (T + TC - 1) / TC : 1;
    const bool sym = mode == kSum && blk.a.ptr == blk.b.ptr && blk.a.sn == blk.b.sn && blk.a.st == blk.b.st &&
                     blk.a.width == blk.b.width && blk.a.bias == blk.b.bias;
    const std::int64_t items = N * chunks;
#pragma omp parallel
    {
      Workspace ws(Mp, Cp, mode == kSquare);
      float* g = ws.g.data();
      std::fill(ws.g.begin(), ws.g.end(), 0.0f);
      bool touched = false;
#pragma omp for schedule(dynamic, 1)
      for (std::int64_t it = 0; it < items; ++it) {
        touched = true;
        if (mode == kSum) {
          const std::int64_t n = it / chunks, c = it % chunks;
          accumulate_tokens<DT>(blk, n, c * TC, std::min<std::int64_t>((c + 1) * TC, T), mask, T, ws, g, sym);
        } else {
          std::fill(ws.g.begin(), ws.g.end(), 0.0f);
          accumulate_tokens<DT>(blk, it, 0, T, mask, T, ws, g);
          float* loc = ws.local.data();
          for (std::size_t e = 0; e < ws.g.size(); ++e) loc[e] += g[e] * g[e];
        }
      }
      if (touched) {
        const float* src = mode == kSum ? g : ws.local.data();
#pragma omp critical(mdaf_reduce)
        for (int i = 0; i < M; ++i)
          for (int j = 0; j < C; ++j)
            out[std::size_t(i) * C + j] += (sym && j < i) ? src[std::size_t(j) * Cp + i] : src[std::size_t(i) * Cp + j];
      }
    }
  }
}

}  // namespace

void cpu_run(int mode, int dtype, const std::vector<BlockDesc>& blocks, std::uintptr_t mask, std::int64_t N,
             std::int64_t T, std::int64_t K, std::uintptr_t S) {
  if (mode < kScore || mode > kStore) throw std::invalid_argument("cpu_run: unknown mode");
  if (N < 0 || T < 0 || K < 0) throw std::invalid_argument("cpu_run: negative size");
  if (blocks.empty()) throw std::invalid_argument("cpu_run: no blocks");
  for (const auto& b : blocks) {
    if ((b.a.width > 0 && !b.a.ptr) || (b.b.width > 0 && !b.b.ptr) || b.a.width < 0 || b.b.width < 0)
      throw std::invalid_argument("cpu_run: bad operand");
    if (mode == kScore ? (K > 0 && !b.P) : !b.out) throw std::invalid_argument("cpu_run: missing output pointer");
  }
  if (mode == kScore && N * K > 0 && !S) throw std::invalid_argument("cpu_run: missing S");
  const float* m = reinterpret_cast<const float*>(mask);
  float* s = reinterpret_cast<float*>(S);
  switch (dtype) {
    case kF32: run_typed<kF32>(mode, blocks, m, N, T, K, s); break;
    case kBF16: run_typed<kBF16>(mode, blocks, m, N, T, K, s); break;
    case kF16: run_typed<kF16>(mode, blocks, m, N, T, K, s); break;
    default: throw std::invalid_argument("cpu_run: unknown dtype code");
  }
}

int cpu_max_threads() { return omp_get_max_threads(); }

}  // namespace mdaf
