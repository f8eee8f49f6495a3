"""FitConfig: the ``torchace fit CONFIG.yaml`` file, mirroring ``torchace.fit``'s Python API.

```yaml
model:    {elements: [Si], order: 3, totaldegree: [20, 16, 12], rcut: 5.5}   # ACEConfig fields
data:     {train: Si_train.xyz, test: Si_test.xyz, keys: {energy: dft_energy}, skip_bad: false}
weights:  {default: {E: 30, F: 1, V: 1}, liq: {E: 10, F: 0.66, V: 0.25}}
E0:       isolated            # or a dict {Si: -158.54}, or fit
prior:    {name: algebraic_smoothness, p: 4}     # any torchace.priors constructor and its arguments
solver:   {name: BLR}                            # any torchace.solvers class and its arguments
assembly: {streaming: null, batch_atoms: 2048, device: cpu, backend: auto}
output:   {model: model.json, errors: errors.json, parity: parity.png, log: auto}   # log: model.log beside
threads:  auto                                   # torch threads: a positive integer or auto (torchace.jobs)
scan:     {lams: [1.0e-8, 1.0e-6], priors: {none: null, g: {name: gaussian, sigma: 0.5}}, validation: 0.2}
```
``scan`` (optional) fits by a ridge scan instead of ``solver`` (``torchace.fit.scan_data``: λ relative to
mean(diag Γ⁻¹GΓ⁻¹), every prior on one Gram system, or ``form: dual`` for K > rows; λ chosen on ``select``, the
validation split a fraction of data.train or files); its table goes into output.errors under "scan".
Relative paths are resolved against the config file's directory; ``@bundled/...`` names files shipped in
``torchace/data``.  Unknown keys anywhere are rejected with their section named; wrong types and out-of-range
values (``pair: "no"``, ``order: 2.5``, ``batch_atoms: 0``, ``streaming: QR``) are rejected when the file is
loaded, before any data is read, with the file and the key (``section.key``) named (``torchace.fieldcheck``).
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Union

from ..config import ACEConfig
from .data import DataKeys, example_data
from ..fieldcheck import (check_ace_fields, check_bool, check_device, check_float, check_int,
                          check_paths, check_str, strict_yaml, unique_keys)
from ..inputs import open_input

BUNDLED = "@bundled/"
MAX_CONFIG_BYTES = 16 << 20  # a fit config is a few hundred bytes
# the model section holds ``ace_model`` / ACEConfig arguments: the dataclass's field list, written once
MODEL_KEYS = tuple(f.name for f in dataclasses.fields(ACEConfig))


@dataclass
class DataSection:
    train: Union[str, List[str]] = ""
    test: Optional[Union[str, List[str]]] = None
    keys: Dict[str, str] = field(default_factory=dict)
    skip_bad: bool = False
    min_distance: float = 0.01  # Å: closer pairs in a training structure are an error (file, frame, atoms)
    # pairs closer than this fraction of their covalent radii's sum: a warning (file, frame, atoms); 0: off
    close_contact: float = 0.5
    close_contact_error: bool = False  # the close contacts are an error instead


@dataclass
class AssemblySection:
    streaming: Optional[str] = None
    batch_atoms: int = 2048
    device: str = "cpu"
    backend: str = "auto"  # of the design rows (torchace.backends): auto, fused, triton, analytic, reference
    fused: Optional[bool] = None  # deprecated: fused: true is backend: fused


@dataclass
class ScanSection:
    lams: List[float] = field(default_factory=lambda: [1e-10, 1e-8, 1e-6, 1e-4, 1e-2])
    priors: Optional[Dict[str, Any]] = None  # name -> a prior mapping or null (plain ridge); default: the config's
    validation: Any = 0.2  # a fraction of data.train (seeded split) or file(s)
    form: str = "gram"  # gram (K < rows) or dual (K > rows)
    select: str = "validation_F"
    seed: int = 0
    checkpoint_dir: Optional[str] = None  # the assembly / kernels are checkpointed there: a killed job resumes


@dataclass
class OutputSection:
    model: str = "model.json"
    errors: Optional[str] = "errors.json"
    parity: Optional[str] = None
    log: Optional[str] = "auto"  # the job's log file (torchace.jobs): auto = <model stem>.log; null: none
    overwrite: bool = False  # replace existing files that torchace did not write (torchace.atomic, the output rule)


TOP_LEVEL_HELP = {
    "weights": "  {config_type: {E, F, V}}, 'default' for the rest (ACEpotentials.jl: E 30, F 1, V 1)",
    "E0": "  isolated (from isolated_atom structures), fit, or {element: eV}",
    "prior": "  {name: <torchace.priors function>, ...arguments}",
    "solver": "  {name: <torchace.solvers class>, ...arguments} (default BLR)",
    "synthetic_dimers": "  true or {E_syn, weight, ...} (torchace.fit.repulsion.synthetic_dimers)",
    "repulsion_restraint": "  true or {weight, r_in, ...} (ACEpotentials.jl's repulsion_restraint)",
    "threads": "  torch threads: a positive integer, or auto (cores minus the load average; torchace.jobs)",
    "scan": "  {lams, priors, validation, form, select, seed, checkpoint_dir}: a λ/prior scan instead of solver",
}


@dataclass
class FitConfig:
    model: Dict[str, Any]
    data: DataSection
    weights: Optional[Dict[str, Dict[str, float]]] = None
    E0: Any = None
    prior: Optional[Dict[str, Any]] = None
    solver: Optional[Dict[str, Any]] = None
    assembly: AssemblySection = field(default_factory=AssemblySection)
    output: OutputSection = field(default_factory=OutputSection)
    synthetic_dimers: Any = False
    repulsion_restraint: Any = False
    threads: Any = "auto"  # torch threads of the job (torchace.jobs.use_threads): an integer >= 1 or "auto"
    scan: Optional[ScanSection] = None

    @classmethod
    def from_dict(cls, d: Dict[str, Any], base_dir: str = ".", source: Optional[str] = None,
                  model_format: str = "torchace-model", overwrite: bool = False) -> "FitConfig":
        """The config of the mapping ``d``; relative paths against ``base_dir``; ``source``: the config file (an
        input too: no output may be it); ``model_format``: the model file format output.model will be written in
        (an existing file there must be one); ``overwrite`` (CLI ``--force``): as ``output.overwrite: true``."""
        if not isinstance(d, dict):
            raise ValueError("the fit config must be a mapping with sections model, data, ...")
        _check_keys("config", d, {f.name for f in dataclasses.fields(cls)})
        for sec in ("model", "data"):
            if sec not in d:
                raise ValueError(f"fit config: section '{sec}' is missing")
        model = _model_section(d["model"])
        data = _section("data", d["data"], DataSection)
        if not data.train:
            raise ValueError("fit config: data.train is required")
        check_paths("fit config", "data.train", data.train)
        if data.test is not None:
            check_paths("fit config", "data.test", data.test)
        if not isinstance(data.keys, dict):
            raise ValueError(f"fit config: 'data.keys' must be a mapping, got {data.keys!r}")
        _check_keys("data.keys", data.keys, {f.name for f in dataclasses.fields(DataKeys)})
        for k, v in data.keys.items():
            check_str("fit config", f"data.keys.{k}", v)
        check_bool("fit config", "data.skip_bad", data.skip_bad)
        data.min_distance = check_float("fit config", "data.min_distance", data.min_distance, nonnegative=True)
        data.close_contact = check_float("fit config", "data.close_contact", data.close_contact, nonnegative=True)
        check_bool("fit config", "data.close_contact_error", data.close_contact_error)
        data.train = resolve_path(data.train, base_dir)
        data.test = resolve_path(data.test, base_dir) if data.test else None
        weights = d.get("weights")
        if weights is not None:
            _check_weights(weights)
        _check_E0(d.get("E0"))
        for sec in ("prior", "solver"):
            v = d.get(sec)
            if v is not None and (not isinstance(v, dict) or "name" not in v):
                raise ValueError(f"fit config: '{sec}' must be a mapping with a 'name'")
            if v is not None:
                check_str("fit config", f"{sec}.name", v["name"])
                from . import priors
                from . import solvers

                _construct(priors if sec == "prior" else solvers, sec, v)  # arguments checked now, before any work
        asm = _section("assembly", d.get("assembly", {}), AssemblySection)
        check_str("fit config", "assembly.streaming", asm.streaming, choices=("qr", "normal"), allow_none=True)
        asm.batch_atoms = check_int("fit config", "assembly.batch_atoms", asm.batch_atoms, minimum=1)
        check_str("fit config", "assembly.device", asm.device)
        check_device("fit config", "assembly.device", asm.device)
        if asm.fused is not None:
            check_bool("fit config", "assembly.fused", asm.fused)
            if asm.fused:
                asm.backend = "fused"
        from ..model.backends import AUTO, BACKENDS

        check_str("fit config", "assembly.backend", asm.backend, choices=(AUTO,) + tuple(BACKENDS))
        out = _section("output", d.get("output", {}), OutputSection)
        check_str("fit config", "output.model", out.model)
        for k in ("model", "errors", "parity", "log"):
            v = getattr(out, k)
            check_str("fit config", f"output.{k}", v, allow_none=True)
            if v and not (k == "log" and v == "auto"):
                setattr(out, k, v if os.path.isabs(v) else os.path.join(base_dir, v))
        if out.log == "auto":  # beside the model file, its stem (torchace.jobs)
            from ..jobs import log_beside

            out.log = log_beside(out.model)
        check_bool("fit config", "output.overwrite", out.overwrite)
        out.overwrite = bool(out.overwrite or overwrite)
        from ..atomic import ERRORS_REPORT, PLOT, OutputPathError, check_output, json_output, same_file

        inputs = [p for p in ([data.train] if isinstance(data.train, str) else data.train)
                  + ([data.test] if isinstance(data.test, str) else list(data.test or []))]
        for k in ("model", "errors", "parity", "log"):
            v = getattr(out, k)
            for q in inputs + ([source] if source else []):
                if v and same_file(v, q):
                    raise OutputPathError(f"fit config: output.{k} {v!r} is the input {q!r}; choose another path")
        # the output rule (torchace.atomic): no existing file that torchace did not write is replaced; said now,
        # before the fit, not after it
        from ..jobs import LOG_FILE, check_threads

        kinds = {"model": json_output(model_format, "torchace model file"), "errors": ERRORS_REPORT, "parity": PLOT,
                 "log": LOG_FILE}
        for k, kind in kinds.items():
            if getattr(out, k):
                try:
                    check_output(getattr(out, k), kind, out.overwrite)
                except OutputPathError as exc:
                    raise OutputPathError(f"fit config: output.{k}: {exc}") from None
        from .repulsion import check_option

        for k in ("synthetic_dimers", "repulsion_restraint"):
            try:
                check_option(d.get(k, False), k)
            except ValueError as exc:
                raise ValueError(f"fit config: {exc}") from None
        threads = check_threads("fit config", "threads", d.get("threads", "auto"))
        scan = None if d.get("scan") is None else _scan_section(d, data, base_dir)
        return cls(model=model, data=data, weights=weights, E0=d.get("E0"),
                   prior=d.get("prior"), solver=d.get("solver"), assembly=asm, output=out,
                   synthetic_dimers=d.get("synthetic_dimers", False),
                   repulsion_restraint=d.get("repulsion_restraint", False), threads=threads, scan=scan)

    def fit_kwargs(self) -> Dict[str, Any]:
        """The keyword arguments of ``torchace.fit`` this config stands for (the config mirrors ``fit``)."""
        return dict(weights=self.weights, prior=self.build_prior(), solver=self.build_solver(), E0=self.E0,
                    keys=DataKeys(**self.data.keys), skip_bad=self.data.skip_bad, streaming=self.assembly.streaming,
                    batch_atoms=self.assembly.batch_atoms, device=self.assembly.device,
                    synthetic_dimers=self.synthetic_dimers, repulsion_restraint=self.repulsion_restraint,
                    backend=self.assembly.backend, min_distance=self.data.min_distance,
                    close_contact=self.data.close_contact, close_contact_error=self.data.close_contact_error)

    @classmethod
    def keys_help(cls) -> str:
        """Every config key with its default, from the dataclasses (``torchace fit --help``)."""
        def default(f):
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                return f.default_factory()  # type: ignore[misc]
            return "(required)"

        lines = ["config keys (YAML/JSON; defaults in brackets; docs/fitting.md):"]
        derived = {"elements": "(required)", "order": "(required)", "totaldegree": "(required)",
                   "rcut": "2.5·max r0", "r0": "mean bond length of the pair", "E0": "0 per element"}
        items = [f"{f.name} [{derived.get(f.name, default(f))}]" for f in dataclasses.fields(ACEConfig)]
        lines.append("  model:      " + ", ".join(items[:7]))
        lines.append("              " + ", ".join(items[7:]))
        for sec, kls in (("data", DataSection), ("assembly", AssemblySection), ("output", OutputSection)):
            lines.append(f"  {sec + ':':11s} " + ", ".join(f"{f.name} [{default(f)}]" for f in dataclasses.fields(kls)
                                                         if f.name != "fused"))
        for f in dataclasses.fields(cls):
            if f.name not in ("model", "data", "assembly", "output"):
                lines.append(f"  {f.name + ':':11s} [{default(f)}]" + TOP_LEVEL_HELP.get(f.name, ""))
        return "\n".join(lines)

    @classmethod
    def load(cls, path: str, overwrite: bool = False) -> "FitConfig":
        return load_config(cls, path, "fit config", overwrite)

    def build_prior(self):
        if self.prior is None:
            return None
        from . import priors

        return _construct(priors, "prior", self.prior)

    def build_scan_priors(self) -> Dict[str, Any]:
        """scan.priors as prior objects (None: plain ridge); without them the config's prior, or plain ridge."""
        from . import priors

        if self.scan.priors is None:
            return {self.prior["name"]: self.build_prior()} if self.prior else {"none": None}
        return {k: None if v is None else _construct(priors, "prior", v) for k, v in self.scan.priors.items()}

    def build_solver(self):
        if self.solver is None:
            return None
        from . import solvers

        return _construct(solvers, "solver", self.solver)


