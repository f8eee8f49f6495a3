"""The ``triton`` backend (torchace.model.backends.triton_backend) against the autograd reference, on every
available device: on CUDA the compiled kernels, without a GPU the same kernels under Triton's interpreter
(conftest sets TRITON_INTERPRET=1 before Triton is imported).  float64 to 1e-12 relative, float32 to the
per-dtype tolerance of torchace.testing; both product-DAG variants; chunked calls equal one-chunk calls."""
import numpy as np
import pytest
import torch
from ase import Atoms

import torchace
from torchace import keys as K
from torchace.model.backends import available, select
from torchace.model.backends import triton_backend as tb
from torchace.model.evaluate import model_inputs
from torchace.structures.batch import collate
from torchace.testing import (BACKEND_RTOL, backend_agreement, random_cluster, randomize_coefficients,
                              rattled_bulk, results_close)

pytest.importorskip("triton", reason="Triton is not installed (pip install -e '.[gpu-dev]')")

FAMILIES = {
    "Si o3 d10": lambda: torchace.ace_model(["Si"], 3, 10),
    "SiGe E0 zbl": lambda: torchace.ace_model(["Si", "Ge"], 3, 6, zbl=True, E0={"Si": -158.5, "Ge": -100.25}),
    "Si pure": lambda: torchace.ace_model(["Si"], 3, 8, pure=True),
    "Si pure2b o4": lambda: torchace.ace_model(["Si"], 4, 8, pure2b=True),
    "Si no pair": lambda: torchace.ace_model(["Si"], 3, 8, pair=False),
}


def _runnable(device):
    why = tb.unavailable(torch.device(device))
    if why is not None:
        pytest.skip(f"triton backend not runnable on {device}: {why}")


def _model(name, device, dtype=torch.float64, prior=True):
    m = FAMILIES[name]()
    randomize_coefficients(m, 0.3, seed=len(name))
    if prior:  # a rescaled basis (regularity prior) reaches the kernels through the one-particle weights
        torchace.priors.algebraic(sigma_n=3.0).apply(m)
    return m.to(device=device, dtype=dtype)


def _structures(elements):
    lone = Atoms(elements[:1], positions=[[0.0, 0.0, 0.0]])  # an atom without neighbours
    return [rattled_bulk(elements, seed=2), rattled_bulk(elements, reps=(2, 1, 1), seed=3),
            random_cluster(elements, 7, 3.0, seed=4), lone]


def _inputs(m, skin=0.5):
    b = collate(_structures(m.elements), m.config.numbers, m.rcut + skin, dtype=m.coefficients.dtype,
                device=m.coefficients.device)
    return model_inputs(m, b)


