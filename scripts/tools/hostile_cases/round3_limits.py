"""Class 13 (issue 26, class 7): resource limits that match the machine.

Neighbour-pair counts of any cell shape refused against the memory this child may use (the sweep's address-space
limit), nonlinear model sizes refused before allocation, close contacts in training data warned.
"""
from __future__ import annotations

import warnings

import numpy as np

from hostile_inputs import case


def _flat_unwrapped(n=64, hz=1e-3):
    from ase import Atoms

    rng = np.random.default_rng(0)
    return Atoms(f"Si{n}", positions=rng.uniform(0, 1, (n, 3)) * [10, 10, 5], cell=[10, 10, hz], pbc=True)


@case(13, "evaluate: 64 atoms in a fully periodic 10 × 10 × 0.001 Å cell (3e7 pairs, under the old 3e8 limit)",
      names=("structure 0", "neighbour pairs", "available"))
def _(ctx):
    import torchace

    torchace.evaluate(ctx.model(), _flat_unwrapped())


@case(13, "evaluate: 200 atoms bunched in-plane in a periodic 100 × 100 × 0.001 Å cell (volume estimate 3e6, "
      "true 4e8 pairs)", names=("structure 0", "200 atoms", "neighbour pairs"))
def _(ctx):
    import torchace
    from ase import Atoms

    rng = np.random.default_rng(1)
    a = Atoms("Si200", positions=rng.uniform(0, 0.5, (200, 3)) * [1, 1, 0], cell=[100, 100, 1e-3], pbc=True)
    torchace.evaluate(ctx.model(), a)


@case(13, "evaluate: nearly singular cell a3 = a1 + a2 + 0.001 Å ẑ (no short vector), 64 atoms",
      names=("structure 0", "neighbour pairs"))
def _(ctx):
    import torchace
    from ase import Atoms

    rng = np.random.default_rng(2)
    torchace.evaluate(ctx.model(), Atoms("Si64", positions=rng.uniform(0, 5, (64, 3)),
                                         cell=[[5, 0, 0], [0, 5, 0], [5, 5, 1e-3]], pbc=True))


@case(13, "torch cell list: 64 atoms in a fully periodic 10 × 10 × 0.001 Å cell", names=("neighbour pairs",))
def _(ctx):
    import torch
    from torchace.structures.neighbours.cell_list import cell_list_neighbours

    a = _flat_unwrapped()
    cell_list_neighbours(torch.tensor(a.positions), torch.tensor(a.cell.array), a.pbc, 5.5)


@case(13, "calculator: rcut 6 Å model on 8 atoms in a 1 Å periodic cube (5.8e4 pairs: fits, evaluated)",
      expect="ok")
def _(ctx):
    from ase import Atoms
    from torchace.calculators import TorchACECalculator

    rng = np.random.default_rng(3)
    a = Atoms("Si8", positions=rng.uniform(0, 1, (8, 3)), cell=[1, 1, 1], pbc=True)
    a.calc = TorchACECalculator(ctx.model(rcut=6.0), min_distance=0.0)
    return bool(np.isfinite(a.get_potential_energy()))


@case(13, "ace_model(['Si'], 2, 6, densities=10**6, embedding='mlp')", names=("densities", "parameters"))
def _(ctx):
    import torchace

    torchace.ace_model(["Si"], 2, 6, densities=10**6, embedding="mlp")


@case(13, "ace_model(['Si'], 2, 6, densities=2, embedding='mlp', mlp_hidden=10**7)", names=("MLP width",))
def _(ctx):
    import torchace

    torchace.ace_model(["Si"], 2, 6, densities=2, embedding="mlp", mlp_hidden=10**7)


@case(13, "fit: a training frame with two Si atoms 0.4 Å apart (warned naming file:frame:atoms, then fitted)",
      expect="ok")
def _(ctx):
    from torchace.fit.contacts import CloseContactWarning

    frames = ctx.frames(3)
    frames[1].positions[5] = frames[1].positions[2] + [0.4, 0, 0]
    path = ctx.xyz("train.xyz", frames)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        ctx.fit(path)
    msgs = [str(w.message) for w in rec if issubclass(w.category, CloseContactWarning)]
    return len(msgs) == 1 and "train.xyz:frame 1: atoms 2 and 5" in msgs[0] or f"warnings: {msgs}"


@case(13, "fit config: data.close_contact_error true and a frame with Si atoms 0.4 Å apart", cli=True,
      names=("train.xyz", "frame 1", "atoms 2 and 5"))
def _(ctx):
    frames = ctx.frames(3)
    frames[1].positions[5] = frames[1].positions[2] + [0.4, 0, 0]
    ctx.xyz("train.xyz", frames)
    ctx.cli("fit", ctx.config(data={"train": "train.xyz", "close_contact_error": True}))