def load_config(cls, path: str, what: str, overwrite: bool = False):
    """``cls.from_dict`` of the YAML/JSON file ``path`` (strict parsing, size-checked, relative paths against its
    directory); every error names ``path`` (``what``: "fit config", "train config", for the messages);
    ``overwrite``: ``--force``, as ``output.overwrite: true``."""
    import json

    with open_input(path, what, MAX_CONFIG_BYTES) as fh:  # not /dev/zero, a FIFO, a directory, gigabytes
        text = fh.read()
    try:
        d = json.loads(text, object_pairs_hook=unique_keys) if path.endswith(".json") else strict_yaml(text)
    except RecursionError:
        raise ValueError(f"{path}: cannot parse: nested too deeply to be a {what}") from None
    except Exception as exc:  # YAML's messages span lines: one line, for the CLI
        raise ValueError(f"{path}: cannot parse: {' '.join(str(exc).split())}") from exc
    try:
        return cls.from_dict(d, os.path.dirname(os.path.abspath(path)), source=path, overwrite=overwrite)
    except ValueError as exc:
        from ..atomic import OutputPathError

        raise (OutputPathError if isinstance(exc, OutputPathError) else ValueError)(f"{path}: {exc}") from exc


def _choices(module, what: str):
    """The names a config may use: solver classes (subclasses of ``Solver``, not the base), prior constructors
    (the public functions and classes of ``priors.__all__``)."""
    if what == "solver":
        return sorted(n for n in module.__all__ if isinstance(getattr(module, n), type)
                      and issubclass(getattr(module, n), module.Solver) and getattr(module, n) is not module.Solver)
    return sorted(n for n in module.__all__ if callable(getattr(module, n)) and n not in ("from_dict",
                                                                                       "reset_basis_scale"))


