#!/usr/bin/env python
"""The linear readout of the one ACE model costs what the linear model cost (issue 30): the torch hand-adjoint
path of a linear model, for one or more checkouts of torchace, interleaved in the same run.

    python scripts/benchmarks/bench_readout.py --checkout OLD=/path/to/old --checkout NEW=. --rounds 3 --out b.json

Each checkout runs in its own interpreter (``PYTHONPATH`` = the checkout, 1 thread), rounds alternating so that
the machine's load falls on both alike; 64-atom rattled Si, order 3, totaldegree 12, random coefficients:
  eval_ms   — ``model(...)`` in eval mode (energy, forces, virial: the analytic path), median of --calls;
  train_ms  — one training step in training mode: forward with forces, a force + energy loss, backward;
  ops, self_ms — aten operator calls and their self CPU time per eval call (torch.profiler): a load-independent
                 count of the work.
Prints a table (median over rounds) and writes JSON (--out).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys

from torchace.testing import ChildTimeout, run

CHILD = r"""
import json, statistics, sys, time
import torch
torch.set_num_threads(1)
import torchace
from torchace import keys as K
from torchace.structures import collate
from torchace.testing import randomize_coefficients, rattled_bulk
m = torchace.ace_model(["Si"], 3, 12)
randomize_coefficients(m, 0.1, seed=1)
atoms = rattled_bulk(["Si"], reps=(2, 2, 2), seed=3)
b = collate([atoms], m.config.numbers, m.rcut)
inp = (b[K.POSITIONS], b[K.SPECIES], b[K.BATCH], b[K.EDGE_INDEX], b[K.UNIT_SHIFTS], b[K.CELL], 1)

def ev():
    m.eval(); m(*inp, True, True)

def tr():
    m.train(); m.zero_grad(); out = m(*inp, True, True)
    ((out[K.FORCES] ** 2).sum() + out[K.ENERGY].sum()).backward()

res = {"atoms": len(atoms), "torchace": torchace.__file__}
for name, fn in (("eval_ms", ev), ("train_ms", tr)):
    for _ in range(3):
        fn()
    ts = []
    for _ in range(int(sys.argv[1])):
        t0 = time.perf_counter(); fn(); ts.append(time.perf_counter() - t0)
    res[name] = 1e3 * statistics.median(ts)
from torch.profiler import ProfilerActivity, profile
m.eval()
with profile(activities=[ProfilerActivity.CPU]) as prof:
    for _ in range(5):
        m(*inp, True, True)
ev_ = prof.key_averages()
res["ops"] = sum(e.count for e in ev_) / 5
res["self_ms"] = sum(e.self_cpu_time_total for e in ev_) / 5 / 1e3
print(json.dumps(res))
"""

KEYS = ("eval_ms", "train_ms", "ops", "self_ms")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkout", action="append", required=True, help="NAME=PATH of a torchace checkout")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--calls", type=int, default=30)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    checkouts = [c.split("=", 1) for c in args.checkout]
    rounds = {name: [] for name, _ in checkouts}
    for _ in range(args.rounds):
        for name, path in checkouts:
            env = dict(os.environ, PYTHONPATH=os.path.abspath(path), OMP_NUM_THREADS="1")
            try:
                r = run([sys.executable, "-c", CHILD, str(args.calls)], env=env, cwd=os.path.abspath(path),
                        timeout=900)
            except ChildTimeout:
                raise SystemExit(f"{name}: timed out") from None
            if r.returncode:
                raise SystemExit(f"{name} failed (rc {r.returncode}): {r.stderr[-2000:]}")
            rounds[name].append(json.loads(r.stdout.strip().splitlines()[-1]))
    summary = {name: {k: statistics.median(x[k] for x in rs) for k in KEYS} for name, rs in rounds.items()}
    print(f"{'checkout':<10}" + "".join(f"{k:>12}" for k in KEYS))
    for name, s in summary.items():
        print(f"{name:<10}" + "".join(f"{s[k]:>12.2f}" for k in KEYS))
    out = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "rounds": rounds,
           "median": summary, "calls": args.calls}
    if args.out:
        from torchace.atomic import write_json_atomic

        write_json_atomic(args.out, out)
    return out


if __name__ == "__main__":
    main()
