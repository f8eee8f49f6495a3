"""Weighted design matrix: row weights, batch-size independence, dense vs memory-bounded systems."""
import numpy as np
import pytest
import torch

import torchace
from torchace import keys as K
from torchace.fit.assembly import assemble, assemble_reduced
from torchace.testing import labelled_dataset


def _dataset(n=6):
    return labelled_dataset(n)


@pytest.fixture(scope="module")
def model():
    return torchace.ace_model(["Si", "Ge"], 2, 6, E0={"Si": -2.0, "Ge": -3.0})


def test_rows_weights_and_targets(model):
    ds = _dataset(3)
    w = {"default": {"E": 30, "F": 1, "V": 1}, "liq": {"E": 10, "F": 0.5, "V": 0.25}}
    sys_ = assemble(model, ds, w)
    r = 0
    for s in ds:
        rows = torchace.design_matrix_rows(model, s.atoms)
        wE, wF, wV = (10, 0.5, 0.25) if s.config_type == "liq" else (30, 1, 1)
        n = s.n_atoms
        e0 = sum(-2.0 if z == 14 else -3.0 for z in s.atoms.numbers)
        assert torch.allclose(sys_.A[r], rows[K.ENERGY][0] * wE / np.sqrt(n), rtol=1e-13, atol=0)
        assert np.isclose(float(sys_.y[r]), (s.energy - e0) * wE / np.sqrt(n))
        r += 1
        # atol scaled by the block's size: the default (fused) backend sums a batch's forces in another order
        # than a single structure's, so entries that cancel to ~0 differ by rounding
        scale = float(rows[K.FORCES].abs().max())
        assert torch.allclose(sys_.A[r:r + 3 * n], rows[K.FORCES] * wF, rtol=1e-13, atol=1e-13 * scale)
        r += 3 * n
        if s.virial is not None:
            assert torch.allclose(sys_.A[r:r + 6], rows[K.VIRIAL][0] * wV / np.sqrt(n), rtol=1e-13,
                                  atol=1e-13 * float(rows[K.VIRIAL].abs().max()))
            r += 6
    assert r == sys_.A.shape[0] == sys_.n_obs


def test_batch_size_independence(model):
    ds = _dataset(6)
    a = assemble(model, ds, batch_atoms=1)
    b = assemble(model, ds, batch_atoms=10_000)
    assert torch.allclose(a.A, b.A, rtol=1e-12, atol=1e-14) and torch.allclose(a.y, b.y, rtol=1e-12, atol=0)


@pytest.mark.parametrize("method", ["qr", "normal"])
def test_reduced_system_equivalent(model, method):
    ds = _dataset(6)
    dense = assemble(model, ds)
    red = assemble_reduced(model, ds, method=method, batch_atoms=20)
    A, y = dense.A, dense.y
    assert red.n_obs == A.shape[0]
    # same normal equations and same residual for any c
    assert torch.allclose(red.A.T @ red.A, A.T @ A, rtol=1e-9, atol=1e-9 * float((A.T @ A).abs().max()))
    assert torch.allclose(red.A.T @ red.y, A.T @ y, rtol=1e-9, atol=1e-9 * float((A.T @ y).abs().max()))
    c = torch.randn(A.shape[1], dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    r_dense = float(((A @ c - y) ** 2).sum())
    r_red = float(((red.A @ c - red.y) ** 2).sum()) + red.rss_offset
    assert abs(r_dense - r_red) < 1e-8 * r_dense
    if method == "normal":
        return  # normal equations square the condition number (~1e18 here): only QR must give the same solution
    # and the same ridge solution
    lam = 1e-2
    k = A.shape[1]
    ridge = lambda M, v: torch.linalg.lstsq(torch.cat([M, lam * torch.eye(k, dtype=M.dtype)]),  # noqa: E731
                                            torch.cat([v, torch.zeros(k, dtype=v.dtype)]).unsqueeze(1)).solution[:, 0]
    c1, c2 = ridge(A, y), ridge(red.A, red.y)
    assert float((c1 - c2).norm() / c1.norm()) < 1e-8


def test_checkpoint_resume(model):
    ds = _dataset(6)
    saved = {}

    def grab(nb, state):
        if nb == 2:
            saved.update({k: v.clone() for k, v in state.items()})

    full = assemble_reduced(model, ds, batch_atoms=20, on_batch=grab)
    resumed = assemble_reduced(model, ds, batch_atoms=20, state=saved)
    assert torch.equal(full.A, resumed.A) and torch.equal(full.y, resumed.y) and full.n_obs == resumed.n_obs


def test_structures_larger_than_memory_are_refused_up_front(model, monkeypatch):
    """A structure whose rows cannot fit is an error naming its file:frame (before any work); a dense
    system that cannot fit points to the streaming assembly; the streaming path accepts it."""
    import torchace.fit.assembly as asm
    from torchace.fit.data import DataError

    ds = _dataset()
    structs = asm.fitting_structures(ds)
    k = model.basis_size
    biggest = max(structs, key=lambda s: s.n_atoms)
    one = (3 * biggest.n_atoms + 7) * k * 8 * 2
    total = sum(3 * s.n_atoms + 7 for s in structs) * k * 8 * 2
    monkeypatch.setattr(asm, "available_bytes", lambda device=None: one - 1)
    with pytest.raises(DataError, match=biggest.source.replace("[", r"\[")):
        assemble(model, ds)
    with pytest.raises(DataError, match="design-matrix rows"):
        assemble_reduced(model, ds)
    monkeypatch.setattr(asm, "available_bytes", lambda device=None: total - 1)
    with pytest.raises(MemoryError, match="streaming"):
        assemble(model, ds)
    assert assemble_reduced(model, ds).n_obs > 0
    monkeypatch.setattr(asm, "available_bytes", lambda device=None: None)  # unknown: nothing is checked
    assert assemble(model, ds).A.shape[1] == k
