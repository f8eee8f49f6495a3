#!/usr/bin/env python
"""Per-call overhead check of the reliability work (issue 26, "no measurable slowdown"): one ASE calculator
call and the default ``torchace fit``, for one or more checkouts of torchace, interleaved in the same run.

    python scripts/benchmarks/bench_overhead.py --checkout OLD=/path/to/old --checkout NEW=. --rounds 3 --out bench.json

Each checkout is measured in its own interpreter (``PYTHONPATH`` = the checkout), alternating rounds so that
the machine's load falls on both alike:
  calculator  — TorchACECalculator (default backend) on 64-atom rattled Si (Si order 3, totaldegree 12), energy +
                forces; every step moves the atoms by <= 1e-4 Å so no result is cached; median of --calls
                steps after a warm-up (the kernel build is not timed);
  fit         — the README's main job, ``torchace fit -q`` (torchace/data/default_fit.yaml) in a scratch
                directory: wall time of the whole command (--no-fit skips it).
Prints a table (median over rounds) and writes JSON (--out).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

from torchace.testing import ChildTimeout, run

CALC = r"""
import json, statistics, sys, time
import numpy as np, torch
torch.set_num_threads(int(sys.argv[2]))
import torchace
from torchace.calculators import TorchACECalculator
from torchace.testing import randomize_coefficients, rattled_bulk
m = torchace.ace_model(["Si"], 3, 12)
randomize_coefficients(m, 0.1, seed=1)
atoms = rattled_bulk(["Si"], reps=(2, 2, 2), seed=3)
atoms.calc = TorchACECalculator(m)
rng = np.random.default_rng(0)
for _ in range(5):
    atoms.positions += rng.uniform(-1e-4, 1e-4, atoms.positions.shape); atoms.get_forces()
ts = []
for _ in range(int(sys.argv[1])):
    atoms.positions += rng.uniform(-1e-4, 1e-4, atoms.positions.shape)
    t0 = time.perf_counter(); atoms.get_potential_energy(); atoms.get_forces(); ts.append(time.perf_counter() - t0)
print(json.dumps({"calculator_us": 1e6 * statistics.median(ts), "atoms": len(atoms),
                  "backend": atoms.calc.backend, "torchace": torchace.__file__}))
"""


def _run(cmd, env, cwd, timeout):
    """The child's stdout; its whole process group killed on timeout (torchace.testing.run)."""
    try:
        r = run(cmd, env=env, cwd=cwd, timeout=timeout)
    except ChildTimeout:
        raise SystemExit(f"{cmd[:3]}: timed out after {timeout} s") from None
    if r.returncode:
        raise SystemExit(f"{cmd[:3]} failed (rc {r.returncode}): {r.stderr[-2000:]}")
    return r.stdout


def measure(path: str, calls: int, threads: int, fit: bool) -> dict:
    env = dict(os.environ, PYTHONPATH=os.path.abspath(path), OMP_NUM_THREADS=str(threads))
    out = _run([sys.executable, "-c", CALC, str(calls), str(threads)], env, path, 900)
    r = json.loads(out.strip().splitlines()[-1])
    imported = os.path.realpath(r.pop("torchace"))
    if not imported.startswith(os.path.realpath(path) + os.sep):  # the checkout measured is the one imported
        raise SystemExit(f"{path}: torchace was imported from {imported}, not from this checkout")
    if fit:
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            _run([sys.executable, "-c", "import sys; from torchace.cli import main; sys.exit(main())", "fit", "-q"],
                 env, d, 1800)
            r["fit_s"] = time.perf_counter() - t0
    return r


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkout", action="append", required=True, help="NAME=PATH of a torchace checkout")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-fit", action="store_true")
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    checkouts = [c.split("=", 1) for c in args.checkout]
    runs = {name: [] for name, _ in checkouts}
    for k in range(args.rounds):
        for name, path in (checkouts if k % 2 == 0 else checkouts[::-1]):
            runs[name].append(measure(path, args.calls, args.threads, not args.no_fit))
            print(f"round {k + 1} {name}: {runs[name][-1]}", file=sys.stderr, flush=True)
    rows = []
    print("| checkout | calculator µs/call (64 atoms) | torchace fit s |")
    print("|---|---|---|")
    for name, _ in checkouts:
        calc = statistics.median(r["calculator_us"] for r in runs[name])
        fit = statistics.median(r["fit_s"] for r in runs[name]) if not args.no_fit else None
        rows.append({"checkout": name, "calculator_us": calc, "fit_s": fit})
        print(f"| {name} | {calc:.0f} | {'' if fit is None else f'{fit:.1f}'} |")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"machine": platform.processor() or platform.machine(), "threads": args.threads,
                       "rounds": args.rounds, "calls": args.calls, "summary": rows, "runs": runs}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
