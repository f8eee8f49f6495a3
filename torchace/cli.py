"""Command line: ``torchace evaluate --model M`` (energies, forces, stresses, errors against the files' labels;
design-matrix rows with ``--rows``),
``torchace fit CONFIG.yaml``, ``torchace train CONFIG.yaml`` (gradient training of a nonlinear model),
``torchace export MODEL.json OUT --format torchscript|metatomic|yace`` and
``torchace lammps MODEL.json DATA --elements ...`` (a Python driver script for LAMMPS + fix external).

Thin wrapper: all logic lives in the library.  Outputs are written atomically (temp file + rename), and
checked before any work: none may be an input or another output, each must be writable
(``torchace.atomic.check_outputs``), and an existing file is replaced only if torchace wrote it as that kind of
output, or with ``--force`` (``torchace.atomic.check_output``).  Errors print one line (``--debug``: the
traceback).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from importlib import resources
from typing import List, Optional

import numpy as np
import torch

DEFAULT_EXAMPLE = "data/si_examples.xyz"
DEFAULT_FIT = "data/default_fit.yaml"
THREADS_HELP = ("torch threads: a positive integer or auto (the default: the usable cores minus the load average; "
                "OMP_NUM_THREADS kept when set); docs/fitting.md, 'Batch jobs'")
FORCE_HELP = ("replace existing output files that torchace did not write (default: refused before any work; "
              "torchace's own outputs of the same kind are replaced anyway)")


def _read(paths: List[str]):
    from .fit.data import DataError, read_structures

    structs = []
    for p in paths:
        try:  # the input rule (regular files, size limit) and the frame that cannot be parsed
            structs += read_structures(p)
        except DataError as exc:
            raise SystemExit(f"torchace: {exc}") from None
    return structs


def cmd_evaluate(args) -> int:
    from .jobs import use_threads

    with use_threads(args.threads):
        return _evaluate(args)


def _evaluate(args) -> int:
    """``torchace evaluate``'s work with its threads set."""
    import torchace
    from . import keys as K
    from .atomic import EVALUATION_REPORT, check_output, check_outputs, write_json_output
    from .fit.data import DataError, read_data
    from .fit.metrics import errors as error_table, format_table, predictions
    from .io.model_file import ModelFileError
    from .model.backends import EVALUATE, ROWS, select
    from .model.contract import capabilities

    if not args.model:
        raise SystemExit("torchace evaluate: --model is required (a model file from torchace fit or model.save); "
                         "there is no random model any more")
    paths = args.structures or [str(resources.files("torchace").joinpath(DEFAULT_EXAMPLE))]
    check_outputs(paths + [args.model], {"--output": args.output}, "torchace evaluate")
    if args.output:
        check_output(args.output, EVALUATION_REPORT, args.force)
    dtype = {"float64": torch.float64, "float32": torch.float32}[args.dtype]
    print(f"loading {args.model} ...", flush=True)
    try:
        model = torchace.load(args.model, dtype=dtype, device=args.device)
    except ModelFileError as exc:
        raise SystemExit(f"torchace evaluate: {exc}") from None
    if args.rows and capabilities(model).nonlinear:  # before the evaluation, not after it
        raise SystemExit("torchace evaluate: --rows: a nonlinear model has no design-matrix rows")
    structs = _read(paths)
    b_eval = select(model, None, args.backend, EVALUATE).name
    print(f"torchace {torchace.__version__}: {model.extra_repr()}")
    print(f"model {args.model}; device {args.device}, {args.dtype}; backend {b_eval}; "
          f"{torch.get_num_threads()} threads", flush=True)
    t0 = time.perf_counter()
    out = torchace.evaluate(model, structs, backend=b_eval)
    t_eval = time.perf_counter() - t0
    print(f"{'#':>3} {'config_type':<16} {'atoms':>5} {'energy/eV':>14} {'max|F|/(eV/Å)':>14} {'pressure/GPa':>13}")
    n_atoms = out[K.N_ATOMS].tolist()
    f_split = torch.split(out[K.FORCES], n_atoms)
    records = []
    for k, a in enumerate(structs):
        fmax = float(f_split[k].norm(dim=1).max()) if n_atoms[k] else 0.0
        p = float(-torch.diagonal(out[K.STRESS][k]).mean()) * 160.21766208
        ct = str(a.info.get("config_type", "-"))
        print(f"{k:>3} {ct:<16} {n_atoms[k]:>5} {float(out[K.ENERGY][k]):>14.6f} {fmax:>14.6f} {p:>13.4f}")
        records.append(dict(config_type=ct, n_atoms=n_atoms[k], energy=float(out[K.ENERGY][k]),
                            forces=f_split[k].cpu().tolist(), virial=out[K.VIRIAL][k].cpu().tolist(),
                            stress=None if np.isnan(p) else out[K.STRESS][k].cpu().tolist()))
    n = sum(n_atoms)
    print(f"evaluate: {t_eval * 1e3:.1f} ms ({t_eval / max(n, 1) * 1e6:.0f} µs/atom)")
    # basis_size: the columns of the design rows (density 1 and the pair part); None for a .yace model
    report = dict(model=args.model, config=model.config_dict(),
                  basis_size=getattr(model, "basis_size", None),
                  backends=dict(evaluate=b_eval), structures=paths, results=records, timing_s=dict(evaluate=t_eval))
    # errors against the files' own labels (energy / forces / virial as the data keys find them)
    try:
        ds = read_data(paths, elements=model.elements)
    except DataError as exc:
        print(f"no errors against labels: {' '.join(str(exc).split())[:200]}")
    else:
        print(f"errors against the labels of {len(ds)} structures ...", flush=True)
        report["errors"] = error_table(model, ds, preds=predictions(model, ds))
        print(format_table(report["errors"], "errors"))
    status = 0
    if args.rows:  # design-matrix rows only when asked (they cost several evaluations)
        b_rows = select(model, None, args.backend, ROWS).name
        t0 = time.perf_counter()
        rows = torchace.design_matrix_rows(model, structs, backend=b_rows)
        t_rows = time.perf_counter() - t0
        c = model.coefficients.detach()
        e0 = torch.tensor([model.reference_energy(a.numbers) for a in structs], dtype=c.dtype, device=c.device)
        check_e = float((rows[K.ENERGY] @ c + e0 - out[K.ENERGY]).abs().max())
        check_f = float((rows[K.FORCES] @ c - out[K.FORCES].reshape(-1)).abs().max())
        print(f"design-matrix rows ({b_rows}): E {tuple(rows[K.ENERGY].shape)}, F {tuple(rows[K.FORCES].shape)}, "
              f"V {tuple(rows[K.VIRIAL].shape)}: {t_rows * 1e3:.1f} ms ({t_rows / max(n, 1) * 1e6:.0f} µs/atom)")
        print(f"consistency rows·c vs model: max |ΔE| = {check_e:.2e} eV, max |ΔF| = {check_f:.2e} eV/Å")
        report.update(rows_backend=b_rows, consistency=dict(energy=check_e, forces=check_f))
        report["timing_s"]["rows"] = t_rows
        tol = 1e-8 if dtype == torch.float64 else 1e-2
        status = 0 if max(check_e, check_f) < tol * max(1.0, float(out[K.ENERGY].abs().max())) else 1
    if args.output:
        write_json_output(args.output, report, EVALUATION_REPORT, args.force)
        print(f"wrote {args.output}")
    return status


