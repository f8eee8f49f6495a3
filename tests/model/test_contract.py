"""The model contract (``torchace.model.contract``) and the one derivative driver (``torchace.model.derivatives``).

Every family — linear, linear + pair + ZBL, nonlinear FS, nonlinear MLP with learnable radials, and an ML-PACE
model read from a .yace that torchace wrote — is an ``EnergyModel`` with declared ``Capabilities``; the driver's
autograd path (strain) and its edge path (the hand adjoint ``site_terms``, or autograd on the edge vectors for
models without one) agree to 1e-12 in float64; ``forward`` and ``evaluate(..., backend=...)`` follow the rule
of the driver's docstring.
"""
import dataclasses
import numpy as np
import pytest
import torch

import torchace
from torchace import keys as K
from torchace.io import read_yace, write_yace
from torchace.model.backends import available, select
from torchace.model.contract import NO_CAPABILITIES, Capabilities, EnergyModel, capabilities
from torchace.model.derivatives import use_hand_adjoint
from torchace.model.evaluate import evaluate, model_inputs
from torchace.model import nonlinear_ace_model
from torchace.structures.batch import collate
from torchace.testing import randomize_coefficients, rattled_bulk

FAMILIES = ("linear", "linear_pair_zbl", "fs", "mlp_learned_radials", "pace")
OUT = (K.ENERGY, K.NODE_ENERGY, K.FORCES, K.VIRIAL)


