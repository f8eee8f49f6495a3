"""Class 10 (issue 26): no file replaced that torchace did not write (torchace.atomic, the output rule).

Each output aimed at a file that is no input of the command (another data set, a model file, a hand-written
script or LAMMPS input, another program's archive, a FIFO): refused before any work, naming the file (and the
config field), the file's checksum unchanged (``ctx.protect``).  Negative controls: torchace's own output of the
same kind is replaced without asking; a .yace set that fails part-way leaves the whole old set.
"""
from __future__ import annotations

import errno
import json
import os

from hostile_inputs import Ctx, case, sha  # noqa: F401  (Ctx: the type of ctx)


def _model(ctx, name="m.json"):
    return ctx.model_file(name, td=5)


@case(10, "CLI evaluate -o onto another data set (no input of the command)",
      names=("other.xyz", "not a torchace evaluate report", "--force"), cli=True, timeout=120)
def _(ctx):
    m, data, other = _model(ctx), ctx.xyz("eval.xyz"), ctx.xyz("other.xyz")
    ctx.protect(m, data, other)
    ctx.cli("evaluate", data, "--model", m, "--backend", "analytic", "-o", other)


@case(10, "CLI evaluate -o onto its own earlier report (negative control: replaced)", expect="ok", cli=True,
      timeout=180)
def _(ctx):
    m, data = _model(ctx), ctx.xyz("eval.xyz")
    rep = ctx.path("report.json")
    ctx.cli("evaluate", data, "--model", m, "--backend", "analytic", "-o", rep)
    first = sha(rep)
    ctx.cli("evaluate", data, "--model", m, "--backend", "analytic", "--rows", "-o", rep)
    with open(rep) as fh:
        return sha(rep) != first and json.load(fh)["format"] == "torchace-evaluation"


@case(10, "CLI fit: output.errors onto another model file", names=("other.json", "output.errors",
                                                                    "not a torchace errors report"), cli=True)
def _(ctx):
    train, other = ctx.xyz(), _model(ctx, "other.json")
    cfg = ctx.config(output={"model": "out.json", "errors": "other.json"})
    ctx.protect(train, cfg, other)
    ctx.cli("fit", cfg, "-q")


@case(10, "CLI train: output.history onto a hand-written notes file",
      names=("notes.txt", "output.history", "not a torchace training history"), cli=True, timeout=120)
def _(ctx):
    train = ctx.xyz()
    notes = ctx.xyz_text("notes.txt", "my notes\n")
    cfg = ctx.config("train.json", model={"densities": 2}, training={"optimizer": "lbfgs", "epochs": 1},
                     solver=..., output={"model": "nl.json", "errors": None, "history": "notes.txt"})
    ctx.protect(train, cfg, notes)
    ctx.cli("train", cfg, "-q")


@case(10, "CLI lammps -o onto a hand-written script that imports torchace",
      names=("my_md.py", "not a LAMMPS driver script written by torchace"), cli=True)
def _(ctx):
    m = _model(ctx)
    data = ctx.xyz_text("si.data", "LAMMPS data\n\n2 atoms\n1 atom types\n")
    script = ctx.xyz_text("my_md.py", "#!/usr/bin/env python\n# my MD run\nimport torchace\n")
    ctx.protect(m, data, script)
    ctx.cli("lammps", m, data, "--elements", "Si", "-o", script)


@case(10, "export TorchScript onto an .npz data set (any zip used to count as an archive)",
      names=("data.npz", "not a TorchScript archive written by torchace"))
def _(ctx):
    import numpy as np

    import torchace

    p = ctx.path("data.npz")
    np.savez(p, x=np.arange(3))
    ctx.protect(p)
    torchace.export(ctx.model(td=5), p)


@case(10, "export .yace: the LAMMPS include file is a hand-written input that mentions torchace",
      names=("si.lammps", "not a LAMMPS include file written by torchace"))
def _(ctx):
    import torchace

    inc = ctx.xyz_text("si.lammps", "# my LAMMPS input for the torchace potential\nunits metal\n")
    ctx.protect(inc)
    torchace.export(ctx.model(td=5), ctx.path("si.yace"), format="yace")


@case(10, "export .yace: disk full while the pair table is written: the old set stays whole", expect="ok")
def _(ctx):
    import torchace
    import torchace.atomic as atomic

    m = ctx.model(td=5)
    torchace.export(m, ctx.path("si.yace"), format="yace")
    files = [ctx.path(f) for f in ("si.yace", "si_pairpot.table", "si.lammps")]
    if not all(os.path.exists(f) for f in files):
        return "the export wrote no pair table (the case needs one)"
    before = [sha(f) for f in files]
    real = atomic.write_text

    def full_disk(path, text):
        if path.endswith(".table"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, text)

    atomic.write_text = full_disk
    try:
        torchace.export(ctx.model(td=5, seed=9), ctx.path("si.yace"), format="yace")
        return "no error on a full disk"
    except OSError as exc:
        if "si_pairpot.table" not in str(exc):
            return f"the error does not name the table: {exc}"
    finally:
        atomic.write_text = real
    return [sha(f) for f in files] == before or "the old set was changed"


@case(10, "parity plot onto someone's own matplotlib PNG", names=("figure.png", "not a PNG plot written by torchace"))
def _(ctx):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from torchace.fit.metrics import parity_plot

    fig = plt.figure()
    p = ctx.path("figure.png")
    fig.savefig(p)
    plt.close(fig)
    ctx.protect(p)
    parity_plot(ctx.model(td=5), ctx.frames(), p)


@case(10, "CLI evaluate -o onto a FIFO: refused, no hang", names=("fifo.json", "not a regular file"), cli=True,
      timeout=60)
def _(ctx):
    m, data = _model(ctx), ctx.xyz("eval.xyz")
    fifo = ctx.path("fifo.json")
    os.mkfifo(fifo)
    ctx.cli("evaluate", data, "--model", m, "--backend", "analytic", "-o", fifo, "--force")
