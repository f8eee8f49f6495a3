#!/usr/bin/env python
"""Neighbour-list build time of every search torchace has or could use, to choose by the numbers
(torchace.structures.neighbours.choice; table in docs/performance.md, "Neighbour lists").

    python scripts/benchmarks/bench_neighbours.py                       # CPU: Si 64 216 1728 8000 + molecules
    python scripts/benchmarks/bench_neighbours.py --device cuda --sizes 1000 8000 64000 1000000
    python scripts/benchmarks/bench_neighbours.py --dry-run                        # tiny sizes, seconds on a CPU

Structures: ase.build.bulk('Si', 'diamond', 5.43, cubic=True) repeated n × n × n (8 n³ atoms, n chosen so
that 8 n³ is closest to each size), rattled 0.05 Å (seed 1), periodic; with --molecules also C60 and a
216-atom Si cluster (open boundaries).  Cutoff --rcut (default 5.5 Å: the calculator's rcut + skin for a 5 Å
model).  Searches, each giving (i, j, S) as tensors on --device:
  rule            torchace.structures.neighbours.search.neighbour_search: what the engines use (choice rule)
  dense           pairs.dense_neighbour_list (all pairs × images in torch; skipped beyond 2e7 candidates)
  batched         batched.batch_neighbour_search(method="batched") on the one system (TorchSim's small systems)
  cell_list       cell_list.cell_list_neighbours (torch, on the device)
  vesin           pairs.vesin_neighbour_list (vesin's C++ list on the host) and the copy to the device
  vesin_torch     vesin.torch.NeighborList (vesin-torch, on the device's tensors)
  ase             pairs.ase_neighbour_list (ASE's binned list) and the copy to the device
Median of --repeats timed calls after one warm-up call; torch.cuda.synchronize() around each call on CUDA.
Every search must find the same number of pairs (exit status 1 otherwise).  Prints a Markdown table (ms);
--json writes the results (rewritten after every structure).  vesin and vesin-torch are optional: their
columns are empty without them.
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
from ase.build import bulk, molecule

from torchace.structures.neighbours.batched import batch_neighbour_search
from torchace.structures.neighbours.cell_list import cell_list_neighbours
from torchace.structures.neighbours.pairs import ase_neighbour_list, dense_neighbour_list, vesin_neighbour_list
from torchace.structures.neighbours.search import neighbour_search

METHODS = ("rule", "dense", "batched", "cell_list", "vesin", "vesin_torch", "ase")
MAX_DENSE_CANDIDATES = 2e7  # atoms² × images beyond which the all-pairs searches are not run (memory)


def structure(size: int, rattle: float = 0.05, seed: int = 1):
    n = max(1, round((size / 8) ** (1 / 3)))
    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat((n, n, n))
    atoms.rattle(rattle, seed=seed)
    return atoms


def molecules():
    c60 = molecule("C60")
    cluster = structure(216)
    cluster.pbc = False
    cluster.center(vacuum=5.0)
    return [("C60 (open)", c60), ("Si cluster (open)", cluster)]


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


def _searches(atoms, device: torch.device, rcut: float):
    pos, cell, pbc = atoms.positions, np.asarray(atoms.cell.array), atoms.get_pbc()
    pos_t = torch.as_tensor(pos, dtype=torch.float64, device=device)
    cell_t = torch.as_tensor(cell, dtype=torch.float64, device=device)
    periodic = bool(pbc.all())
    spacing = abs(np.linalg.det(cell)) / np.linalg.norm(np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]]), axis=1) \
        if periodic else None
    images = int(np.prod(2 * np.ceil(rcut / spacing + 1) + 1)) if periodic else 1
    small = len(pos) ** 2 * images <= MAX_DENSE_CANDIDATES

    def host(fn):
        def run():
            i, j, S = fn(pos, cell, pbc, rcut)
            return torch.as_tensor(np.stack([i, j]), device=device), torch.as_tensor(S, device=device)
        return run

    def batched():
        n = torch.tensor([len(pos)])
        return batch_neighbour_search(pos_t, cell_t.unsqueeze(0), cell[None], pbc.tolist(),
                                      torch.zeros(len(pos), dtype=torch.long, device=device),
                                      torch.arange(len(pos), device=device), n.tolist(), rcut, torch.float64,
                                      "batched")

    out = {"rule": lambda: neighbour_search(pos, cell, pbc, rcut, device, torch.float64),
           "cell_list": lambda: cell_list_neighbours(pos_t, cell_t, pbc, rcut),
           "ase": host(ase_neighbour_list)}
    if small:
        out["dense"] = lambda: (lambda i, j, S: (torch.as_tensor(np.stack([i, j]), device=device), S))(
            *dense_neighbour_list(pos, cell, pbc, rcut, device=device))
        out["batched"] = batched
    try:
        import vesin  # noqa: F401

        out["vesin"] = host(vesin_neighbour_list)
    except ImportError:
        pass
    try:
        import vesin.torch as vt

        box = cell_t if periodic else torch.zeros((3, 3), dtype=torch.float64, device=device)

        def vesin_torch():
            return vt.NeighborList(cutoff=rcut, full_list=True).compute(pos_t, box, periodic, quantities="ijS")
        out["vesin_torch"] = vesin_torch
    except ImportError:
        pass
    return out


def _n_pairs(result) -> int:
    first = result[0]
    return int(first.shape[1] if first.ndim == 2 else first.shape[0])


def bench(name: str, atoms, device: torch.device, rcut: float, repeats: int) -> dict:
    row = {"structure": name, "atoms": len(atoms), "periodic": bool(atoms.pbc.all()), "ms": {}, "pairs": {}}
    for method, fn in _searches(atoms, device, rcut).items():
        t, out = _timed(fn, device, repeats)
        row["ms"][method], row["pairs"][method] = 1e3 * t, _n_pairs(out)
    return row


def markdown(rows, device: torch.device, threads: int) -> str:
    head = (f"device {device}, {threads} CPU threads, torch {torch.__version__}; build time in ms (median)\n\n"
            "| structure | atoms | pairs | " + " | ".join(METHODS) + " |\n|---|---:|---:|" + "---:|" * len(METHODS))
    lines = []
    for r in rows:
        cells = [f"{r['ms'][m]:.2f}" if m in r["ms"] else "–" for m in METHODS]
        lines.append(f"| {r['structure']} | {r['atoms']} | {r['pairs']['rule']} | " + " | ".join(cells) + " |")
    return "\n".join([head] + lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 216, 1728, 8000], help="atom counts (approximate)")
    ap.add_argument("--no-molecules", dest="molecules", action="store_false", help="periodic Si cells only")
    ap.add_argument("--rcut", type=float, default=5.5, help="cutoff (Å)")
    ap.add_argument("--repeats", type=int, default=7)
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
    cases = [(f"Si {len(structure(s))} (periodic)", structure(s)) for s in sizes]
    cases += molecules()[:1 if args.dry_run else 2] if args.molecules else []
    rows = []
    for name, atoms in cases:
        rows.append(bench(name, atoms, device, args.rcut, repeats))
        if args.json:  # rewritten after every structure: a run cut short keeps what it measured
            with open(args.json, "w") as fh:
                json.dump({"meta": meta, "results": rows}, fh, indent=1)
    print(markdown(rows, device, torch.get_num_threads()))
    bad = [r for r in rows if len(set(r["pairs"].values())) != 1]
    for r in bad:
        print(f"MISMATCH: {r['structure']}: pairs {r['pairs']}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
