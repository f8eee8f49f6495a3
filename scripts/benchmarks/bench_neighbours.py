#!/usr/bin/env python
"""Neighbour-list build time: the torch cell list (torchace.structures.neighbours.cell_list) against the numpy path.

    python scripts/benchmarks/bench_neighbours.py                                  # CPU, 1000 8000 64000 atoms
    python scripts/benchmarks/bench_neighbours.py --device cuda --sizes 1000 8000 64000 1000000
    python scripts/benchmarks/bench_neighbours.py --dry-run                        # tiny sizes, seconds on a CPU

Structures: ase.build.bulk('Si', 'diamond', 5.43, cubic=True) repeated n × n × n (8 n³ atoms, n chosen so
that 8 n³ is closest to each size), rattled 0.05 Å (seed 1), periodic, cutoff --rcut (default 5.5 Å: the
calculator's rcut + skin for a 5 Å model).  Cases:
  torch cell list     — cell_list_neighbours on positions/cell already on --device (float64)
  numpy list → device — torchace.structures.neighbours.pairs.neighbour_list (dense torch on the CPU for small
                        structures, vesin or ASE for large ones) and the copy of (i, j, S) to --device, as
                        TorchACECalculator does on the CPU
Median of --repeats timed calls after one warm-up call; torch.cuda.synchronize() around each call on
CUDA.  The pair counts of the two must be equal (exit status 1 otherwise).  Prints a Markdown table; --json
writes the results (rewritten after every size).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

import numpy as np
import torch
from ase.build import bulk

from torchace.structures.neighbours.cell_list import cell_list_neighbours
from torchace.structures.neighbours.pairs import neighbour_list


def structure(size: int, rattle: float = 0.05, seed: int = 1):
    n = max(1, round((size / 8) ** (1 / 3)))
    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat((n, n, n))
    atoms.rattle(rattle, seed=seed)
    return atoms


def _timed(fn, device: torch.device, repeats: int):
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    out = fn()  # warm-up
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def bench(size: int, device: torch.device, rcut: float, repeats: int) -> dict:
    atoms = structure(size)
    pos, cell, pbc = atoms.positions, atoms.cell.array, atoms.get_pbc()
    pos_t = torch.as_tensor(pos, dtype=torch.float64, device=device)
    cell_t = torch.as_tensor(cell, dtype=torch.float64, device=device)

    def numpy_path():
        i, j, S = neighbour_list(pos, cell, pbc, rcut)
        return (torch.as_tensor(np.stack([i, j]), device=device), torch.as_tensor(S, device=device))

    t_torch, (i, _, _) = _timed(lambda: cell_list_neighbours(pos_t, cell_t, pbc, rcut), device, repeats)
    t_numpy, (edge_index, _) = _timed(numpy_path, device, repeats)
    return {"atoms": len(atoms), "pairs": int(i.shape[0]), "pairs_numpy": int(edge_index.shape[1]),
            "torch_cell_list_s": t_torch, "numpy_to_device_s": t_numpy, "speedup": t_numpy / t_torch}


def markdown(rows, device: torch.device, threads: int) -> str:
    head = (f"device {device}, {threads} CPU threads, torch {torch.__version__}\n\n"
            "| atoms | pairs | torch cell list (ms) | numpy list → device (ms) | numpy / torch |\n"
            "|---:|---:|---:|---:|---:|")
    lines = [f"| {r['atoms']} | {r['pairs']} | {1e3 * r['torch_cell_list_s']:.2f} | "
             f"{1e3 * r['numpy_to_device_s']:.2f} | {r['speedup']:.2f} |" for r in rows]
    return "\n".join([head] + lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 8000, 64000], help="atom counts (approximate)")
    ap.add_argument("--rcut", type=float, default=5.5, help="cutoff (Å)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: unchanged)")
    ap.add_argument("--json", default=None, metavar="PATH", help="write the results as JSON")
    ap.add_argument("--dry-run", action="store_true", help="tiny sizes and 2 repeats: a smoke test")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: CUDA is not available")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    sizes, repeats = ([64, 216], 2) if args.dry_run else (args.sizes, args.repeats)
    device = torch.device(args.device)
    meta = {"device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "threads": torch.get_num_threads(), "torch": torch.__version__, "python": sys.version.split()[0],
            "platform": platform.platform(), "rcut": args.rcut, "repeats": repeats, "dry_run": args.dry_run}
    rows = []
    for size in sizes:
        rows.append(bench(size, device, args.rcut, repeats))
        if args.json:  # rewritten after every size: a run cut short keeps what it measured
            with open(args.json, "w") as fh:
                json.dump({"meta": meta, "results": rows}, fh, indent=1)
    print(markdown(rows, device, torch.get_num_threads()))
    bad = [r for r in rows if r["pairs"] != r["pairs_numpy"]]
    for r in bad:
        print(f"MISMATCH: {r['atoms']} atoms: {r['pairs']} pairs from the cell list, {r['pairs_numpy']} from "
              "neighbour_list", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
