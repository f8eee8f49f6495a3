"""Purification (pure2b, pure) against the properties that define it (Ho, Gutleb & Ortner 2024):
a canonical order-N function is exactly zero on fewer than N neighbours; pure2b functions of order >= 2
are exactly zero on one neighbour; canonical and self-interacting bases span the same space when the
total degree drops by at least the envelope degree per order (the paper's Table 2 "Yes" rows) and not
otherwise; the canonical Gram matrix is better conditioned (Table 1 trend); and the usual model
machinery (rows, forces, invariance, model files, priors, TorchScript) works on the purified coupling."""
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import torchace
from torchace import keys as K
from torchace.config import ACEConfig
from torchace.io.model_file import model_from_dict, model_to_dict
from torchace.testing import (fd_forces, max_rel, random_cluster, random_envs, random_rotation,
                              randomize_coefficients, rattled_bulk, run, site_basis_envs)

# round-off level of a basis function that is exactly zero in exact arithmetic (values are O(0.1–1))
ZERO = 1e-13


def _orders(model):
    return np.array([len(t) for t in model.nl_of_b])


def _envs(model, n_envs, n_neigh, seed, rmin=0.8):
    rng = np.random.default_rng(seed)
    return random_envs(rng, model.config.numbers, n_envs, n_neigh, rmin, 0.99 * model.rcut)


@pytest.fixture(scope="module")
def pure_sige():
    return torchace.ace_model(["Si", "Ge"], 3, 7, pure=True)


@pytest.fixture(scope="module")
def pure2b_sige():
    return torchace.ace_model(["Si", "Ge"], 3, 7, pure2b=True)


@pytest.mark.parametrize("elements,order,deg", [(["Si"], 4, 9), (["Si", "Ge"], 3, 7)])
def test_canonical_zero_below_order(elements, order, deg):
    """𝒜_k sums over distinct neighbours: an order-N function vanishes on < N neighbours, to round-off."""
    pure = torchace.ace_model(elements, order, deg, pure=True)
    selfi = torchace.ace_model(elements, order, deg)
    nu = _orders(pure)
    for J in range(1, order + 1):
        envs = _envs(pure, 6, J, seed=J)
        B, B0 = site_basis_envs(pure, envs), site_basis_envs(selfi, envs)
        for N in range(1, order + 1):
            b, b0 = B[:, nu == N].abs().max().item(), B0[:, nu == N].abs().max().item()
            assert b0 > 1e-3  # the self-interacting functions do not vanish: the test can fail
            if N > J:
                assert b < ZERO, (J, N, b)
            else:
                assert b > 1e-3, (J, N, b)
    # order 1 is unchanged by purification (the longer radial recurrence differs in the last bits only)
    envs = _envs(pure, 4, 3, seed=9)
    assert max_rel(site_basis_envs(pure, envs)[:, nu == 1], site_basis_envs(selfi, envs)[:, nu == 1]) < 1e-13


def test_pure2b_zero_on_one_neighbour(pure2b_sige):
    """pure2b: every function of order >= 2 is exactly zero on one neighbour (either species), not on two."""
    selfi = torchace.ace_model(["Si", "Ge"], 3, 7)
    nu = _orders(pure2b_sige)
    one = _envs(pure2b_sige, 12, 1, seed=3)
    B, B0 = site_basis_envs(pure2b_sige, one), site_basis_envs(selfi, one)
    assert B[:, nu >= 2].abs().max() < ZERO
    assert B0[:, nu >= 2].abs().max() > 1e-2
    assert max_rel(B[:, nu == 1], B0[:, nu == 1]) < 1e-13
    two = _envs(pure2b_sige, 6, 2, seed=4)
    assert site_basis_envs(pure2b_sige, two)[:, nu == 3].abs().max() > 1e-3  # only the diagonal is removed
    assert pure2b_sige.n_b == selfi.n_b  # basis size unchanged (ACE1x drops the extended order-1 functions)


def _rank(X, tol=1e-9):
    s = np.linalg.svd(X / np.linalg.norm(X, axis=0), compute_uv=False)
    return int((s > tol * s[0]).sum())