def _perturb(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


@pytest.fixture(scope="module")
def families(tmp_path_factory):
    lin = torchace.ace_model(["Si", "Ge"], 2, 6)
    randomize_coefficients(lin, 0.1, seed=1)
    zbl = torchace.ace_model(["Si", "Ge"], 2, 6, pair=True, zbl=True)
    randomize_coefficients(zbl, 0.1, seed=2)
    fs = _perturb(nonlinear_ace_model(["Si", "Ge"], 2, 6, densities=2, embedding="fs", learnable_radials=False), 3)
    mlp = _perturb(nonlinear_ace_model(["Si", "Ge"], 2, 5, densities=2, embedding="mlp", learnable_radials=True,
                                       mlp_hidden=4), 4)
    path = tmp_path_factory.mktemp("contract") / "m.yace"
    write_yace(lin, str(path))
    return {"linear": lin, "linear_pair_zbl": zbl, "fs": fs, "mlp_learned_radials": mlp, "pace": read_yace(str(path))}


def _inputs(model, skin=0.4):
    at = rattled_bulk(["Si", "Ge"], reps=(1, 1, 1), rattle=0.15, seed=7)
    b = collate([at], model.config.numbers, model.rcut + skin, dtype=torch.float64)  # skin edges included
    return model_inputs(model, b)


def _agree(a, b, tol=1e-12):
    for k in OUT:
        x, y = a[k].detach(), b[k].detach()
        assert float((x - y).abs().max()) <= tol * max(1.0, float(x.abs().max())), k


EXPECTED = {  # readout, rows, nonlinear, hand_adjoint, adjoint_graph, scriptable, learnable_radials
    "linear": ("linear", True, False, True, True, True, False),
    "linear_pair_zbl": ("linear", True, False, True, True, True, False),
    "fs": ("fs", False, True, True, True, True, False),
    "mlp_learned_radials": ("mlp", False, True, True, True, True, True),
    "pace": ("pace", False, False, False, False, False, False),
}


@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_implements_the_contract(families, name):
    m = families[name]
    assert isinstance(m, EnergyModel) and isinstance(m.capabilities, Capabilities)
    c = capabilities(m)
    assert (c.readout, c.rows, c.nonlinear, c.hand_adjoint, c.adjoint_graph, c.scriptable,
            c.learnable_radials) == EXPECTED[name]
    assert m.elements == ["Si", "Ge"] and m.rcut > 0
    assert m.device == torch.device("cpu") and m.dtype == torch.float64
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.rows = not c.rows
    # the backends a model declares are the ones the registry lets it run on
    runnable = {b for b, why in available(m).items() if why is None}
    assert runnable <= set(c.backends)


def test_objects_outside_the_contract_declare_nothing():
    assert capabilities(object()) is NO_CAPABILITIES and not NO_CAPABILITIES.rows
    with pytest.raises(ValueError, match="readout"):
        Capabilities(readout="spline")
    with pytest.raises(ValueError, match="adjoint_graph"):
        Capabilities(readout="linear", adjoint_graph=True)


@pytest.mark.parametrize("name", FAMILIES)
def test_autograd_and_edge_paths_agree(families, name):
    """The strain (autograd) path and the edge-gradient path agree to 1e-12 in float64, also with the hand
    adjoint's centre-atom chunks."""
    m = families[name].eval()
    inp = _inputs(m)
    ref = m.reference_forward(*inp)
    _agree(ref, m.analytic_forward(*inp))
    chunk = m.edge_chunk
    try:
        m.edge_chunk = 29
        _agree(ref, m.analytic_forward(*inp))
    finally:
        m.edge_chunk = chunk
    _agree(ref, m(*inp))


def test_the_rule():
    # (analytic, adjoint_graph, training, inputs_require_grad) -> hand adjoint?
    assert use_hand_adjoint(True, False, False, False)
    assert not use_hand_adjoint(True, False, True, False)    # linear in training: autograd (create_graph)
    assert use_hand_adjoint(True, True, True, False)         # differentiable adjoint: kept in training
    assert not use_hand_adjoint(True, True, False, True)     # a graph through the inputs: autograd
    assert not use_hand_adjoint(False, True, False, False)   # no hand adjoint / switched off


@pytest.mark.parametrize("name", FAMILIES)
def test_forward_and_backends_follow_the_rule(families, name):
    m = families[name]
    caps = m.capabilities
    calls = []
    for path in ("analytic_forward", "reference_forward"):  # instance attributes shadowing the driver's methods
        orig = getattr(m, path)
        m.__dict__[path] = lambda *a, _p=path, _o=orig, **k: calls.append(_p) or _o(*a, **k)
    inp = _inputs(m)
    try:
        for training in (False, True):
            m.train(training)
            calls.clear()
            out = m(*inp)
            hand = caps.hand_adjoint and (caps.adjoint_graph or not training)
            assert calls == ["analytic_forward" if hand else "reference_forward"], (training, calls)
            # in training mode the forces are differentiable in the parameters, on either path
            params = [p for p in m.parameters() if p.requires_grad]
            if training and params:
                g = torch.autograd.grad(out[K.FORCES].square().sum(), params, allow_unused=True)
                assert any(x is not None and bool(x.abs().sum() > 0) for x in g)
            # evaluate's "analytic" backend is allowed exactly where the rule would take the hand adjoint
            why = available(m)["analytic"]
            assert (why is None) == (hand and "analytic" in caps.backends)
            # positions that require grad: autograd, whatever the mode
            calls.clear()
            pos = inp[0].clone().requires_grad_(True)
            m(pos, *inp[1:])
            assert calls == ["reference_forward"]
    finally:
        m.eval()
        for path in ("analytic_forward", "reference_forward"):
            del m.__dict__[path]


@pytest.mark.parametrize("name", FAMILIES)
def test_evaluate_backends_agree(families, name):
    m = families[name].eval()
    at = rattled_bulk(["Si", "Ge"], reps=(1, 1, 1), rattle=0.15, seed=8)
    ref = evaluate(m, at, backend=select(m).name)
    for b, why in available(m).items():
        if why is None:
            got = evaluate(m, at, backend=b)
            for k in (K.ENERGY, K.FORCES, K.VIRIAL):
                np.testing.assert_allclose(got[k].numpy(), ref[k].numpy(), rtol=0,
                                           atol=1e-11 * max(1.0, float(ref[k].abs().max())))


def test_linear_model_stays_scriptable(families):
    m = families["linear_pair_zbl"].eval()
    s = torch.jit.script(m)
    inp = _inputs(m)
    _agree(m(*inp), s(*inp))


@pytest.mark.parametrize("name", [f for f in FAMILIES if EXPECTED[f][5]])
def test_models_declared_scriptable_script(families, name):
    """``Capabilities.scriptable`` is what the export relies on: every family that declares it compiles with
    ``torch.jit.script`` of its own code (``io.torchscript.script_model``) and gives the same numbers."""
    from torchace.io.torchscript import script_model

    m = families[name].eval()
    inp = _inputs(m)
    _agree(m(*inp), script_model(m)(*inp))
