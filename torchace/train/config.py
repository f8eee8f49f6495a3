"""TrainConfig: the ``torchace train CONFIG.yaml`` file, mirroring ``torchace.train`` (docs/training.md).

```yaml
model:    {elements: [Si], order: 3, totaldegree: [20, 16, 12], densities: 2, embedding: fs,
           fs_parameters: [1, 1, 1, 0.5], learnable_radials: true}     # or {from: model.json}
data:     {train: Si_train.xyz, test: Si_test.xyz, validation: 0.1}    # validation: a fraction or file(s)
weights:  {default: {E: 30, F: 1, V: 0}}
E0:       fit
prior:    null                                     # as in the fit config
solver:   {name: BLR}                              # of the linear warm start (init: linear)
training: {init: auto, optimizer: auto, epochs: 100, lam: null, patience: 10, device: cpu}   # auto: model.from kept
output:   {model: model_nl.json, errors: errors.json, history: history.json, checkpoint: train.pt}
```

Everything the fit config has is validated by ``FitConfig`` itself (one set of checks): this module takes out
the training-only keys (``training``, the nonlinear model options, ``data.validation``, ``output.history`` /
``output.checkpoint``), checks them, and hands the rest to ``FitConfig.from_dict``.
"""
from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Union

from ..fieldcheck import check_bool, check_device, check_float, check_int, check_str
from ..fit.config import FitConfig, load_config
from .loss import DEFAULT_EPOCHS

# the nonlinear options of the model section (``torchace.ace_model`` keywords beyond ACEConfig)
MODEL_OPTIONS = ("densities", "embedding", "fs_parameters", "learnable_radials", "learnable_fs", "mlp_hidden",
                 "seed")
FROM = "from"
KEYS_HELP = """train config keys: everything of the fit config (model, data, weights, E0, prior, solver, output,
threads; `torchace fit --help`) except assembly, plus
  model:      densities [2], embedding [fs], fs_parameters [[1, 1, 1, 0.5]], learnable_radials [true],
              learnable_fs [false], mlp_hidden [16], seed [0]; or only {from: model.json}
  data:       validation [none]: a fraction of data.train (seeded split) or file(s)
  training:   init [auto: keep the parameters of a model.from with trained coefficients, else linear | linear | model],
              optimizer [auto (gn; lbfgs for the MLP) | gn | lbfgs | adam | gn+lbfgs | adam+lbfgs],
              epochs [100; [first, lbfgs] for the paired optimisers], batch_size [8], lr [adam 1e-3, lbfgs 1],
              lam [null: the BLR warm start's; else 1e-3], init_scale [0], init_split [0.1], patience [10], seed [0],
              device [cpu], dtype [float64], committee_size [0] (BLR posterior samples of the linear part)
  output:     history [none] (JSON of every epoch), checkpoint [none] (resumed from when present),
              overwrite [false] (replace existing files torchace did not write)"""


@dataclass
class TrainingSection:
    init: str = "auto"
    optimizer: str = "auto"
    epochs: Union[int, List[int]] = DEFAULT_EPOCHS
    batch_size: int = 8
    lr: Optional[float] = None
    lam: Optional[float] = None
    init_scale: float = 0.0
    init_split: float = 0.1
    patience: int = 10
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float64"
    committee_size: int = 0


