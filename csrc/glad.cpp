// Module entry of glad._C (placeholder until the kernels land, issue #3).
#include <torch/extension.h>

namespace glad {
bool built_with_cuda() {
#ifdef GLAD_WITH_CUDA
  return true;
#else
  return false;
#endif
}
}  // namespace glad

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("built_with_cuda", &glad::built_with_cuda, "Whether the CUDA kernels were compiled in.");
}
