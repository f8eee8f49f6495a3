"""Round-3 hostile cases of class 12 (issue 26, class 6): files read with limits, meaningless values refused.

Each case is another instance of the class than the issue's examples: FIFOs and device links given to the
readers that used to block or read for ever (the CLI, ``read_data``, checkpoints, the coupling cache), .yace
aliases spelled so that the old text scan missed them, declared sizes of a few-kB .yace, meaningless values of
model files and .yace files.  Cases that could hang use the case timeout.
"""
from __future__ import annotations

import os
import re

from hostile_inputs import _yace, case  # noqa: F401  (registered by load_case_modules)


@case(12, "CLI evaluate: the structures file is a FIFO", names=("pipe.xyz", "FIFO"), cli=True, timeout=60)
def _(ctx):
    m = ctx.model_file()
    os.mkfifo(ctx.path("pipe.xyz"))
    ctx.cli("evaluate", "--model", m, ctx.path("pipe.xyz"))


@case(12, "CLI fit: data.train is a link to /dev/zero", names=("train.xyz", "/dev/zero"), cli=True, timeout=60)
def _(ctx):
    os.symlink("/dev/zero", ctx.path("train.xyz"))
    ctx.cli("fit", ctx.config(), "-q")


@case(12, "training checkpoint path is a FIFO (torch.load would block)", names=("ckpt.pt", "FIFO"), timeout=60)
def _(ctx):
    from torchace.train.state import TrainCheckpoint

    os.mkfifo(ctx.path("ckpt.pt"))
    TrainCheckpoint(ctx.path("ckpt.pt"), {}).load()


@case(12, ".yace: alias bomb with a '-'-named anchor (&-a)", names=("bomb.yace", "line 1", "anchors/aliases"),
      timeout=60)
def _(ctx):
    from torchace.io import read_yace

    bomb = "a: &-a [1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(
        f"{c}: &-{c} [{', '.join(['*-' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))
    text = re.sub(r"^E0: .*$", "E0: *-i", open(_yace(ctx)).read(), count=1, flags=re.M)  # traversed: 9^9 values
    read_yace(ctx.xyz_text("bomb.yace", bomb + text))


@case(12, ".yace: alias bomb after a '#' inside quotes", names=("bomb.yace", "line 1", "anchors/aliases"),
      timeout=60)
def _(ctx):
    from torchace.io import read_yace

    bomb = 'a: ["#", &a [1, 1, 1, 1, 1, 1, 1, 1]]\n' + "".join(
        f'{c}: ["#", &{c} [{", ".join(["*" + p] * 8)}]]\n' for p, c in zip("abcdefgh", "bcdefghi"))
    text = re.sub(r"^E0: .*$", 'E0: ["#", *i]', open(_yace(ctx)).read(), count=1, flags=re.M)
    read_yace(ctx.xyz_text("bomb.yace", bomb + text))


@case(12, ".yace: a few kB declaring nradbasemax: 10^9", names=("big.yace", "nradbasemax"), timeout=60)
def _(ctx):
    from torchace.io import read_yace

    text = re.sub(r"nradbasemax: \d+", "nradbasemax: 1000000000", open(_yace(ctx)).read(), count=1)
    read_yace(ctx.xyz_text("big.yace", text))


@case(12, ".yace: rho_core_cutoff: -1 (every density switched off)", names=("bad.yace", "rho_core_cutoff"))
def _(ctx):
    from torchace.io import read_yace

    text = re.sub(r"rho_core_cutoff: [0-9.]+", "rho_core_cutoff: -1", open(_yace(ctx)).read(), count=1)
    read_yace(ctx.xyz_text("bad.yace", text))


@case(12, ".yace: radcoefficients holding .nan", names=("bad.yace", "radcoefficients"))
def _(ctx):
    from torchace.io import read_yace

    text = re.sub(r"radcoefficients: \[\[\[[-0-9.e]+", "radcoefficients: [[[.nan", open(_yace(ctx)).read(), count=1)
    read_yace(ctx.xyz_text("bad.yace", text))


@case(12, "model file: nl_scale all 0 (the many-body part switched off)", names=("bad.json", "nl_scale"))
def _(ctx):
    import torchace

    d = ctx.doc()
    d["nl_scale"] = [[0.0] * len(row) for row in d["nl_scale"]]
    torchace.load(ctx.write_doc(d))


@case(12, "coupling cache entry truncated: recomputed with a warning", expect="ok", timeout=120)
def _(ctx):
    import glob
    import warnings

    import numpy as np
    from torchace.basis import coupling_coefficients as C

    os.environ["TORCHACE_CACHE"] = ctx.path("cache")
    C.symmetric_coupling.cache_clear()
    ms, c = C.symmetric_coupling((1, 2, 3), (1, 1, 1))
    (entry,) = glob.glob(ctx.path("cache/coupling_*.npz"))
    with open(entry, "r+b") as fh:
        fh.truncate(64)
    C.symmetric_coupling.cache_clear()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        ms2, c2 = C.symmetric_coupling((1, 2, 3), (1, 1, 1))
    if not (np.array_equal(c, c2) and np.array_equal(ms, ms2)):
        return "wrong coefficients from a damaged cache"
    if not any("damaged or foreign" in str(x.message) for x in w):
        return "no warning about the damaged entry"
    return True