def _construct(module, what: str, spec: Dict[str, Any]):
    spec = dict(spec)
    name = spec.pop("name")
    choices = _choices(module, what)
    if name not in choices:
        raise ValueError(f"fit config: unknown {what} {name!r}; choose one of {choices}")
    fn = getattr(module, name)
    import inspect

    params = inspect.signature(fn).parameters
    if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        allowed = [p for p, v in params.items() if v.kind in (v.POSITIONAL_OR_KEYWORD, v.KEYWORD_ONLY)]
        unknown = sorted(set(map(str, spec)) - set(allowed))
        if unknown:
            raise ValueError(f"fit config: bad arguments for {what} {name!r}: unknown argument(s) {unknown}; "
                             f"its arguments are {allowed}")
    try:
        return fn(**spec)
    except TypeError as exc:
        raise ValueError(f"fit config: bad arguments for {what} {name!r}: {exc}") from None
    except ValueError as exc:
        raise ValueError(f"fit config: {what} {name!r}: {exc}") from None


def _model_section(m: Any) -> Dict[str, Any]:
    """Validate the ``model`` section now (types, ranges, ACEConfig's own checks), before any data is read."""
    if not isinstance(m, dict):
        raise ValueError(f"fit config: 'model' must be a mapping of ACEConfig fields, got {m!r}")
    _check_keys("model", m, MODEL_KEYS)
    missing = [k for k in ("elements", "order", "totaldegree") if k not in m]
    if missing:
        raise ValueError(f"fit config: 'model' is missing {missing}")
    check_ace_fields(m, "fit config model")
    kw = {k: v for k, v in m.items() if k not in ("elements", "order", "totaldegree")}
    try:
        ACEConfig.build(m["elements"], m["order"], m["totaldegree"], **kw)
    except ValueError as exc:
        raise ValueError(f"fit config model: {exc}") from None
    return dict(m)


