"""Gram-matrix condition numbers of the canonical (pure) and self-interacting ACE bases, the set-up of
Ho, Gutleb & Ortner, "Atomic Cluster Expansion without Self-Interaction", §3.1 / Table 1.

For correlation order N and total degree D: J = N neighbours, each drawn independently from the measure
in which the one-particle functions φ_nlm are orthonormal (x uniform on [-1, 1], r̂ uniform on the sphere;
``torchace.basis.purification.sample_orthonormal_envs``); (factor × number of order-N functions) environments; the
order-N columns of B; G = BᵀB / n_samples scaled by its diagonal; cond(G) (2-norm).  The order-N block of
an order-N model with total degree D equals that block of any higher-order model with the same D, so one
model per N is built.  Single element (Si, r0 and rcut defaults), wL = 1.5.

    python scripts/studies/purification_gram.py --orders 2 3 4 5 6 --degrees 8 10 12 \
        --json docs/purification_gram.json \
        --markdown docs/purification.md

writes the JSON and replaces the table between the ``<!-- gram-table -->`` markers of the markdown file.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

import torchace  # noqa: E402
from torchace.atomic import atomic_write, write_json_atomic  # noqa: E402
from torchace.basis.purification import sample_orthonormal_envs  # noqa: E402
from torchace.testing import site_basis_envs  # noqa: E402

BEGIN, END = "<!-- gram-table -->", "<!-- /gram-table -->"


def gram_cond(model, cols, envs):
    G = torch.zeros(len(cols), len(cols), dtype=torch.float64)
    idx = torch.as_tensor(cols)
    # B = C·AA gathers [chunk, nnz(C)] temporaries: bound them to ~30 M entries (purified couplings of
    # order >= 4 at D = 16 have ~2e5 non-zeros)
    chunk = max(16, min(1000, int(3e7 // max(1, model.coupling.vals.numel()))))
    for a in range(0, len(envs), chunk):
        B = site_basis_envs(model, envs[a:a + chunk])[:, idx]
        G += B.T @ B
    G /= len(envs)
    d = 1.0 / torch.sqrt(torch.diag(G))
    return float(torch.linalg.cond(G * d[:, None] * d[None, :]))


def run(orders, degrees, factor, seed):
    rows = []
    for N in orders:
        for D in degrees:
            t0 = time.perf_counter()
            pure = torchace.ace_model(["Si"], N, D, pure=True)
            t_pure = time.perf_counter() - t0
            selfi = torchace.ace_model(["Si"], N, D)
            cols = [q for q, t in enumerate(pure.nl_of_b) if len(t) == N]
            if not cols:
                continue
            envs = sample_orthonormal_envs(pure, factor * len(cols), N, np.random.default_rng(seed))
            row = dict(order=N, totaldegree=D, n_functions=len(cols), n_samples=len(envs),
                       canonical=gram_cond(pure, cols, envs), self_interacting=gram_cond(selfi, cols, envs),
                       build_pure_s=t_pure)
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def markdown(rows, degrees, factor):
    out = ["| N | basis | " + " | ".join(f"D = {d}" for d in degrees) + " |",
           "|---|---|" + "---|" * len(degrees)]
    by = {(r["order"], r["totaldegree"]): r for r in rows}
    for N in sorted({r["order"] for r in rows}):
        for key, name in (("canonical", "canonical (pure)"), ("self_interacting", "self-interacting")):
            cells = [f"{by[(N, d)][key]:.1e}" if (N, d) in by else "–" for d in degrees]
            out.append(f"| {N} | {name} | " + " | ".join(cells) + " |")
        cells = [str(by[(N, d)]["n_functions"]) if (N, d) in by else "–" for d in degrees]
        out.append(f"| {N} | (order-N functions) | " + " | ".join(cells) + " |")
    out.append("")
    out.append(f"J = N neighbours, {factor} × (number of order-N functions) samples, diagonal scaling, Si, wL = 1.5.")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--orders", type=int, nargs="+", default=[2, 3, 4])
    ap.add_argument("--degrees", type=float, nargs="+", default=[8, 10, 12])
    ap.add_argument("--factor", type=int, default=70, help="samples per order-N basis function (paper: 70)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--markdown", default=None, help=f"replace the table between {BEGIN} and {END} in this file")
    ap.add_argument("--merge", nargs="+", default=None, metavar="LOG",
                    help="do not compute: collect the result lines (one JSON object per line) that earlier runs "
                         "printed into these logs, e.g. runs over different orders in parallel")
    a = ap.parse_args(argv)
    degrees = [int(d) if float(d).is_integer() else d for d in a.degrees]
    if a.merge:
        rows = [json.loads(line) for log in a.merge for line in open(log) if line.startswith("{")]
        rows = [r for r in rows if r["order"] in a.orders and r["totaldegree"] in degrees]
        rows = list({(r["order"], r["totaldegree"]): r for r in rows}.values())
    else:
        rows = run(a.orders, degrees, a.factor, a.seed)
    table = markdown(rows, degrees, a.factor)
    print(table)
    if a.json:
        write_json_atomic(a.json, dict(setup=dict(factor=a.factor, seed=a.seed, elements=["Si"], wL=1.5),
                                       results=rows))
    if a.markdown:
        text = open(a.markdown).read()
        if BEGIN not in text or END not in text:
            raise SystemExit(f"{a.markdown}: no {BEGIN} ... {END} markers to replace")
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        new = head + BEGIN + "\n" + table + "\n" + END + tail

        def write(tmp):
            with open(tmp, "w") as fh:
                fh.write(new)

        atomic_write(a.markdown, write, ".md")


if __name__ == "__main__":
    main()
