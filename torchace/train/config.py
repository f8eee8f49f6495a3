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
from typing import Any, Dict, Optional

from ..fieldcheck import check_bool, check_int, check_str
from ..fit.config import FitConfig, load_config
from ..model.readout.defaults import NONLINEAR
from .options import TRAINING, TrainOptions, section_fields

# the nonlinear options of the model section (``torchace.ace_model`` keywords beyond ACEConfig)
MODEL_OPTIONS = ("densities", "embedding", "fs_parameters", "learnable_radials", "learnable_fs", "mlp_hidden",
                 "seed")
FROM = "from"
_D = TrainOptions()
KEYS_HELP = f"""train config keys: everything of the fit config (model, data, weights, E0, prior, solver, output,
threads; `torchace fit --help`) except assembly, plus
  model:      densities [{NONLINEAR.densities}], embedding [{NONLINEAR.embedding}], fs_parameters [[1, 1, 1, 0.5]], \
learnable_radials [{str(NONLINEAR.learnable_radials).lower()}],
              learnable_fs [false], mlp_hidden [16], seed [0]; or only {{from: model.json}}
  data:       validation [none]: a fraction of data.train (seeded split) or file(s)
  training:   init [{_D.init}: keep the parameters of a model.from with trained coefficients, else linear | linear | \
model],
              optimizer [{_D.optimizer} (gn; lbfgs for the MLP) | gn | lbfgs | adam | gn+lbfgs | adam+lbfgs],
              epochs [{_D.epochs}; [first, lbfgs] for the paired optimisers], batch_size [{_D.batch_size}], \
lr [adam 1e-3, lbfgs 1],
              lam [null: the BLR warm start's; else 1e-3], init_scale [{_D.init_scale:g}], \
init_split [{_D.init_split}], patience [{_D.patience}], seed [{_D.seed}],
              device [cpu], dtype [{_D.dtype}], committee_size [{_D.committee_size}] (BLR posterior samples of \
the linear part)
  output:     history [none] (JSON of every epoch), checkpoint [none] (resumed from when present),
              overwrite [false] (replace existing files torchace did not write)"""

# The ``training:`` section: the ``TrainOptions`` fields marked TRAINING, with their defaults.  One exception:
# ``device`` is "cpu" here (None in the API: the model's device); a config builds or loads its model on the CPU,
# so both mean the same device.
_CONFIG_DEFAULTS = {"device": "cpu"}
TrainingSection = dataclasses.make_dataclass(
    "TrainingSection",
    [(f.name, f.type, field(default=_CONFIG_DEFAULTS.get(f.name, f.default))) for f in section_fields(TRAINING)],
    namespace={"__doc__": "The ``training:`` section of the train config (``TrainOptions``' TRAINING fields).",
               "__module__": __name__})


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
        fit = FitConfig.from_dict(d, base_dir, source, overwrite=overwrite)
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
        (``model.readout.defaults.NONLINEAR`` by default: two densities, the FS embedding, learnable radials,
        as pacemaker)."""
        import torchace

        if self.model_from is not None:
            return torchace.load(self.model_from)
        m = dict(self.fit.model)
        elements, order, td = m.pop("elements"), m.pop("order"), m.pop("totaldegree")
        opts = dict(self.model_options)
        opts.setdefault("densities", NONLINEAR.densities)
        opts.setdefault("embedding", NONLINEAR.embedding if opts["densities"] > 1 else None)  # ace_model's rule
        opts.setdefault("learnable_radials", NONLINEAR.learnable_radials)
        return torchace.ace_model(elements, order, td, **opts, **m)

    def train_kwargs(self) -> Dict[str, Any]:
        """The keyword arguments of ``torchace.train`` this config stands for."""
        from ..fit.data import DataKeys

        kw = {f.name: getattr(self.training, f.name) for f in dataclasses.fields(self.training)}
        return dict(kw, weights=self.fit.weights, prior=self.fit.build_prior(), solver=self.fit.build_solver(),
                    E0=self.fit.E0, validation=self.validation, checkpoint=self.checkpoint,
                    keys=DataKeys(**self.fit.data.keys), skip_bad=self.fit.data.skip_bad,
                    min_distance=self.fit.data.min_distance, close_contact=self.fit.data.close_contact,
                    close_contact_error=self.fit.data.close_contact_error)


def _model_keys():
    from ..fit.config import MODEL_KEYS

    return MODEL_KEYS


def _check_training(t) -> None:
    """The ``TrainOptions`` checks, named as the file's keys; numbers stored as floats."""
    checked = TrainOptions(**dataclasses.asdict(t)).checked("train config", "training.")
    for f in dataclasses.fields(t):
        setattr(t, f.name, getattr(checked, f.name))


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