def _scan_section(d: Dict[str, Any], data: DataSection, base_dir: str) -> ScanSection:
    """The ``scan`` section, checked now: λ > 0, prior mappings, the validation split or files, form, select; a
    scan replaces the solver and works on the plain training data (no streaming, synthetic dimers or restraint)."""
    sc = _section("scan", d["scan"], ScanSection)
    given = [k for k in ("solver", "synthetic_dimers", "repulsion_restraint") if d.get(k)]
    given += ["assembly.streaming"] if (d.get("assembly") or {}).get("streaming") else []
    if given:
        raise ValueError(f"fit config: scan fits by ridge scans on the training data alone; remove {given}")
    if not isinstance(sc.lams, list) or not sc.lams:
        raise ValueError(f"fit config: 'scan.lams' must be a non-empty list of λ > 0, got {sc.lams!r}")
    sc.lams = [check_float("fit config", f"scan.lams[{i}]", x, positive=True) for i, x in enumerate(sc.lams)]
    if sc.priors is not None:
        if not isinstance(sc.priors, dict) or not sc.priors:
            raise ValueError(f"fit config: 'scan.priors' must be a mapping name -> prior (or null), got {sc.priors!r}")
        from . import priors

        for k, v in sc.priors.items():
            if v is not None and (not isinstance(v, dict) or "name" not in v):
                raise ValueError(f"fit config: 'scan.priors.{k}' must be null or a mapping with a 'name', got {v!r}")
            if v is not None:
                _construct(priors, "prior", v)
    if isinstance(sc.validation, float):
        if not 0 < sc.validation < 1:
            raise ValueError(f"fit config: 'scan.validation' as a fraction must be in (0, 1), got {sc.validation}")
    else:
        check_paths("fit config", "scan.validation", sc.validation)
        sc.validation = resolve_path(sc.validation, base_dir)
    check_str("fit config", "scan.form", sc.form, choices=("gram", "dual"))
    sets = ("validation", "test") if data.test else ("validation",)
    check_str("fit config", "scan.select", sc.select, choices=tuple(f"{s}_{k}" for s in sets for k in "EFV"))
    sc.seed = check_int("fit config", "scan.seed", sc.seed, minimum=0)
    check_str("fit config", "scan.checkpoint_dir", sc.checkpoint_dir, allow_none=True)
    if sc.checkpoint_dir is not None:
        sc.checkpoint_dir = resolve_path(sc.checkpoint_dir, base_dir)
        if not os.path.isdir(sc.checkpoint_dir):
            raise ValueError(f"fit config: 'scan.checkpoint_dir' {sc.checkpoint_dir!r} is not a directory")
    return sc