def cmd_fit(args) -> int:
    import yaml

    from .fit.config import FitConfig
    from .atomic import check_outputs
    from .jobs import job

    if args.config:  # the config checks its outputs (the output rule) before anything is fitted
        cfg = FitConfig.load(args.config, overwrite=args.force)
    else:  # the bundled default job; outputs go to the working directory
        text = resources.files("torchace").joinpath(DEFAULT_FIT).read_text()
        cfg = FitConfig.from_dict(yaml.safe_load(text), os.getcwd(), overwrite=args.force)
    as_list = lambda x: [] if not x else ([x] if isinstance(x, str) else list(x))  # noqa: E731
    check_outputs([args.config] + as_list(cfg.data.train) + as_list(cfg.data.test),
                  {"output.model": cfg.output.model, "output.errors": cfg.output.errors,
                   "output.parity": cfg.output.parity, "output.log": cfg.output.log},
                  "torchace fit")  # before the expensive fit
    threads = cfg.threads if args.threads is None else args.threads  # --threads over the config's
    with job(cfg.output.log, "torchace fit", threads=threads, config=cfg, overwrite=cfg.output.overwrite) as n:
        status = _fit(args, cfg, n)
    if cfg.output.log:
        print(f"wrote {cfg.output.log}")
    return status


def _threads_arg(text: str):
    """argparse type of --threads: a positive integer or "auto"."""
    if text == "auto":
        return text
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer or 'auto', got {text!r}")
    return n