@dataclass
class TrainConfig:
    fit: FitConfig                      # model, data, weights, E0, prior, solver, output.model/errors (validated)
    model_options: Dict[str, Any]
    model_from: Optional[str]
    training: TrainingSection = field(default_factory=TrainingSection)
    validation: Any = None              # a fraction, a path or a list of paths
    history: Optional[str] = None
    checkpoint: Optional[str] = None

    @classmethod
    def from_dict(cls, d: Dict[str, Any], base_dir: str = ".", source: Optional[str] = None,
                  overwrite: bool = False) -> "TrainConfig":
        if not isinstance(d, dict):
            raise ValueError("the train config must be a mapping with sections model, data, ...")
        d = copy.deepcopy(d)
        if "assembly" in d:
            raise ValueError("train config: unknown key 'assembly' (the warm start uses the fit's defaults)")
        tr = d.pop("training", None) or {}
        if not isinstance(tr, dict):
            raise ValueError("train config: 'training' must be a mapping")
        unknown = set(tr) - {f.name for f in dataclasses.fields(TrainingSection)}
        if unknown:
            raise ValueError(f"train config: unknown key(s) {sorted(unknown)} in 'training'; allowed: "
                             f"{sorted(f.name for f in dataclasses.fields(TrainingSection))}")
        training = TrainingSection(**tr)
        _check_training(training)
        m = d.get("model")
        if not isinstance(m, dict):
            raise ValueError("train config: section 'model' must be a mapping (ACEConfig fields and nonlinear options, "
                             "or {from: model.json})")
        opts = {k: m.pop(k) for k in MODEL_OPTIONS if k in m}
        model_from = m.pop(FROM, None)
        if model_from is not None:
            if m or opts:
                raise ValueError("train config: model.from takes no other model keys, "
                                 f"got {sorted(set(m) | set(opts))}")
            check_str("train config", "model.from", model_from)
            model_from = model_from if os.path.isabs(model_from) else os.path.join(base_dir, model_from)
            import torchace

            start = torchace.load(model_from)
            cfg = start.config_dict() if hasattr(start, "config_dict") else None
            if cfg is None:
                raise ValueError(f"train config: model.from {model_from!r} is not a torchace model file")
            d["model"] = {k: v for k, v in cfg.items() if k in _model_keys()}
        data = d.get("data")
        validation = data.pop("validation", None) if isinstance(data, dict) else None
        out = d.get("output")
        history = checkpoint = None
        if isinstance(out, dict):
            history, checkpoint = out.pop("history", None), out.pop("checkpoint", None)
        fit = FitConfig.from_dict(d, base_dir, source, model_format=_output_format(opts, model_from),
                                  overwrite=overwrite)
        from .validation import check_validation

        validation = check_validation("train config", "data.validation", validation)
        if validation is not None and not isinstance(validation, float):
            from ..fit.config import resolve_path

            validation = resolve_path(validation, base_dir)
        for k, v in (("history", history), ("checkpoint", checkpoint)):
            check_str("train config", f"output.{k}", v, allow_none=True)
        history = history if not history or os.path.isabs(history) else os.path.join(base_dir, history)
        checkpoint = checkpoint if not checkpoint or os.path.isabs(checkpoint) else os.path.join(base_dir, checkpoint)
        if history:  # the output rule (torchace.atomic), before the training; the checkpoint is read first
            from ..atomic import TRAIN_HISTORY, OutputPathError, check_output

            try:
                check_output(history, TRAIN_HISTORY, fit.output.overwrite)
            except OutputPathError as exc:
                raise OutputPathError(f"train config: output.history: {exc}") from None
        _check_model_options(opts)
        return cls(fit=fit, model_options=opts, model_from=model_from, training=training, validation=validation,
                   history=history, checkpoint=checkpoint)

    @classmethod
    def load(cls, path: str, overwrite: bool = False) -> "TrainConfig":
        return load_config(cls, path, "train config", overwrite)

    def build_model(self):
        """The model to train: loaded from ``model.from``, else ``torchace.ace_model`` with the nonlinear options
        (``densities: 2`` and ``embedding: fs`` by default, as pacemaker)."""
        import torchace

        if self.model_from is not None:
            return torchace.load(self.model_from)
        m = dict(self.fit.model)
        elements, order, td = m.pop("elements"), m.pop("order"), m.pop("totaldegree")
        opts = dict(self.model_options)
        opts.setdefault("densities", 2)
        opts.setdefault("embedding", "fs" if opts["densities"] > 1 else None)
        opts.setdefault("learnable_radials", True)
        if opts["densities"] == 1 and opts["embedding"] is None and not opts["learnable_radials"]:
            from ..model.nonlinear import nonlinear_ace_model

            return nonlinear_ace_model(elements, order, td, embedding=None, densities=1, learnable_radials=False, **m)
        return torchace.ace_model(elements, order, td, **opts, **m)

    def train_kwargs(self) -> Dict[str, Any]:
        """The keyword arguments of ``torchace.train`` this config stands for."""
        from ..fit.data import DataKeys

        t = self.training
        return dict(weights=self.fit.weights, prior=self.fit.build_prior(), solver=self.fit.build_solver(),
                    E0=self.fit.E0, init=t.init, optimizer=t.optimizer, epochs=t.epochs, batch_size=t.batch_size,
                    lr=t.lr, lam=t.lam, init_scale=t.init_scale, init_split=t.init_split, patience=t.patience,
                    seed=t.seed, device=t.device,
                    dtype=t.dtype, committee_size=t.committee_size, validation=self.validation,
                    checkpoint=self.checkpoint,
                    keys=DataKeys(**self.fit.data.keys), skip_bad=self.fit.data.skip_bad,
                    min_distance=self.fit.data.min_distance, close_contact=self.fit.data.close_contact,
                    close_contact_error=self.fit.data.close_contact_error)


