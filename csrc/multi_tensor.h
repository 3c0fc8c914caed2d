// Shared by the CPU and CUDA kernels: argument checks and the fixed split into pieces.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

namespace glad {

// Checks two parallel tensor lists the way every glad:: op needs them. The Python
// API (glad.ops) checks the same with friendlier messages before calling an op.
inline void check_pairs(at::TensorList a, at::TensorList b, const char* op, const char* a_name,
                        const char* b_name) {
  TORCH_CHECK(a.size() == b.size(), "glad::", op, ": ", a_name, " has ", a.size(), " tensors but ",
              b_name, " has ", b.size(), "; pass one ", b_name, " entry per ", a_name, " entry.");
  for (size_t i = 0; i < a.size(); ++i) {
    TORCH_CHECK(a[i].sizes() == b[i].sizes(), "glad::", op, ": ", a_name, "[", i, "] has shape ",
                a[i].sizes(), " but ", b_name, "[", i, "] has shape ", b[i].sizes(), ".");
    TORCH_CHECK(a[i].scalar_type() == b[i].scalar_type(), "glad::", op, ": ", a_name, "[", i,
                "] is ", a[i].scalar_type(), " but ", b_name, "[", i, "] is ", b[i].scalar_type(), ".");
    const auto st = a[i].scalar_type();
    TORCH_CHECK(st == at::kFloat || st == at::kHalf || st == at::kBFloat16, "glad::", op, ": ",
                a_name, "[", i, "] is ", st, "; supported dtypes are float32, float16 and bfloat16.");
    TORCH_CHECK(a[i].device() == a[0].device() && b[i].device() == a[0].device(), "glad::", op,
                ": pair ", i, " is not on ", a[0].device(), "; all tensors must be on one device.");
  }
}

// A piece of work: elements [begin, end) of tensor `tensor`.
struct Piece {
  int64_t tensor;
  int64_t begin;
  int64_t end;
};

// Splits every tensor into pieces of at most `chunk` elements. The split depends only on
// the sizes, never on the thread count, so per-piece partial sums are reproducible.
inline std::vector<Piece> make_pieces(const std::vector<int64_t>& numels, int64_t chunk) {
  std::vector<Piece> pieces;
  for (size_t t = 0; t < numels.size(); ++t) {
    for (int64_t begin = 0; begin < numels[t]; begin += chunk) {
      pieces.push_back({static_cast<int64_t>(t), begin, std::min(numels[t], begin + chunk)});
    }
  }
  return pieces;
}

// Contiguous working copies of `ts` (the tensor itself where it already is contiguous).
inline std::vector<at::Tensor> contiguous(at::TensorList ts) {
  std::vector<at::Tensor> out;
  out.reserve(ts.size());
  for (const auto& t : ts) out.push_back(t.contiguous());
  return out;
}

// Writes the contiguous working copies back into tensors that were not contiguous.
inline void write_back(at::TensorList dst, const std::vector<at::Tensor>& work) {
  for (size_t i = 0; i < dst.size(); ++i) {
    if (!dst[i].is_same(work[i])) dst[i].copy_(work[i]);
  }
}

}  // namespace glad
