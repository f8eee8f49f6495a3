"""Class 16 (issue 26, training lifecycle): continuing from a trained model, checkpoints that cannot be resumed as
asked, divergence, validation sets that measure nothing, bad `validation` arguments
(tests/train/test_round3_train.py)."""
from hostile_inputs import case, Ctx  # noqa: F401  (Ctx: the helpers each case receives)

W = {"default": {"E": 30, "F": 1, "V": 1}}
E0 = {"Si": -5.0}


def _nl():
    import torchace

    return torchace.ace_model(["Si"], 2, 5, densities=2, embedding="fs", learnable_radials=True)


def _train(model, data, **kw):
    import torchace

    kw = dict(dict(weights=W, E0=E0, progress=False, compute_errors=False), **kw)
    return torchace.train(model, data, **kw)


@case(16, "train validation=1 (an integer, not a fraction)", names=("validation", "fraction"))
def _(ctx):
    _train(_nl(), ctx.frames(), epochs=1, validation=1)


@case(16, "train validation = the training file itself", names=("validation", "train.xyz", "training data"))
def _(ctx):
    p = ctx.xyz()
    ctx.protect(p)
    _train(_nl(), p, epochs=1, validation=p)


@case(16, "train config data.validation: true", names=("train.json", "data.validation"), cli=True)
def _(ctx):
    ctx.xyz()
    cfg = ctx.config("train.json", model={"elements": ["Si"], "order": 2, "totaldegree": 5, "densities": 2},
                     solver=..., data={"train": "train.xyz", "validation": True}, training={"epochs": 1})
    ctx.cli("train", cfg, "-q")


@case(16, "train resumes a checkpoint holding NaN parameters", names=("ck.pt", "coefficients", "non-finite"),
      timeout=60)
def _(ctx):
    import torch

    data, ck = ctx.frames(), ctx.path("ck.pt")
    _train(_nl(), data, epochs=1, checkpoint=ck)
    doc = torch.load(ck, weights_only=True)
    doc["state"]["model"]["coefficients"].fill_(float("nan"))
    torch.save(doc, ck)
    _train(_nl(), data, epochs=2, checkpoint=ck)


@case(16, "train resumes a 3-epoch checkpoint with epochs=1", names=("ck.pt", "epochs"), timeout=60)
def _(ctx):
    data, ck = ctx.frames(), ctx.path("ck.pt")
    _train(_nl(), data, epochs=3, checkpoint=ck)
    ctx.protect(ck)
    _train(_nl(), data, epochs=1, checkpoint=ck)


@case(16, "train with Adam lr=1e200 (diverges): the best epoch is kept", expect="ok", timeout=60)
def _(ctx):
    import warnings

    import torch

    m = _nl()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = _train(m, ctx.frames(), epochs=3, optimizer="adam", lr=1e200)
    finite = all(bool(torch.isfinite(p).all()) for p in m.parameters())
    return (finite and res.stopped.startswith("diverged") and res.chosen_epoch == 0) or f"stopped {res.stopped!r}"


@case(16, "train config model.from a trained file (default init): its coefficients kept", expect="ok", timeout=60)
def _(ctx):
    import json

    import torch

    import torchace

    ctx.xyz()
    lin = torchace.ace_model(["Si"], 2, 5)
    ctx.fit(model=lin)
    lin.save(ctx.path("trained.json"))
    cfg = ctx.path("train.json")
    with open(cfg, "w") as fh:
        json.dump({"model": {"from": "trained.json"}, "data": {"train": "train.xyz"}, "training": {"epochs": 0},
                   "output": {"model": "out.json"}}, fh)
    ctx.cli("train", cfg, "-q")
    kept = torchace.load(ctx.path("out.json")).coefficients.detach()
    return bool(torch.equal(kept, lin.coefficients.detach())) or "the trained coefficients were replaced"


@case(16, "train with a structure whose energy label is 1e200", names=("structure 2", "energy"))
def _(ctx):
    frames = ctx.frames()
    frames[2].calc.results["energy"] = 1e200
    _train(_nl(), frames, epochs=1)
