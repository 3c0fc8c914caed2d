// Module entry of glad._C: the glad:: op schemas and the Python module.
//
// The schemas mark what each op writes (Tensor(a!)[]), so torch.compile and
// functionalization treat the ops correctly; the fake (meta) kernels live in
// glad/ops/_native.py. Kernels: cpu_ops.cpp (CPU) and cuda/ops.cu (CUDA).
#include <torch/extension.h>
#include <torch/library.h>

#include "multi_tensor.h"

namespace glad {
bool built_with_cuda() {
#ifdef GLAD_WITH_CUDA
  return true;
#else
  return false;
#endif
}
int64_t cpu_chunk_elements();  // cpu_ops.cpp

// A hash of what glad.ops' argument checks depend on (address, shape, strides, dtype,
// device of every tensor), so a repeated call can reuse its validation: one pass in C++
// instead of ~0.2 us of Python per tensor.
int64_t tensor_fingerprint(const std::vector<std::vector<at::Tensor>>& lists) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a over 64-bit words
  auto mix = [&h](uint64_t v) {
    h ^= v;
    h *= 1099511628211ull;
  };
  for (const auto& list : lists) {
    mix(list.size());
    for (const auto& t : list) {
      mix(reinterpret_cast<uint64_t>(t.data_ptr()));
      mix(static_cast<uint64_t>(t.scalar_type()));
      mix(static_cast<uint64_t>(t.device().type()) << 8 | static_cast<uint64_t>(t.device().index() + 1));
      for (auto d : t.sizes()) mix(static_cast<uint64_t>(d));
      for (auto st : t.strides()) mix(static_cast<uint64_t>(st));
    }
  }
  return static_cast<int64_t>(h);
}
}  // namespace glad

TORCH_LIBRARY(glad, m) {
  // backup <- p; p <- p + rho g / (||g|| + 1e-12) over all tensors as one vector; returns (||g||, nonfinite).
  m.def("sam_perturb_(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] backup, float rho) -> (Tensor, Tensor)");
  // p <- backup, bit for bit, in p's existing storage.
  m.def("sam_restore_(Tensor(a!)[] params, Tensor[] backup) -> ()");
  // g <- (1 - alpha - alpha c) g + alpha g', c = min(<g,g'>, 0) / (||g||^2 + delta); returns (dot, ||g||^2, nonfinite).
  m.def("project_interpolate_(Tensor(a!)[] grads, Tensor[] ref_grads, float alpha, float delta) -> (Tensor, Tensor, Tensor)");
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("built_with_cuda", &glad::built_with_cuda, "Whether the CUDA kernels were compiled in.");
  m.def("tensor_fingerprint", &glad::tensor_fingerprint,
        "Hash of the address, shape, strides, dtype and device of every tensor of some lists.");
  m.def("cpu_chunk_elements", &glad::cpu_chunk_elements,
        "Elements per piece of work in the CPU kernels (fixed: results do not depend on threads).");
}