def _fit(args, cfg, n_threads: int) -> int:
    """``torchace fit``'s work inside its job frame (threads set, log active)."""
    import torchace
    from .atomic import ERRORS_REPORT, write_json_output
    from .fit.data import DataKeys, read_data
    from .fit.driver import describe_data
    from .fit.metrics import errors as error_table, format_table, parity_plot, predictions

    as_list = lambda x: [] if not x else ([x] if isinstance(x, str) else list(x))  # noqa: E731
    m = dict(cfg.model)
    elements, order, td = m.pop("elements"), m.pop("order"), m.pop("totaldegree")
    model = torchace.ace_model(elements, order, td, **m).to(cfg.assembly.device)
    print(f"torchace {torchace.__version__} fit: {model.extra_repr()}; {n_threads} thread{'s' * (n_threads > 1)}"
          + (f"; log {cfg.output.log}" if cfg.output.log else ""), flush=True)
    keys = DataKeys(**cfg.data.keys)
    print(f"reading the training data ({describe_data(cfg.data.train)}) ...", flush=True)
    train = read_data(cfg.data.train, keys=keys, elements=model.elements, skip_bad=cfg.data.skip_bad)
    print(f"training data: {len(train)} structures, {sum(s.n_atoms for s in train)} atoms "
          f"({', '.join(train.config_types)})", flush=True)
    if cfg.scan is not None:
        report = {"scan": _scan_fit(cfg, model, train, keys)}
    else:
        print("fitting (assembly of the design matrix, then the solver) ...", flush=True)
        res = torchace.fit(model, train, progress=not args.quiet, threads=n_threads, **cfg.fit_kwargs())
        print(f"design rows: {res.info['backend']} backend; solver {res.solver}: {res.hyperparameters}; "
              f"E0 {res.E0}; timings {', '.join(f'{k} {v:.1f} s' for k, v in res.timings.items())}")
        print(res.table())
        report = {"train": res.errors, "fit": res.to_dict()}
    if cfg.data.test:
        test = read_data(cfg.data.test, keys=keys, elements=model.elements, skip_bad=cfg.data.skip_bad)
        print(f"evaluating the test set: {len(test)} structures, {sum(s.n_atoms for s in test)} atoms ...", flush=True)
        preds = predictions(model, test)
        report["test"] = error_table(model, test, preds=preds)
        print(format_table(report["test"], "test errors"))
        if cfg.output.parity:
            names = ", ".join(os.path.basename(str(t)) for t in as_list(cfg.data.test))
            parity_plot(model, test, cfg.output.parity, preds=preds, title=f"test set ({names})",
                        overwrite=cfg.output.overwrite)
            print(f"wrote {cfg.output.parity}")
    model.save(cfg.output.model, overwrite=cfg.output.overwrite)
    print(f"wrote {cfg.output.model}")
    if cfg.output.errors:
        write_json_output(cfg.output.errors, report, ERRORS_REPORT, cfg.output.overwrite)
        print(f"wrote {cfg.output.errors}")
    return 0


