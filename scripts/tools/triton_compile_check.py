"""Compile every Triton kernel of the GPU backend for NVIDIA targets without a GPU (Triton's own front end,
LLVM and the bundled ptxas): catches what Triton's interpreter accepts but its compiler refuses, before a GPU
is lent.  Run without TRITON_INTERPRET (it replaces the compiler):

    env -u TRITON_INTERPRET python scripts/tools/triton_compile_check.py [--arch 90 80] [--json out.json]

Prints one line per kernel, dtype and architecture; exits 1 if any compilation fails.
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import time

INDEX_POINTERS = {"n_ptr", "lm_ptr", "start_ptr", "parent_ptr", "last_ptr", "z_ptr", "i_ptr", "node_ptr",
                  "factor_idx_ptr", "tgt_ptr", "lo_ptr", "hi_ptr", "child_ptr"}
# the launch parameters of triton_kernels' wrappers (CUDA branch)
CASES = {"_pool_kernel": dict(BLOCK_A=64, BLOCK_E=32), "_dag_kernel": dict(NEED_GRAD=True, BLOCK=64),
         "_edge_grad_kernel": dict(BLOCK_A=32, BLOCK_E=32), "_level_forward_kernel": dict(BLOCK_K=16, BLOCK_N=64),
         "_dag_energy_kernel": dict(BLOCK_K=32, BLOCK_N=64), "_segment_kernel": dict(CH=16, BLOCK_I=16, BLOCK_N=64)}


def signature(fn, dtype: str, consts: dict) -> dict:
    sig = {}
    for name in inspect.signature(fn.fn).parameters:
        if name in consts:
            sig[name] = "constexpr"
        elif name.endswith("_ptr"):
            sig[name] = "*i64" if name in INDEX_POINTERS else "*" + dtype
        else:
            sig[name] = "i32"
    return sig


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", type=int, nargs="+", default=[90, 80], help="compute capabilities (90: H100/H200)")
    ap.add_argument("--json", help="write the results as JSON")
    a = ap.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print("unset TRITON_INTERPRET: the interpreter replaces the compiler", file=sys.stderr)
        return 2
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, compile as triton_compile

    from torchace.model.backends import triton_kernels as kernels

    results, failed = [], 0
    for arch in a.arch:
        for dtype in ("fp64", "fp32"):
            for name, consts in CASES.items():
                fn = getattr(kernels, name)
                t0 = time.perf_counter()
                try:
                    k = triton_compile(ASTSource(fn=fn, signature=signature(fn, dtype, consts), constexprs=consts),
                                       target=GPUTarget("cuda", arch, 32))
                    rec = dict(kernel=name, dtype=dtype, arch=arch, ok=True, shared_bytes=int(k.metadata.shared))
                except Exception as exc:  # noqa: BLE001 — report every kernel
                    failed += 1
                    rec = dict(kernel=name, dtype=dtype, arch=arch, ok=False,
                               error=f"{type(exc).__name__}: {exc}"[:500])
                rec["seconds"] = round(time.perf_counter() - t0, 2)
                results.append(rec)
                print(f"sm_{arch} {dtype} {name}: " + ("ok" if rec["ok"] else "FAILED " + rec["error"]), flush=True)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(results, fh, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
