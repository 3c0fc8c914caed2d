"""Compile every glad Triton kernel ahead of time for the given GPU targets, no GPU needed.

    TRITON_INTERPRET=0 python tests/triton_aot.py 80 90

Each kernel in each variant a launch can take: element dtype (float32, float16, bfloat16),
its constexpr switches, and a 32- or 64-bit element count (Triton passes counts of 2**31
and more as 64-bit). Prints one line per target and exits non-zero on the first failure.
"""

from __future__ import annotations

import itertools
import sys

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

import glad.ops._triton as T

DTYPES = ("fp32", "fp16", "bf16")
COUNTS = ("i32", "i64")


def variants():
    """(kernel, signature, constexprs) for every launch the backend makes."""
    for dtype, n, dot in itertools.product(DTYPES, COUNTS, (False, True)):
        yield (T._reduce_kernel, {"a_ptr": f"*{dtype}", "b_ptr": f"*{dtype}", "partial_ptr": "*fp32", "n": n,
                                  "DOT": "constexpr", "BLOCK": "constexpr"}, {"DOT": dot, "BLOCK": T.BLOCK})
    for project, parts in itertools.product((False, True), COUNTS):
        yield (T._finalize_kernel, {"partial_ptr": "*fp32", "parts": parts, "stats_ptr": "*fp32", "bad_ptr": "*i8",
                                    "coef_ptr": "*fp32", "alpha": "fp32", "delta": "fp32", "rho": "fp32",
                                    "PROJECT": "constexpr", "FIN_BLOCK": "constexpr"},
               {"PROJECT": project, "FIN_BLOCK": T.FIN_BLOCK})
    for dtype, n in itertools.product(DTYPES, COUNTS):
        yield (T._mix_kernel, {"g_ptr": f"*{dtype}", "r_ptr": f"*{dtype}", "coef_ptr": "*fp32", "bad_ptr": "*i8",
                               "n": n, "alpha": "fp32", "BLOCK": "constexpr"}, {"BLOCK": T.BLOCK})
        yield (T._perturb_kernel, {"p_ptr": f"*{dtype}", "g_ptr": f"*{dtype}", "backup_ptr": f"*{dtype}",
                                   "coef_ptr": "*fp32", "n": n, "BLOCK": "constexpr"}, {"BLOCK": T.BLOCK})


def main(archs: list[int]) -> int:
    for arch in archs:
        target = GPUTarget("cuda", arch, 32)
        count = 0
        for kernel, signature, constexprs in variants():
            try:
                compiled = triton.compile(ASTSource(fn=kernel, signature=signature, constexprs=constexprs),
                                          target=target)
            except Exception as e:  # noqa: BLE001 - report which variant, then fail
                print(f"sm_{arch}: {kernel.__name__} {signature} {constexprs}: {type(e).__name__}: {e}")
                return 1
            if not compiled.asm.get("cubin"):
                print(f"sm_{arch}: {kernel.__name__} {signature}: no cubin")
                return 1
            count += 1
        print(f"sm_{arch}: {count} kernel variants compiled")
    return 0


if __name__ == "__main__":
    sys.exit(main([int(a) for a in sys.argv[1:]] or [80, 90]))
