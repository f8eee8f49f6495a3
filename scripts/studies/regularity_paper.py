#!/usr/bin/env python
"""The regularity-prior study of Darby et al., *Regularity priors for the linear atomic cluster expansion* (2026),
§2.5 and §3.2 (Table 1), at the paper's basis size, for one rMD17 molecule and one correlation order
(docs/regularity_priors.md, "At the paper's size").

    python scripts/studies/regularity_paper.py --molecule ethanol --order 3 --degrees 18 18 12 \\
        --n-train 1000 --n-test 1000 --form gram --out ethanol_N3.json --checkpoint-dir ckpt_ethanol_N3
    python scripts/studies/regularity_paper.py --molecule ethanol --order 4 --degrees 18 18 18 12 \\
        --n-train 100 --n-test 1000 --form dual --out ethanol_N4.json --checkpoint-dir ckpt_ethanol_N4

The paper's protocol: purified basis (``pure2b``: two-body parts removed from the higher orders), Gaussian
regularity prior σ ∈ {0, 0.25, 0.5, 1.0} Å (σ_n = √5σ/r_cut, σ_l = σ/r_cut, ``torchace.priors.gaussian``), weights
E 30 / F 1, one synthetic dimer per element pair at f_env(r_syn) = 100 eV with weight 0.01
(``torchace.fit.repulsion.synthetic_dimers``), ACEpotentials' default r_cut (2.5·max r0), Tikhonov λ scanned per σ.
E0: isolated atoms at the rMD17 level of theory (BOTNet ethanol set).  Frames: equi-spaced subsets of the rMD17
train/test files.  λ is chosen on a validation split of the training frames (``--validation``, not fitted) and the
best-on-test λ (the paper's protocol) is reported beside it.  ``--form gram``: one Gram-only assembly
(``torchace.fit.gram``) for every σ; ``--form dual``: one kernel per σ (``torchace.fit.dual``, K > rows).
Resumable: the assembly / kernels and each finished σ are checkpointed in ``--checkpoint-dir``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from typing import Dict, List

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

import torchace  # noqa: E402
from torchace import priors  # noqa: E402
from torchace.atomic import write_json_atomic  # noqa: E402
from torchace.fit.data import Labelled  # noqa: E402
from torchace.fit.gram import assemble_gram  # noqa: E402
from torchace.fit.repulsion import synthetic_dimers  # noqa: E402
from torchace.fit.scans import ScanResult, scan, scan_dual, split  # noqa: E402
from regularity_study import botnet_e0, rmd17  # noqa: E402  (the study's data readers)

WEIGHTS = {"default": {"E": 30.0, "F": 1.0, "V": 0.0}}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is KiB on Linux


def dimer_structures(model) -> tuple:
    """The paper's synthetic dimers as training structures (labels relative to the model's E0) and their weights."""
    aug = synthetic_dimers(model)
    out = [Labelled(a, float(a.info["energy"]), None, None, a.info["config_type"], "synthetic dimer")
           for a in aug.structures]
    return out, aug.weights


def _num(x) -> float:
    return float("inf") if x is None else x


def _prior(sigma: float):
    return priors.gaussian(sigma) if sigma > 0 else None


def _entry(sc, key: str, seconds: float) -> Dict:
    entry = {"solve_s": seconds, "scan": sc.table, "chosen": sc.best, "best_test": sc.best_test,
             "info": sc.info, "peak_rss_gb": peak_rss_gb()}
    b, t = sc.best or {}, sc.best_test or {}
    log(f"σ={key}: {seconds:.0f} s; chosen λ_rel {b.get('lam_rel')}: test F "
        f"{1000 * (b.get('test_F') or float('nan')):.1f} meV/Å; best on test λ_rel {t.get('lam_rel')}: "
        f"{1000 * (t.get('test_F') or float('nan')):.1f} meV/Å; peak RSS {peak_rss_gb():.2f} GiB")
    return entry


def main(argv=None) -> Dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--molecule", default="ethanol")
    ap.add_argument("--order", type=int, default=3)
    ap.add_argument("--degrees", type=int, nargs="+", default=[18, 18, 12])
    ap.add_argument("--n-train", type=int, default=1000, help="equi-spaced frames of the rMD17 train file")
    ap.add_argument("--n-test", type=int, default=1000, help="equi-spaced frames of the rMD17 test file")
    ap.add_argument("--validation", type=float, default=0.2,
                    help="fraction of the training frames held out (seeded split) to choose λ on")
    ap.add_argument("--sigmas", type=float, nargs="+", default=[0.0, 0.25, 0.5, 1.0], help="Gaussian prior σ (Å)")
    ap.add_argument("--lams", type=float, nargs="+", default=[10.0 ** e for e in range(-12, 0)],
                    help="λ relative to mean(diag Γ⁻¹GΓ⁻¹) of each σ")
    ap.add_argument("--form", choices=["gram", "dual"], default="gram")
    ap.add_argument("--method", choices=["auto", "eigh", "cholesky"], default="auto")
    ap.add_argument("--no-dimers", action="store_true", help="leave out the synthetic dimers")
    ap.add_argument("--pure2b", type=int, default=1, help="1: the purified basis of the paper (default), 0: not")
    ap.add_argument("--batch-atoms", type=int, default=2048)
    ap.add_argument("--spill", default=None, help="dual form: directory for spilled rows (else kept or recomputed)")
    ap.add_argument("--out", required=True, help="JSON of the results")
    ap.add_argument("--checkpoint-dir", default=None)
    ap.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data"))
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if len(args.degrees) != args.order:
        ap.error(f"--degrees needs {args.order} values for --order {args.order}")
    ck = args.checkpoint_dir
    if ck:
        os.makedirs(ck, exist_ok=True)
    t_start = time.perf_counter()
    times: Dict[str, float] = {}

    t0 = time.perf_counter()
    e0 = botnet_e0(args.data)
    frames = rmd17(args.data, args.molecule, "train", args.n_train)
    test = rmd17(args.data, args.molecule, "test", args.n_test)
    elements = [x for x in ["H", "C", "N", "O"] if any(x in s.atoms.get_chemical_symbols() for s in frames)]
    model = torchace.ace_model(elements, args.order, args.degrees, pure2b=bool(args.pure2b),
                               E0={x: e0[x] for x in elements})
    train, validation = split(frames, (1 - args.validation, args.validation), seed=0) if args.validation > 0 \
        else (frames, [])
    weights = dict(WEIGHTS)
    fit_set = list(train)
    if not args.no_dimers:
        dimers, w = dimer_structures(model)
        fit_set += dimers
        weights.update(w)
    n_rows = sum(1 + 3 * s.n_atoms for s in train) + (0 if args.no_dimers else len(fit_set) - len(train))
    times["data_and_model_s"] = time.perf_counter() - t0
    log(f"{args.molecule} N={args.order} {args.degrees}: K={model.basis_size}, rcut={model.rcut:g} Å, "
        f"{len(train)} train / {len(validation)} validation / {len(test)} test frames, {n_rows} fit rows, "
        f"form {args.form}")
    errors = {"test": test}
    if validation:
        errors["validation"] = validation
    select = "validation_F" if validation else "test_F"
    res: Dict = {"molecule": args.molecule, "order": args.order, "degrees": args.degrees, "K": model.basis_size,
                 "rcut": model.rcut, "pure2b": bool(args.pure2b), "synthetic_dimers": not args.no_dimers,
                 "n_train": len(train), "n_validation": len(validation), "n_test": len(test), "rows": n_rows,
                 "form": args.form, "weights": weights, "E0": {x: e0[x] for x in elements},
                 "lams_relative": args.lams, "select": select,
                 "command": "python scripts/studies/regularity_paper.py " + " ".join(
                     a for a in (argv if argv is not None else sys.argv[1:]) if not os.path.isabs(a)),
                 "machine": f"{platform.machine()} {platform.processor()}".strip(), "threads": torch.get_num_threads(),
                 "torch": torch.__version__, "sigma": {}}

    system = None
    if args.form == "gram":
        t0 = time.perf_counter()
        system = assemble_gram(model, fit_set, weights, errors=errors, batch_atoms=args.batch_atoms,
                               checkpoint=os.path.join(ck, "gram.npz") if ck else None)
        times["assembly_s"] = time.perf_counter() - t0
        res["plan"] = system.plan.to_dict() if system.plan is not None else None
        log(f"assembled in {times['assembly_s']:.0f} s, peak RSS {peak_rss_gb():.2f} GiB")

    if args.form == "gram":
        for sigma in args.sigmas:
            key = f"{sigma:g}"
            done = os.path.join(ck, f"sigma_{key}.json") if ck else None
            if done and os.path.exists(done):
                with open(done, encoding="utf-8") as fh:
                    res["sigma"][key] = json.load(fh)
                log(f"σ={key}: read from {done}")
                continue
            t0 = time.perf_counter()
            sc = scan(system, args.lams, priors={key: _prior(sigma)}, model=model, select=select,
                      method=args.method)
            res["sigma"][key] = _entry(sc, key, time.perf_counter() - t0)
            if done:
                write_json_atomic(done, res["sigma"][key])
    else:  # one kernel per σ (checkpointed), one pass over the error sets' rows for every σ and λ
        done = os.path.join(ck, "dual_scan.json") if ck else None
        if done and os.path.exists(done):
            with open(done, encoding="utf-8") as fh:
                res["sigma"] = json.load(fh)
            log(f"all σ: read from {done}")
        else:
            sc = scan_dual(model, fit_set, args.lams, errors=errors, weights=weights, select=select,
                           priors={f"{s:g}": _prior(s) for s in args.sigmas}, batch_atoms=args.batch_atoms,
                           spill=args.spill, method=args.method, checkpoint_dir=ck)
            times["errors_pass_s"] = sc.info["seconds"]["errors"]
            for s in args.sigmas:
                key = f"{s:g}"
                rows = [r for r in sc.table if r["prior"] == key]
                one = ScanResult(rows, select, "test_F", min(rows, key=lambda r: _num(r[select])),
                                 min(rows, key=lambda r: _num(r["test_F"])), info=sc.info)
                res["sigma"][key] = _entry(one, key, sc.info["seconds"][key])
            if done:
                write_json_atomic(done, res["sigma"])
    times["total_s"] = time.perf_counter() - t_start
    res["times"] = times
    res["peak_rss_gb"] = peak_rss_gb()
    write_json_atomic(args.out, res)
    log(f"done in {times['total_s']:.0f} s, peak RSS {res['peak_rss_gb']:.2f} GiB → {args.out}")
    return res


def summary(results: List[Dict]) -> List[str]:
    """Markdown rows (σ, test F and E at the validation-chosen and best-on-test λ) of result JSONs."""
    out = []
    for r in results:
        for s, e in r["sigma"].items():
            c, t = e["chosen"] or {}, e["best_test"] or {}
            out.append(f"| {r['molecule']} | {r['order']} | {r['n_train']} | {s} | "
                       f"{1000 * c.get('test_F', float('nan')):.1f} | {1000 * c.get('test_E', float('nan')):.2f} | "
                       f"{c.get('lam_rel', float('nan')):.0e} | {1000 * t.get('test_F', float('nan')):.1f} | "
                       f"{1000 * t.get('test_E', float('nan')):.2f} | {t.get('lam_rel', float('nan')):.0e} |")
    return out


if __name__ == "__main__":
    main()