def _scan_fit(cfg, model, train, keys) -> dict:
    """``torchace fit`` with a ``scan`` section: ``torchace.fit.scan_data`` on the config's data; the table."""
    import torchace
    from .fit.data import read_data
    from .fit.driver import set_E0

    sc, fit_e0 = cfg.scan, cfg.E0 == "fit"
    if not fit_e0:
        set_E0(model, train, cfg.E0)
    read = lambda p: read_data(p, keys=keys, elements=model.elements, skip_bad=cfg.data.skip_bad)  # noqa: E731
    val = sc.validation if isinstance(sc.validation, float) else read(sc.validation)
    test = read(cfg.data.test) if cfg.data.test else None
    print(f"scanning {len(sc.lams)} λ × priors {list(cfg.build_scan_priors())} ({sc.form} form) ...", flush=True)
    res = torchace.fit.scan_data(model, train, sc.lams, validation=val, test=test, form=sc.form, weights=cfg.weights,
                                 priors=cfg.build_scan_priors(), fit_e0=fit_e0, select=sc.select, seed=sc.seed,
                                 batch_atoms=cfg.assembly.batch_atoms, device=cfg.assembly.device,
                                 checkpoint_dir=sc.checkpoint_dir)
    for r in res.table:
        print("  " + "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items()))
    print(f"chosen on {sc.select}: prior {res.best['prior']}, λ_rel {res.best['lam_rel']:.3g}"
          + (f"; best on test: prior {res.best_test['prior']}, λ_rel {res.best_test['lam_rel']:.3g}"
             if res.best_test else ""))
    model.metadata = {"scan": {"best": res.best, "best_test": res.best_test, "info": res.info}}
    return res.to_dict()


def cmd_train(args) -> int:
    from .atomic import check_outputs
    from .jobs import job
    from .train.config import TrainConfig

    cfg = TrainConfig.load(args.config, overwrite=args.force)  # outputs checked (the output rule) before training
    as_list = lambda x: [] if not x else ([x] if isinstance(x, str) else list(x))  # noqa: E731
    val = [] if isinstance(cfg.validation, float) else as_list(cfg.validation)
    check_outputs([args.config] + as_list(cfg.fit.data.train) + as_list(cfg.fit.data.test) + val
                  + as_list(cfg.model_from),
                  {"output.model": cfg.fit.output.model, "output.errors": cfg.fit.output.errors,
                   "output.history": cfg.history, "output.checkpoint": cfg.checkpoint,
                   "output.log": cfg.fit.output.log}, "torchace train")
    threads = cfg.fit.threads if args.threads is None else args.threads  # --threads over the config's
    with job(cfg.fit.output.log, "torchace train", threads=threads, config=cfg, overwrite=cfg.fit.output.overwrite) \
            as n:
        status = _train(args, cfg, n)
    if cfg.fit.output.log:
        print(f"wrote {cfg.fit.output.log}")
    return status


def _train(args, cfg, n_threads: int) -> int:
    """``torchace train``'s work inside its job frame (threads set, log active)."""
    import torchace
    from .atomic import ERRORS_REPORT, TRAIN_HISTORY, write_json_output
    from .fit.data import DataKeys, read_data
    from .fit.metrics import errors as error_table, format_table, predictions
    from .train.trainer import TrainingDivergedWarning

    model = cfg.build_model()
    print(f"torchace {torchace.__version__} train: {model.extra_repr()}; {n_threads} thread{'s' * (n_threads > 1)}"
          + (f"; log {cfg.fit.output.log}" if cfg.fit.output.log else ""), flush=True)
    with warnings.catch_warnings():  # a divergence is said in the summary line below (res.stopped)
        warnings.simplefilter("ignore", TrainingDivergedWarning)
        res = torchace.train(model, cfg.fit.data.train, progress=not args.quiet, threads=n_threads,
                             **cfg.train_kwargs())
    if res.resumed:
        print(f"resumed from {res.resumed['checkpoint']} after its epoch {res.resumed['epochs_done']}")
    stopped = "all epochs done" if res.stopped == "epochs" else res.stopped
    print(f"stopped: {stopped}; chosen epoch {res.chosen_epoch}; timings "
          f"{', '.join(f'{k} {v:.1f} s' for k, v in res.timings.items())}")
    print(res.table())
    report = {"train": res.errors, "validation": res.validation_errors,
              "training": {k: v for k, v in res.to_dict().items()
                           if k not in ("errors", "validation_errors", "history")}}
    if cfg.fit.data.test:
        keys = DataKeys(**cfg.fit.data.keys)
        test = read_data(cfg.fit.data.test, keys=keys, elements=model.elements, skip_bad=cfg.fit.data.skip_bad)
        report["test"] = error_table(model, test, preds=predictions(model, test))
        print(format_table(report["test"], "test errors"))
    overwrite = cfg.fit.output.overwrite
    model.save(cfg.fit.output.model, overwrite=overwrite)
    print(f"wrote {cfg.fit.output.model}")
    if cfg.fit.output.errors:
        write_json_output(cfg.fit.output.errors, report, ERRORS_REPORT, overwrite)
        print(f"wrote {cfg.fit.output.errors}")
    if cfg.history:  # its "format" field marks it as torchace's (the output rule); the epochs are under "history"
        write_json_output(cfg.history, {"history": res.history}, TRAIN_HISTORY, overwrite)
        print(f"wrote {cfg.history}")
    return 0


def cmd_export(args) -> int:
    import torchace
    from .atomic import check_outputs
    from .io.export import FORMATS
    from .io.lammps_words import lammps_word
    from .io.model_file import ModelFileError

    if args.format not in FORMATS:  # argparse checks too; keeps the message for programmatic callers
        raise SystemExit(f"torchace export: unknown format {args.format!r}; choose one of {list(FORMATS)}")
    if not os.path.isfile(args.model):
        raise SystemExit(f"torchace export: {args.model}: no such model file")
    outputs = {"output": args.output}
    if args.format == "yace" and args.output.endswith(".yace"):
        outputs["pair table"] = args.output[: -len(".yace")] + "_pairpot.table"
        outputs["LAMMPS include file"] = args.output[: -len(".yace")] + ".lammps"
    check_outputs([args.model], outputs, "torchace export")
    try:
        model = torchace.load(args.model)
    except ModelFileError as exc:
        raise SystemExit(f"torchace export: {exc}") from None
    kwargs = {}
    if args.dtype:
        kwargs["dtype"] = args.dtype
    info = None
    try:
        if args.format == "yace":  # write_yace's report names the pair table and the LAMMPS lines
            from .io import write_yace

            info = write_yace(model, args.output, overwrite=args.force)
            path = info["yace"]
        else:
            path = torchace.export(model, args.output, format=args.format, overwrite=args.force, **kwargs)
    except ImportError as exc:  # optional package of the format (metatomic-torch, ...)
        raise SystemExit(f"torchace export: {exc}") from None
    print(f"wrote {path} ({args.format}, {args.dtype or str(model.coefficients.dtype).replace('torch.', '')}; "
          f"{model.extra_repr()})")
    if info is not None:
        if info.get("pair_table"):
            print(f"wrote {info['pair_table']} (pair part as a LAMMPS pair table)")
        if info.get("lammps_include"):
            print(f"wrote {info['lammps_include']} (LAMMPS: include {lammps_word(info['lammps_include'])}; atom "
                  f"types in the order {' '.join(info.get('lammps_types', []))})")
        print("LAMMPS input:")
        for line in info.get("lammps", []):
            print(f"    {line}")
    return 0


def cmd_lammps(args) -> int:
    from .atomic import check_outputs
    from .calculators.lammps_script import write_driver_script

    if args.output not in (None, "-"):
        check_outputs([args.model, args.data], {"--output": args.output}, "torchace lammps")
    out = write_driver_script(args.output, args.model, args.data, args.elements, steps=args.steps,
                              timestep=args.timestep, temperature=args.temperature, backend=args.backend,
                              skin=args.skin, threads=args.threads, overwrite=args.force)
    if "path" in out:
        print(f"wrote {out['path']} (run it with: python {out['path']}; docs/lammps.md)")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    from .model.backends.runtime import tune_malloc

    tune_malloc()  # keep per-call temporaries in the heap (torchace/model/backends/runtime.py)
    ap = argparse.ArgumentParser(prog="torchace", description=__doc__)
    ap.add_argument("--debug", action="store_true", help="on an error, show the Python traceback (default: one line)")
    sub = ap.add_subparsers(dest="command", required=True)
    ev = sub.add_parser("evaluate", help="evaluate a model file on structures (default: the bundled Si examples), "
                                         "with errors against the files' labels")
    ev.add_argument("structures", nargs="*", help="extended-XYZ (or any ASE-readable) files")
    ev.add_argument("--model", help="a saved torchace model (.json), e.g. from torchace fit (required)")
    ev.add_argument("--rows", action="store_true", help="also compute the design-matrix rows and check rows·c")
    ev.add_argument("--device", default="cpu")
    ev.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    ev.add_argument("--backend", default="auto", choices=["auto", "fused", "triton", "analytic", "reference"],
                    help="evaluation backend (default auto: the fastest for the model and device; "
                         "docs/architecture.md)")
    ev.add_argument("-o", "--output", help="write results as JSON (atomically)")
    ev.add_argument("--force", action="store_true", help=FORCE_HELP)
    ev.add_argument("--threads", type=_threads_arg, default="auto", help=THREADS_HELP)
    from .fit.config import FitConfig

    ft = sub.add_parser("fit", help="fit a linear ACE model from a YAML/JSON config (default: bundled Zuo Si job)",
                        epilog=FitConfig.keys_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    ft.add_argument("config", nargs="?", help="fit configuration (keys below; docs/fitting.md)")
    ft.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    ft.add_argument("--force", action="store_true", help=FORCE_HELP + "; as output.overwrite: true in the config")
    ft.add_argument("--threads", type=_threads_arg, help=THREADS_HELP + "; over the config's threads")
    from .train.config import KEYS_HELP

    tr = sub.add_parser("train", help="train a nonlinear ACE model from a YAML/JSON config (docs/training.md)",
                        epilog=KEYS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    tr.add_argument("config", help="train configuration (fit config keys plus 'training'; docs/training.md)")
    tr.add_argument("-q", "--quiet", action="store_true", help="no per-epoch progress lines")
    tr.add_argument("--force", action="store_true", help=FORCE_HELP + "; as output.overwrite: true in the config")
    tr.add_argument("--threads", type=_threads_arg, help=THREADS_HELP + "; over the config's threads")
    ex = sub.add_parser("export", help="export a saved model (.json) for other programs (docs/export.md)")
    ex.add_argument("model", help="model file written by model.save / torchace fit (.json)")
    ex.add_argument("output", help="output file (written atomically)")
    ex.add_argument("--format", required=True, choices=["torchscript", "metatomic", "yace"],
                    help="torchscript: torch.jit archive with metadata; metatomic: AtomisticModel for LAMMPS "
                         "pair_style metatomic / i-PI / ASE (needs metatomic-torch); yace: ML-PACE potential "
                         "for LAMMPS pair_style pace")
    ex.add_argument("--dtype", choices=["float64", "float32"], default=None,
                    help="precision of the exported model (default: float64)")
    ex.add_argument("--force", action="store_true", help=FORCE_HELP)
    lm = sub.add_parser("lammps", help="write a Python script that runs LAMMPS MD with a model through fix external "
                                       "(docs/lammps.md)")
    lm.add_argument("model", help="model file (.json)")
    lm.add_argument("data", help="LAMMPS data file (atom_style atomic, units metal)")
    lm.add_argument("--elements", nargs="+", required=True, help="element of each LAMMPS atom type, type 1 first")
    lm.add_argument("-o", "--output", help="script path (default: print it)")
    lm.add_argument("--force", action="store_true", help=FORCE_HELP)
    lm.add_argument("--steps", type=int, default=1000)
    lm.add_argument("--timestep", type=float, default=0.001, help="ps")
    lm.add_argument("--temperature", type=float, default=300.0, help="K (NVT, Nosé-Hoover)")
    lm.add_argument("--backend", default="auto", choices=["auto", "fused", "triton", "analytic", "reference"])
    lm.add_argument("--skin", type=float, default=0.5, help="neighbour-list skin (Å)")
    lm.add_argument("--threads", type=int, default=1, help="torch threads (default; OMP_NUM_THREADS overrides)")
    args = ap.parse_args(argv)
    commands = {"export": cmd_export, "fit": cmd_fit, "train": cmd_train, "evaluate": cmd_evaluate,
                "lammps": cmd_lammps}
    try:
        return commands[args.command](args)
    except KeyboardInterrupt as exc:  # Ctrl-C (130), or SIGTERM during training (143): one line, no traceback
        from .train.interrupt import TrainingInterrupted, signal_of

        if args.debug:
            raise
        sys.stderr.write(f"torchace {args.command}: {exc if isinstance(exc, TrainingInterrupted) else 'interrupted'}\n")
        return 128 + signal_of(exc)
    except (ValueError, TypeError, OSError, KeyError, RuntimeError) as exc:
        if args.debug:
            raise
        # one clear line; the library's messages name the file, frame and field
        raise SystemExit(f"torchace {args.command}: {type(exc).__name__}: {exc}") from None


if __name__ == "__main__":
    sys.exit(main())
