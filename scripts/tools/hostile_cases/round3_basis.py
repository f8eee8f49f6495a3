"""Round-3 hostile cases (issue 26), classes 14 (documented bases build) and 15 (read-back keeps the whole
model): the ACEpotentials.jl paper's and the seed papers' bases are accepted while a basis that truly needs
l > 12 is refused at once; ``read_yace`` / ``torchace.load`` of torchace's own ``.yace`` export give the
model with its pair part, or a clear error naming the pair table — never the many-body half."""
from __future__ import annotations

import os

from hostile_inputs import case


def _si64():
    from ase.build import bulk

    at = bulk("Si", "diamond", a=5.43, cubic=True).repeat(2)
    at.rattle(0.05, seed=4)
    return at


def _with_pair(ctx):
    """A Si model whose pair part matters, exported to m.yace (+ m_pairpot.table, m.lammps)."""
    import torch
    import torchace

    m = ctx.model(order=2, td=6)
    with torch.no_grad():
        m.coefficients[m.n_manybody:] *= 50.0
    torchace.export(m, ctx.path("m.yace"), "yace")
    return m


def _same_energy(model, back) -> bool:
    import torchace

    at = _si64()
    a = float(torchace.evaluate(model, at)["energy"][0])
    b = float(torchace.evaluate(back, at)["energy"][0])
    return abs(a - b) <= 1e-9 * max(1.0, abs(a))


# ================================================================ class 14: documented bases build

@case(14, "ace_model(['Si'], 3, [25, 21, 17]) (ACE(lge), 1041 functions)", expect="ok", quick=True)
def _(ctx):
    import torchace

    m = torchace.ace_model(["Si"], 3, [25, 21, 17])
    return m.basis_size == 1041 and m.embedding.max_l == 6


@case(14, "ace_model(['Mo'], 4, [25, 21, 17, 13]) (seed paper 004's Mo basis)", expect="ok")
def _(ctx):
    import torchace

    return torchace.ace_model(["Mo"], 4, [25, 21, 17, 13]).embedding.max_l == 6


@case(14, "ace_model(['Si'], 4, 21) (seed paper 000's Si basis, order 4, degree 21)", expect="ok", timeout=60)
def _(ctx):
    import torchace

    return torchace.ace_model(["Si"], 4, 21).embedding.max_l == 6


@case(14, "ace_model(['Si', 'Ge'], 3, [20, 19.5, 12]) (two elements, l up to 6)", expect="ok", timeout=60)
def _(ctx):
    import torchace

    return torchace.ace_model(["Si", "Ge"], 3, [20, 19.5, 12]).embedding.max_l == 6


@case(14, "ace_model(['Si'], 2, 42): needs l = 13 > 12", names=("l = 13", "totaldegree 42", "order 2"), quick=True)
def _(ctx):
    import torchace

    torchace.ace_model(["Si"], 2, 42)


# ================================================================ class 15: read-back keeps the whole model

@case(15, "read_yace of torchace's own export (a pair part): the whole model", expect="ok", quick=True)
def _(ctx):
    from torchace.io import read_yace

    m = _with_pair(ctx)
    return _same_energy(m, read_yace(ctx.path("m.yace")))


@case(15, "torchace.load of torchace's own .yace export: the whole model", expect="ok")
def _(ctx):
    import torchace

    m = _with_pair(ctx)
    return _same_energy(m, torchace.load(ctx.path("m.yace")))


@case(15, "read_yace of an export whose pair table was deleted", names=("m.yace", "m_pairpot.table", "pair_table"))
def _(ctx):
    from torchace.io import read_yace

    _with_pair(ctx)
    os.remove(ctx.path("m_pairpot.table"))
    read_yace(ctx.path("m.yace"))


@case(15, "read_yace: the export's pair table truncated", names=("m_pairpot.table",))
def _(ctx):
    from torchace.io import read_yace

    _with_pair(ctx)
    p = ctx.path("m_pairpot.table")
    text = open(p).read()
    with open(p, "w") as fh:
        fh.write(text[: len(text) // 2])
    read_yace(ctx.path("m.yace"))


@case(15, "read_yace: an older export (no declaration line), table and include file removed",
      names=("m.yace", "older torchace", "pair_table"))
def _(ctx):
    from torchace.io import read_yace

    _with_pair(ctx)
    p = ctx.path("m.yace")
    lines = [ln for ln in open(p).read().splitlines() if not ln.startswith("# torchace pair table:")]
    with open(p, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    os.remove(ctx.path("m_pairpot.table"))
    os.remove(ctx.path("m.lammps"))
    read_yace(p)
