"""The nonlinear ACE model on the fused C++ kernel (torchace.model.backends.fused_nonlinear) against its
analytic and autograd paths: FS (learned exponent weights), MLP and multi-element models with learned radials
moved away from the identity, a ZBL baseline, skin edges, energies only; and the ``auto`` backend's choice.

Skipped where the kernel cannot be built (no C++ compiler or ninja); CI builds it."""
import copy

import pytest
import torch

import torchace
from torchace import keys as K
from torchace.model.backends import EVALUATE, fused, select
from torchace.model.backends.fused_nonlinear import DENSITIES, nonlinear_forward
from torchace.model.evaluate import model_inputs
from torchace.model import from_linear, nonlinear_ace_model
from torchace.structures.batch import collate
from torchace.testing import random_cluster, randomize_coefficients, rattled_bulk, results_close

pytestmark = pytest.mark.skipif(not fused.available(), reason="fused C++ kernel not buildable here")
OUT = (K.ENERGY, K.NODE_ENERGY, K.FORCES, K.VIRIAL)


def _perturb(model, seed, scale=0.1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(scale * torch.randn(p.shape, generator=g, dtype=torch.float64).to(p))
    return model.eval()


def _zoo():
    lin = torchace.ace_model(["Si"], 3, 8, E0={"Si": -1.5})
    randomize_coefficients(lin, 0.1, seed=1)
    with torch.no_grad():
        lin.embedding.nl_scale.uniform_(0.5, 2.0)  # a prior's rescaling: inside the learned radial sum
    return {
        "fs": _perturb(from_linear(lin, densities=2, embedding="fs", fs_parameters=[1.0, 1.0, 0.7, 0.5],
                                   learnable_fs=True, learnable_radials=True), 0),
        "mlp": _perturb(from_linear(lin, densities=3, embedding="mlp", mlp_hidden=4, learnable_radials=True), 1),
        "sige_zbl": _perturb(nonlinear_ace_model(["Si", "Ge"], 2, 6, densities=2, embedding="fs", zbl=True,
                                                 fs_parameters=[1.0, 1.0, 1.0, 2.0], learnable_radials=True), 2),
        "fixed": _perturb(from_linear(lin, densities=2, embedding="fs", learnable_radials=False), 3),
    }


def _structures(elements):
    s = [rattled_bulk(elements, reps=(2, 1, 1), rattle=0.15, seed=3), random_cluster(elements, 7, 3.0, seed=4)]
    s[0].cell[0, 1] = 0.6  # skewed cell
    return s


@pytest.mark.parametrize("name", ["fs", "mlp", "sige_zbl", "fixed"])
def test_fused_nonlinear_matches_analytic_and_reference(name):
    m = _zoo()[name]
    b = collate(_structures(m.elements), m.config.numbers, m.rcut, dtype=torch.float64)
    inp = model_inputs(m, b)
    ana = m.analytic_forward(*inp, True, True)
    ref = {k: v.detach() for k, v in m.reference_forward(*inp, True, True).items()}
    got = nonlinear_forward(m, *inp, True, True, with_densities=True)
    results_close(got, ana, 1e-12, keys=OUT)
    results_close(got, ref, 1e-12, keys=OUT)
    assert got[DENSITIES].shape == (b[K.SPECIES].shape[0], m.densities)
    e_only = nonlinear_forward(m, *inp, False, False)
    assert K.FORCES not in e_only and K.VIRIAL not in e_only and DENSITIES not in e_only
    results_close(e_only, ana, 1e-12, keys=(K.ENERGY, K.NODE_ENERGY))
    # skin edges (a longer neighbour list) contribute nothing
    skin = collate(_structures(m.elements), m.config.numbers, m.rcut + 0.7, dtype=torch.float64)
    results_close(nonlinear_forward(m, *model_inputs(m, skin), True, True), ana, 1e-12, keys=OUT)


def test_auto_backend_evaluates_nonlinear_models_on_the_fused_kernel():
    zoo = _zoo()
    m = zoo["fs"]
    assert select(m, torch.device("cpu"), "auto", EVALUATE).name == "fused"
    structs = _structures(m.elements)
    a = torchace.evaluate(m, structs)
    r = torchace.evaluate(m, structs, backend="analytic")
    results_close(a, r, 1e-12, keys=(K.ENERGY, K.FORCES, K.VIRIAL))
    # constants are read on each call: a parameter change is seen
    m2 = copy.deepcopy(m)
    with torch.no_grad():
        m2.radials.weights.mul_(1.1)
    assert float((torchace.evaluate(m2, structs)[K.ENERGY] - a[K.ENERGY]).abs().max()) > 1e-6
    m.train()
    try:  # training mode: differentiable forces are needed, the fused kernel is not chosen
        assert select(m, torch.device("cpu"), "auto", EVALUATE).name != "fused"
    finally:
        m.eval()


def test_float32():
    m = copy.deepcopy(_zoo()["fs"]).to(torch.float32)
    b = collate(_structures(m.elements), m.config.numbers, m.rcut, dtype=torch.float32)
    inp = model_inputs(m, b)
    results_close(nonlinear_forward(m, *inp, True, True), m.analytic_forward(*inp, True, True), 1e-4, keys=OUT)