@pytest.mark.parametrize("dag", tb.DAG_VARIANTS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", list(FAMILIES))
def test_triton_matches_reference(name, dtype, dag, device):
    _runnable(device)
    m = _model(name, device, dtype)
    inp = _inputs(m)
    ref = {k: v.detach() for k, v in m.reference_forward(*inp).items()}
    got = tb.TritonEvaluator(m, dag=dag)(*inp)
    for k in (K.ENERGY, K.NODE_ENERGY, K.FORCES, K.VIRIAL):
        assert got[k].shape == ref[k].shape and got[k].dtype == dtype and got[k].device == ref[k].device
    results_close(got, ref, BACKEND_RTOL[dtype], (K.ENERGY, K.NODE_ENERGY, K.FORCES, K.VIRIAL))


@pytest.mark.slow  # 8 s
def test_chunked_call_equals_one_chunk(device):
    _runnable(device)
    m = _model("SiGe E0 zbl", device)
    inp = _inputs(m)
    one = tb.TritonEvaluator(m)(*inp)
    # a budget of a few chunks (each chunk is a Python-level step: keeps the interpreter quick)
    chunked = tb.TritonEvaluator(m, memory_budget=60_000)(*inp)
    results_close(chunked, one, 1e-13, (K.ENERGY, K.NODE_ENERGY, K.FORCES, K.VIRIAL))


def test_energy_only_and_refit_are_seen(device):
    _runnable(device)
    m = _model("Si o3 d10", device, prior=False)
    inp = _inputs(m)
    ev = tb.TritonEvaluator(m)
    ev.profile = True  # the per-stage timings the GPU benchmark reports
    e_only = ev(*inp, False, False)
    assert {"A pooling", "product DAG", "edge vectors + sort"} <= set(ev.timings)
    assert K.FORCES not in e_only and K.VIRIAL not in e_only
    ref = {k: v.detach() for k, v in m.reference_forward(*inp).items()}
    results_close(e_only, ref, 1e-12, (K.ENERGY,))
    with torch.no_grad():  # a refit writes the coefficients in place: the evaluator must not keep stale ones
        m.coefficients.mul_(-0.5)
    results_close(ev(*inp), {k: v.detach() for k, v in m.reference_forward(*inp).items()}, 1e-12)


def test_rows_and_registry(device):
    _runnable(device)
    m = _model("Si o3 d10", device)
    assert available(m, device)["triton"] is None
    assert select(m, device, "triton").name == "triton"
    errs = backend_agreement(m, _structures(m.elements)[:3], "triton", task="rows", skin=0.4)
    assert all(v <= 1e-12 for v in errs.values()), errs
    with pytest.raises(ValueError, match="training"):
        select(m.train(), device, "triton")


def test_calculator_and_fit_on_triton(device):
    _runnable(device)
    from torchace.calculators import TorchACECalculator

    m = _model("SiGe E0 zbl", device, prior=False)
    at = rattled_bulk(m.elements, reps=(2, 1, 1), seed=7)
    calc = TorchACECalculator(m, device=device, backend="triton")
    assert calc.backend == "triton"
    at.calc = calc
    e, f, s = at.get_potential_energy(), at.get_forces(), at.get_stress()
    ref = TorchACECalculator(m, device=device, backend="reference")
    assert abs(e - ref.get_potential_energy(at)) <= 1e-12 * abs(e)
    np.testing.assert_allclose(f, ref.get_forces(at), rtol=0, atol=1e-12 * np.abs(f).max())
    np.testing.assert_allclose(s, ref.get_stress(at), rtol=0, atol=1e-12 * np.abs(s).max())
    assert np.isclose(calc.get_potential_energies(at).sum(), e, rtol=1e-13)


def test_reasons_name_what_is_missing(monkeypatch):
    monkeypatch.setenv(tb.INTERPRET_ENV, "0")
    assert "TRITON_INTERPRET" in tb.unavailable(torch.device("cpu"))
    assert "CUDA" in tb.unavailable(torch.device("meta"))
    with pytest.raises(ValueError, match="dag must be one of"):
        tb.TritonEvaluator(torchace.ace_model(["Si"], 2, 4), dag="tree")


@pytest.mark.slow  # a child compiling every kernel: 12 s
def test_kernels_compile_for_nvidia_targets():
    """The interpreter is more permissive than Triton's compiler: compile every kernel for sm_90 and sm_80
    (front end, LLVM, the bundled ptxas; no GPU needed), fp64 and fp32."""
    import os
    import sys
    from pathlib import Path

    from torchace.testing import run

    env = {k: v for k, v in os.environ.items() if k != tb.INTERPRET_ENV}
    script = Path(__file__).resolve().parents[2] / "scripts" / "tools" / "triton_compile_check.py"
    r = run([sys.executable, str(script)], env=env, timeout=600)
    if r.returncode != 0 and "ptxas" in (r.stdout + r.stderr) and "not found" in (r.stdout + r.stderr):
        pytest.skip("Triton's ptxas is not available here")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert r.stdout.count(": ok") == 2 * 2 * 6


@pytest.mark.parametrize("budget", [None, pytest.param(60_000, marks=pytest.mark.slow)])  # chunked: 12 s
def test_committee_energies_from_the_same_pass(budget, device):
    _runnable(device)
    from torchace.model.backends.fused import COMMITTEE_ENERGY

    m = _model("SiGe E0 zbl", device)
    g = torch.Generator().manual_seed(5)
    comm = m.coefficients.detach().cpu() + 0.05 * torch.randn(4, m.basis_size, generator=g, dtype=torch.float64)
    m.committee = comm.to(device=device, dtype=m.coefficients.dtype)
    inp = _inputs(m)
    out = tb.TritonEvaluator(m, committee=True, memory_budget=budget)(*inp)
    mean = {k: v.detach() for k, v in m.reference_forward(*inp).items()}
    results_close(out, mean, 1e-12)  # forces and virials stay the mean model's
    c0 = m.coefficients.detach().clone()
    want = []
    for c in comm:  # one full evaluation per member: the definition
        with torch.no_grad():
            m.coefficients.copy_(c)
        want.append(m.reference_forward(*inp, False, False)[K.ENERGY].detach())
    with torch.no_grad():
        m.coefficients.copy_(c0)
    got = out[COMMITTEE_ENERGY]
    assert got.shape == (4, inp[6])
    assert float((got - torch.stack(want)).abs().max() / torch.stack(want).abs().max()) <= 1e-12