def _check_weights(w: Any) -> None:
    if not isinstance(w, dict):
        raise ValueError(f"fit config: 'weights' must be a mapping config_type -> {{E, F, V}}, got {w!r}")
    for ct, v in w.items():
        if not isinstance(v, dict):
            raise ValueError(f"fit config: 'weights.{ct}' must be a mapping with keys E, F, V, got {v!r}")
        _check_keys(f"weights.{ct}", v, ("E", "F", "V"))
        for k, x in v.items():
            check_float("fit config", f"weights.{ct}.{k}", x, nonnegative=True)


def _check_E0(e0: Any) -> None:
    if e0 is None or e0 in ("isolated", "fit"):
        return
    if not isinstance(e0, dict):
        raise ValueError(f"fit config: 'E0' must be 'isolated', 'fit' or a mapping element -> eV, got {e0!r}")
    for k, v in e0.items():
        check_float("fit config", f"E0.{k}", v)


def _check_keys(section: str, d: Dict[str, Any], allowed) -> None:
    unknown = set(d) - set(allowed)
    if unknown:
        raise ValueError(f"fit config: unknown key(s) {sorted(unknown)} in '{section}'; allowed: {sorted(allowed)}")


def _section(name: str, d: Any, cls):
    if d is None:
        d = {}
    if not isinstance(d, dict):
        raise ValueError(f"fit config: '{name}' must be a mapping")
    _check_keys(name, d, {f.name for f in dataclasses.fields(cls)})
    return cls(**d)


def resolve_path(p, base_dir: str):
    if isinstance(p, (list, tuple)):
        return [resolve_path(x, base_dir) for x in p]
    if p.startswith(BUNDLED):
        return example_data(p[len(BUNDLED):])
    return p if os.path.isabs(p) else os.path.join(base_dir, p)
