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
  m.def("cpu_chunk_elements", &glad::cpu_chunk_elements,
        "Elements per piece of work in the CPU kernels (fixed: results do not depend on threads).");
}
