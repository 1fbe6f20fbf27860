// pybind11 module mda_fast._C. Thin: converts Python ints/tuples into kernel descriptors; no libtorch.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <omp.h>

#include <stdexcept>
#include <tuple>
#include <vector>

#include "kernels.h"

namespace py = pybind11;

namespace {

// One block as passed from Python:
// (a_ptr, a_sn, a_st, a_width, a_bias, b_ptr, b_sn, b_st, b_width, b_bias, P_ptr, out_ptr)
using BlockTuple = std::tuple<std::uintptr_t, std::int64_t, std::int64_t, int, bool, std::uintptr_t, std::int64_t,
                              std::int64_t, int, bool, std::uintptr_t, std::uintptr_t>;

std::vector<mdaf::BlockDesc> to_blocks(const std::vector<BlockTuple>& in) {
  std::vector<mdaf::BlockDesc> out;
  out.reserve(in.size());
  for (const auto& t : in) {
    mdaf::BlockDesc b;
    b.a = mdaf::Operand{std::get<0>(t), std::get<1>(t), std::get<2>(t), std::get<3>(t), std::get<4>(t)};
    b.b = mdaf::Operand{std::get<5>(t), std::get<6>(t), std::get<7>(t), std::get<8>(t), std::get<9>(t)};
    b.P = std::get<10>(t);
    b.out = std::get<11>(t);
    out.push_back(b);
  }
  return out;
}

py::dict build_info() {
  py::dict d;
  d["cxx_compiler"] = MDA_FAST_CXX_COMPILER;
  d["cuda_option"] = MDA_FAST_CUDA_OPTION;  // the MDA_FAST_CUDA setting of the build: AUTO, ON or OFF
  d["openmp_max_threads"] = omp_get_max_threads();
  d["openmp_version"] = _OPENMP;
#ifdef MDA_FAST_WITH_CUDA
  d["cuda"] = true;
  std::vector<int> archs;
  {
    std::string s = MDA_FAST_CUDA_ARCHS, cur;
    for (char c : s + ",") {
      if (c == ',') {
        if (!cur.empty()) archs.push_back(std::stoi(cur));
        cur.clear();
      } else if (c >= '0' && c <= '9') {
        cur += c;
      }
    }
  }
  d["cuda_archs"] = archs;
  d["cuda_compiler"] = MDA_FAST_CUDA_COMPILER;
  d["nvcc_version"] = mdaf::cuda_compiler_version();
  d["cuda_runtime_version"] = mdaf::cuda_runtime_version();
#else
  d["cuda"] = false;
  d["cuda_archs"] = std::vector<int>{};
  d["cuda_compiler"] = py::none();
  d["nvcc_version"] = py::none();
  d["cuda_runtime_version"] = py::none();
#endif
  return d;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "mda_fast compiled kernels (CPU: C++17/OpenMP; CUDA when built with nvcc). No libtorch.";
  m.attr("MODE_SCORE") = int(mdaf::kScore);
  m.attr("MODE_SQUARE") = int(mdaf::kSquare);
  m.attr("MODE_SUM") = int(mdaf::kSum);
  m.attr("MODE_STORE") = int(mdaf::kStore);
  m.attr("DTYPE_F32") = int(mdaf::kF32);
  m.attr("DTYPE_BF16") = int(mdaf::kBF16);
  m.attr("DTYPE_F16") = int(mdaf::kF16);
#ifdef MDA_FAST_WITH_CUDA
  m.attr("WITH_CUDA") = true;
#else
  m.attr("WITH_CUDA") = false;
#endif
  m.def("build_info", &build_info, "Build configuration: CUDA compiled, archs, compiler versions, OpenMP threads.");
  m.def("cpu_max_threads", &mdaf::cpu_max_threads);
  m.def("set_num_threads", [](int n) {
    if (n < 1) throw std::invalid_argument("set_num_threads: n must be >= 1");
    omp_set_num_threads(n);
  }, "Threads of the OpenMP CPU kernels (for the calling thread's later calls).");
  m.def(
      "cpu_run",
      [](int mode, int dtype, const std::vector<BlockTuple>& blocks, std::uintptr_t mask, std::int64_t N,
         std::int64_t T, std::int64_t K, std::uintptr_t S) {
        auto b = to_blocks(blocks);
        py::gil_scoped_release nogil;
        mdaf::cpu_run(mode, dtype, b, mask, N, T, K, S);
      },
      py::arg("mode"), py::arg("dtype"), py::arg("blocks"), py::arg("mask"), py::arg("N"), py::arg("T"),
      py::arg("K"), py::arg("S"),
      "CPU kernel. blocks: list of (a_ptr, a_sn, a_st, a_width, a_bias, b_ptr, b_sn, b_st, b_width, b_bias, "
      "P_ptr, out_ptr); pointers are raw addresses, strides in elements.");
#ifdef MDA_FAST_WITH_CUDA
  m.def(
      "cuda_run",
      [](int mode, int dtype, const std::vector<BlockTuple>& blocks, std::uintptr_t mask, std::int64_t N,
         std::int64_t T, std::int64_t K, std::uintptr_t S, std::uintptr_t stream) {
        auto b = to_blocks(blocks);
        py::gil_scoped_release nogil;
        mdaf::cuda_run(mode, dtype, b, mask, N, T, K, S, stream);
      },
      py::arg("mode"), py::arg("dtype"), py::arg("blocks"), py::arg("mask"), py::arg("N"), py::arg("T"),
      py::arg("K"), py::arg("S"), py::arg("stream"),
      "CUDA kernel on the given stream (same arguments as cpu_run). kScore adds into S.");
  m.def("cuda_device_count", &mdaf::cuda_device_count);
  m.def("cuda_driver_version", &mdaf::cuda_driver_version);
#endif
}