def _output_format(opts: Dict[str, Any], model_from: Optional[str]) -> str:
    """The format the trained model is saved in: the linear model file for a one-density linear model."""
    from ..model.nonlinear import FORMAT

    linear = (opts.get("densities", 2) == 1 and opts.get("embedding") is None
              and not opts.get("learnable_radials", True))
    if model_from is not None:
        from ..inputs import open_input
        from ..model.state import MAX_FILE_BYTES

        with open_input(model_from, "torchace model file", MAX_FILE_BYTES, "rb") as fh:  # never blocks on a FIFO
            linear = b'"torchace-model"' in fh.read(4096)
    return "torchace-model" if linear else FORMAT


def _model_keys():
    from ..fit.config import MODEL_KEYS

    return MODEL_KEYS


def _check_training(t: TrainingSection) -> None:
    from .start import DTYPES, INITS, OPTIMIZERS, PAIRED

    check_str("train config", "training.init", t.init, choices=INITS)
    check_str("train config", "training.optimizer", t.optimizer, choices=OPTIMIZERS)
    if isinstance(t.epochs, list):
        if t.optimizer not in PAIRED or len(t.epochs) != 2:
            raise ValueError(f"train config: training.epochs is a list [first, lbfgs] only with optimizer "
                             f"{' or '.join(PAIRED)}")
        for e in t.epochs:
            check_int("train config", "training.epochs", e, minimum=0)
    else:
        check_int("train config", "training.epochs", t.epochs, minimum=0)
    check_int("train config", "training.batch_size", t.batch_size, minimum=1)
    if t.lr is not None:
        t.lr = check_float("train config", "training.lr", t.lr, positive=True)
    if t.lam is not None:
        t.lam = check_float("train config", "training.lam", t.lam, nonnegative=True)
    t.init_scale = check_float("train config", "training.init_scale", t.init_scale, nonnegative=True)
    t.init_split = check_float("train config", "training.init_split", t.init_split, nonnegative=True)
    if t.init_split >= 1.0:
        raise ValueError(f"train config: training.init_split must be in [0, 1), got {t.init_split}")
    check_int("train config", "training.patience", t.patience, minimum=1)
    check_int("train config", "training.seed", t.seed, minimum=0)
    check_str("train config", "training.device", t.device)
    check_device("train config", "training.device", t.device)
    check_str("train config", "training.dtype", t.dtype, choices=tuple(DTYPES))
    check_int("train config", "training.committee_size", t.committee_size, minimum=0)


def _check_model_options(o: Dict[str, Any]) -> None:
    if "densities" in o:
        check_int("train config", "model.densities", o["densities"], minimum=1)
    if "embedding" in o:
        check_str("train config", "model.embedding", o["embedding"], choices=("fs", "mlp"), allow_none=True)
    for k in ("learnable_radials", "learnable_fs"):
        if k in o:
            check_bool("train config", f"model.{k}", o[k])
    if "mlp_hidden" in o:
        check_int("train config", "model.mlp_hidden", o["mlp_hidden"], minimum=1)
    if "seed" in o:
        check_int("train config", "model.seed", o["seed"], minimum=0)
    if "fs_parameters" in o:
        fs = o["fs_parameters"]
        if not isinstance(fs, list) or not fs:
            raise ValueError(f"train config: model.fs_parameters must be a list [a_1, m_1, ...], got {fs!r}")
