"""Assemble the reduced least-squares system over torch.distributed ranks, solve on rank 0, save the model.

    torchrun --nproc_per_node=2 scripts/tools/assemble_distributed.py --data X.xyz --elements Si --order 3 \\
        --totaldegree 10 --out system.npz [--model-out model.json] [--method qr|normal] [--solver blr|qr|rrqr]

Backend: nccl when CUDA is available (each rank on cuda:LOCAL_RANK), else gloo.  Every rank reads the data;
structures are sharded by atom count (torchace.fit.distributed.shard).  Rank 0 writes ``--out`` (the k×k
reduced system: A, y, n_obs, rss_offset, as an .npz loadable with allow_pickle=False) and ``--model-out``
(default: beside --out, ``<stem>_model.json``).  E0 comes from isolated_atom structures in the data or
``--E0 Si:-158.54``.  No prior is applied (plain basis).  See docs/reliability.md.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch
import torch.distributed as dist

import torchace
from torchace.fit import solvers
from torchace.atomic import atomic_write
from torchace.fit.data import read_data
from torchace.fit.weights import resolve_weights
from torchace.fit.distributed import assemble_distributed
from torchace.fit.driver import set_E0


def _solver(name: str, lam: float):
    if name == "qr":
        return solvers.QR(lam=lam)
    if name == "rrqr":
        return solvers.RRQR()
    if name == "blr":
        return solvers.BLR()
    raise SystemExit(f"unknown solver {name!r}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", nargs="+", required=True, help="extended-XYZ (or any ASE-readable) files")
    ap.add_argument("--elements", nargs="+", required=True)
    ap.add_argument("--order", type=int, default=3)
    ap.add_argument("--totaldegree", type=float, nargs="+", default=[12.0])
    ap.add_argument("--rcut", type=float, default=None)
    ap.add_argument("--E0", nargs="*", default=None, help="element:energy pairs (default: isolated_atom data)")
    ap.add_argument("--weights", default=None, help='JSON, e.g. \'{"default": {"E": 30, "F": 1, "V": 1}}\'')
    ap.add_argument("--method", choices=["qr", "normal"], default="qr")
    ap.add_argument("--batch-atoms", type=int, default=2048)
    ap.add_argument("--solver", choices=["blr", "qr", "rrqr"], default="blr")
    ap.add_argument("--lam", type=float, default=0.0, help="ridge parameter of --solver qr")
    ap.add_argument("--backend", choices=["gloo", "nccl"], default=None)
    ap.add_argument("--out", required=True, help="reduced system (.npz), written by rank 0")
    ap.add_argument("--model-out", default=None, help="fitted model (.json), written by rank 0")
    args = ap.parse_args(argv)

    backend = args.backend or ("nccl" if torch.cuda.is_available() else "gloo")
    dist.init_process_group(backend)
    rank = dist.get_rank()
    device = torch.device("cpu")
    if backend == "nccl":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    try:
        td = args.totaldegree[0] if len(args.totaldegree) == 1 else args.totaldegree
        model = torchace.ace_model(args.elements, args.order, td, rcut=args.rcut)
        ds = read_data(args.data, elements=model.elements)
        E0 = None
        if args.E0:
            E0 = {kv.split(":")[0]: float(kv.split(":")[1]) for kv in args.E0}
        set_E0(model, ds, E0)
        model.to(device)
        weights = resolve_weights(json.loads(args.weights) if args.weights else None)
        t0 = time.perf_counter()
        system = assemble_distributed(model, ds, weights, method=args.method, batch_atoms=args.batch_atoms,
                                      device=device)
        t_asm = time.perf_counter() - t0
        if rank == 0:
            arrays = dict(A=system.A.cpu().numpy(), y=system.y.cpu().numpy(), n_obs=np.array(system.n_obs),
                          rss_offset=np.array(system.rss_offset))

            def write(tmp):
                with open(tmp, "wb") as fh:
                    np.savez(fh, **arrays)

            atomic_write(args.out, write, ".npz")
            t0 = time.perf_counter()
            res = _solver(args.solver, args.lam).solve(system.A.to(torch.float64), system.y.to(torch.float64),
                                                       n_obs=system.n_obs, rss_offset=system.rss_offset)
            model.coefficients = res.coefficients.to(model.coefficients)
            model.committee = None if res.committee is None else res.committee.to(model.coefficients)
            model.metadata = {"fit": {"solver": type(res).__name__, "hyperparameters": dict(res.hyperparameters),
                                      "n_obs": system.n_obs, "assembly": f"distributed {args.method} x"
                                      f"{dist.get_world_size()} ({backend})"}}
            model_out = args.model_out or os.path.splitext(args.out)[0] + "_model.json"
            model.cpu().save(model_out)
            print(f"assembled {system.n_obs} rows x {model.basis_size} on {dist.get_world_size()} ranks "
                  f"({backend}) in {t_asm:.1f} s; solved in {time.perf_counter() - t0:.1f} s; "
                  f"wrote {args.out}, {model_out}", file=sys.stderr)
        dist.barrier()
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
