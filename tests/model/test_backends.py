"""The backend layer (torchace.backends): every backend that can run agrees with ``reference`` (float64
1e-12, float32 2e-4 relative) on the model families it claims; ``auto`` picks the fastest that supports the
model and device; named backends that cannot run say why."""
import pytest
import torch

import torchace
from torchace import keys as K
from torchace.model.backends import BACKENDS, available, select
from torchace.testing import (BACKEND_RTOL, available_devices, backend_agreement, random_cluster,
                              randomize_coefficients, rattled_bulk)

MODELS = {
    "Si o3": lambda: torchace.ace_model(["Si"], 3, 10),
    "SiGe o3": lambda: torchace.ace_model(["Si", "Ge"], 3, 8, rcut=5.0),
    "SiGe zbl": lambda: torchace.ace_model(["Si", "Ge"], 2, 8, zbl=True),
    "Si pure2b": lambda: torchace.ace_model(["Si"], 3, 8, pure2b=True),
    "Si no pair": lambda: torchace.ace_model(["Si"], 4, 8, pair=False),
}


def _structures(elements):
    return [rattled_bulk(elements, seed=2), rattled_bulk(elements, reps=(2, 1, 1), seed=3),
            random_cluster(elements, 7, 3.0, seed=4)]


def _model(name, device, dtype):
    m = MODELS[name]()
    randomize_coefficients(m, 0.3, seed=len(name))
    # a rescaled basis (prior) must reach every backend the same way
    torchace.priors.algebraic(sigma_n=3.0).apply(m)
    return m.to(device=device, dtype=dtype)


@pytest.mark.parametrize("device", available_devices())
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("task", ["evaluate", "rows"])
@pytest.mark.parametrize("name", list(MODELS))
def test_every_backend_agrees_with_reference(name, task, dtype, device):
    m = _model(name, device, dtype)
    runnable = [b for b, why in available(m, device, task).items() if why is None and b != "reference"]
    assert "analytic" in runnable  # the torch backend runs everywhere
    for b in runnable:
        errs = backend_agreement(m, _structures(m.elements), b, task, skin=0.6)
        assert all(v <= BACKEND_RTOL[dtype] for v in errs.values()), (b, errs)


def test_available_lists_every_backend_with_a_reason():
    a = available()
    assert set(a) == set(BACKENDS) and a["reference"] is None and a["analytic"] is None
    # the triton backend runs on CUDA, and on CPU only under Triton's interpreter (set by conftest without a GPU)
    assert a["triton"] is None or isinstance(a["triton"], str)
    assert a["fused"] is None or isinstance(a["fused"], str)
    m = torchace.ace_model(["Si"], 2, 6).train()
    # training mode: the hand adjoint records its graph (differentiable in the coefficients); the kernels cannot
    assert available(m)["analytic"] is None and "training" in available(m)["fused"]
    with pytest.raises(ValueError, match="task"):
        available(task="energy")


def test_auto_picks_the_fastest_supported_backend():
    m = torchace.ace_model(["Si"], 2, 6)
    fused_ok = available(m)["fused"] is None
    assert select(m).name == ("fused" if fused_ok else "analytic")
    assert select(m, task="rows").name == ("fused" if fused_ok else "analytic")
    # forces must be differentiable in training mode: the hand adjoint with create_graph
    assert select(m.train()).name == "analytic"
    m.eval()
    with pytest.raises(ValueError, match="unknown backend"):
        select(m, backend="numba")
    if torch.cuda.is_available():
        want = "triton" if available(m, "cuda")["triton"] is None else "analytic"
        assert select(m.cuda()).name == want
    else:
        with pytest.raises(ValueError, match="fused.*CPU"):
            select(m, device="cuda", backend="fused")


def test_evaluate_rows_fit_and_calculator_take_a_backend():
    m = torchace.ace_model(["Si"], 2, 8)
    randomize_coefficients(m, seed=3)
    at = rattled_bulk(["Si"], seed=1)
    ref = torchace.evaluate(m, at, backend="reference")
    for b in ("auto", "analytic"):
        out = torchace.evaluate(m, at, backend=b)
        assert torch.allclose(out[K.FORCES], ref[K.FORCES], rtol=0, atol=1e-12 * float(ref[K.FORCES].abs().max()))
        rows = torchace.design_matrix_rows(m, at, backend=b)
        assert torch.allclose(rows[K.ENERGY] @ m.coefficients.detach() + m.E0.sum() * len(at), ref[K.ENERGY],
                              rtol=1e-12)
    from torchace.calculators import TorchACECalculator

    calc = TorchACECalculator(m)
    assert calc.backend == select(m).name
    assert TorchACECalculator(m, backend="reference").backend == "reference"
    with pytest.raises(ValueError, match="unknown backend"):
        TorchACECalculator(m, backend="fast")