@pytest.mark.parametrize("deg,same", [([14, 11, 8], True), ([12, 9, 6, 3], True), ([8, 8, 8], False)])
def test_span_canonical_vs_self_interacting(deg, same):
    """Paper §2.4, App. C.2 / Table 2: with the degree-4 envelope, span(𝓑) = span(𝐁) when the total degree of
    order N+1 is at least 4 - 1 = 3 below that of order N (the correction terms are then in the basis), and
    not for a constant total degree.  Checked on random environments with 1–6 neighbours."""
    pure = torchace.ace_model(["Si"], len(deg), deg, pure=True)
    selfi = torchace.ace_model(["Si"], len(deg), deg)
    envs = sum((_envs(pure, 2 * pure.n_b // len(deg) + 30, J, seed=10 + J) for J in range(1, 7)), [])
    B, B0 = site_basis_envs(pure, envs).numpy(), site_basis_envs(selfi, envs).numpy()
    assert _rank(B) == _rank(B0) == pure.n_b
    joint = _rank(np.hstack([B, B0]))
    assert (joint == pure.n_b) == same, joint
    if same:  # no extended one-particle functions are needed either (Table 2, "# extra = 0")
        assert pure.embedding.n_a == selfi.embedding.n_a


def _gram_cond(B):
    G = B.T @ B / B.shape[0]
    d = 1.0 / np.sqrt(np.diag(G))
    return np.linalg.cond(G * d[:, None] * d[None, :])


def test_gram_conditioning_trend():
    """Paper §3.1 / Table 1 (reduced): J = N neighbours sampled from the measure in which φ_nlm are
    orthonormal (x uniform, r̂ uniform); the canonical order-N Gram matrix is O(1) after diagonal scaling,
    the self-interacting one is not.  Full table: scripts/studies/purification_gram.py, docs/purification.md."""
    from torchace.basis.purification import sample_orthonormal_envs

    pure = torchace.ace_model(["Si"], 2, 10, pure=True)
    selfi = torchace.ace_model(["Si"], 2, 10)
    sel = _orders(pure) == 2
    envs = sample_orthonormal_envs(pure, 70 * int(sel.sum()), 2, np.random.default_rng(0))
    c = _gram_cond(site_basis_envs(pure, envs).numpy()[:, sel])
    c0 = _gram_cond(site_basis_envs(selfi, envs).numpy()[:, sel])
    assert c < 3.0 and c0 > 30 * c, (c, c0)


@pytest.mark.parametrize("mode", [pytest.param("pure", marks=pytest.mark.slow), "pure2b"])  # pure: 75 s
def test_rows_forces_invariance(mode, pure_sige, pure2b_sige):
    model = pure_sige if mode == "pure" else pure2b_sige
    randomize_coefficients(model, 0.2, seed=5)
    structs = [rattled_bulk(["Si", "Ge"], seed=6), random_cluster(["Si", "Ge"], 6, 3.0, seed=7)]
    rows = torchace.design_matrix_rows(model, structs)
    out = torchace.evaluate(model, structs)
    c = model.coefficients.detach()
    assert max_rel(rows[K.ENERGY] @ c, out[K.ENERGY]) < 1e-12
    assert max_rel(rows[K.FORCES] @ c, out[K.FORCES].reshape(-1)) < 1e-11
    F = fd_forces(model, structs[1], h=1e-4)
    assert max_rel(out[K.FORCES][len(structs[0]):], F) < 1e-7
    # rotation + reflection invariance of the site basis
    envs = _envs(model, 4, 5, seed=8)
    Q = random_rotation(np.random.default_rng(1), reflect=True)
    rot = [(z, zn, R @ Q.T) for z, zn, R in envs]
    assert max_rel(site_basis_envs(model, rot), site_basis_envs(model, envs)) < 1e-11


def test_scaled_one_particle_basis_stays_pure(pure_sige):
    """A basis prior rescales φ_nl → s_nl φ_nl; the purified coupling follows (canonical of scaled φ's)."""
    model = torchace.ace_model(["Si", "Ge"], 3, 7, pure=True)
    gen = torch.Generator().manual_seed(0)
    s = 0.5 + torch.rand(model.embedding.nl_scale.shape, generator=gen, dtype=torch.float64)
    model.set_basis_scale(nl_scale=s)
    nu = _orders(model)
    B = site_basis_envs(model, _envs(model, 6, 2, seed=12))
    assert B[:, nu == 3].abs().max() < ZERO and B[:, nu == 2].abs().max() > 1e-3
    # B_q(scaled) = Π_t s(n_t, l_t) · B_q(unscaled) for each multiset
    envs = _envs(model, 4, 4, seed=13)
    fac = torch.tensor([float(np.prod([s[n - 1, l].item() for n, l in t])) for t in model.nl_of_b], dtype=torch.float64)
    assert max_rel(site_basis_envs(model, envs), site_basis_envs(pure_sige, envs) * fac) < 1e-12
    # the model file keeps the scale and rebuilds the same coupling
    again = model_from_dict(json.loads(json.dumps(model_to_dict(model))))
    assert torch.equal(again.coupling.vals, model.coupling.vals)


def test_model_file_round_trip(tmp_path, pure2b_sige):
    randomize_coefficients(pure2b_sige, 0.1, seed=3)
    path = str(tmp_path / "m.json")
    pure2b_sige.save(path)
    m = torchace.load(path)
    assert m.config.pure2b and not m.config.pure
    at = rattled_bulk(["Si", "Ge"], seed=2)
    a, b = torchace.evaluate(m, at), torchace.evaluate(pure2b_sige, at)
    assert torch.equal(a[K.ENERGY], b[K.ENERGY]) and torch.equal(a[K.FORCES], b[K.FORCES])
    # a file written before purification existed (no pure/pure2b keys) loads as a self-interacting model
    d = model_to_dict(torchace.ace_model(["Si"], 2, 6))
    d["config"] = {k: v for k, v in d["config"].items() if k not in ("pure", "pure2b")}
    old = model_from_dict(d)
    assert not old.config.pure and not old.config.pure2b and old.purification is None


def test_config_validation():
    with pytest.raises(ValueError, match="pure or pure2b, not both"):
        ACEConfig.build(["Si"], 3, 8, pure=True, pure2b=True)
    with pytest.raises(ValueError, match="pure2b must be true or false"):
        ACEConfig.build(["Si"], 3, 8, pure2b="yes")
    d = ACEConfig.build(["Si"], 3, 8, pure=True).to_dict()
    assert d["pure"] is True and d["pure2b"] is False
    assert ACEConfig.from_dict(d).pure


def test_torchscript(pure_sige):
    randomize_coefficients(pure_sige, 0.1, seed=4)
    at = random_cluster(["Si", "Ge"], 5, 3.0, seed=1)
    a = torchace.evaluate(pure_sige, at)
    b = torchace.evaluate(pure_sige, at, module=torch.jit.script(pure_sige))
    assert max_rel(b[K.FORCES], a[K.FORCES]) < 1e-13 and max_rel(b[K.ENERGY], a[K.ENERGY]) < 1e-13


def _brute_force_basis(selfi, envs, mode):
    """Independent evaluator of the definitions: 𝒜_k = Σ over ordered tuples of *distinct* neighbours of
    Π_t φ_{k_t} (paper eq. 6), or for pure2b 𝐀_k − Σ_j Π_t φ_{k_t}(x_j); then the self-interacting
    model's own coupling C.  No purification code is involved."""
    from itertools import permutations

    idx = selfi.product.idx.numpy()
    n_a = selfi.embedding.n_a
    out = []
    for zc, zn, R in envs:
        sp = {z: s for s, z in enumerate(selfi.config.numbers)}
        v = torch.tensor(R, dtype=torch.float64)
        zi = torch.full((len(R),), sp[int(zc)], dtype=torch.long)
        zj = torch.tensor([sp[int(z)] for z in zn], dtype=torch.long)
        with torch.no_grad():
            phi = selfi.embedding(v, zi, zj).numpy()  # [J, n_a]
        phi1 = np.concatenate([phi, np.ones((len(R), 1))], axis=1)
        AA = np.zeros(idx.shape[0])
        for k, row in enumerate(idx):
            cols = [c for c in row if c < n_a]
            if mode == "pure":
                AA[k] = sum(np.prod([phi1[j, c] for j, c in zip(js, cols)])
                            for js in permutations(range(len(R)), len(cols)))
            else:
                full = np.prod(phi1.sum(0)[cols])
                AA[k] = full - (np.prod(phi1[:, cols], axis=1).sum() if len(cols) >= 2 else 0.0)
        out.append(selfi.coupling(torch.from_numpy(AA)))
    return torch.stack(out)


@pytest.mark.parametrize("mode", ["pure", "pure2b"])
def test_against_brute_force_definition(mode, pure_sige, pure2b_sige):
    model = pure_sige if mode == "pure" else pure2b_sige
    selfi = torchace.ace_model(["Si", "Ge"], 3, 7)
    envs = _envs(model, 3, 4, seed=21) + _envs(model, 2, 2, seed=22)
    assert max_rel(site_basis_envs(model, envs), _brute_force_basis(selfi, envs, mode)) < 1e-12


def test_gram_script_writes_json_and_table(tmp_path):
    """scripts/studies/purification_gram.py, run as a script: its JSON, and its table between the markers of
    docs/purification.md."""
    root = Path(__file__).resolve().parents[2]
    begin, end = "<!-- gram-table -->", "<!-- /gram-table -->"
    assert begin in (root / "docs" / "purification.md").read_text()
    md = tmp_path / "p.md"
    md.write_text(f"head\n{begin}\nold\n{end}\ntail\n")
    js = tmp_path / "g.json"
    run([sys.executable, str(root / "scripts" / "studies" / "purification_gram.py"), "--orders", "2", "--degrees",
         "6", "--factor", "20", "--json", str(js), "--markdown", str(md)], timeout=600, check=True,
        env=dict(os.environ, PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", "")))
    res = json.loads(js.read_text())["results"]
    assert len(res) == 1 and res[0]["order"] == 2 and res[0]["self_interacting"] > 3 * res[0]["canonical"]
    text = md.read_text()
    assert text.startswith("head\n") and text.endswith("tail\n") and "old" not in text and "canonical (pure)" in text
