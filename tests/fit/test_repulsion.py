"""Short-range repulsion: the ZBL baseline (values, smoothness, derivatives, fit targets, file and TorchScript
round trips), synthetic dimers (Darby et al.) and ACEpotentials.jl's repulsion restraint."""
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms

import torchace
from torchace import keys as K
from torchace.fit import solvers
from torchace.model.zbl import ZBL, zbl_unswitched
from torchace.fit.repulsion import dimer_curve, envelope_distance, pair_envelope, restraint_data, synthetic_dimers
from torchace.testing import fd_forces, fd_virial, random_cluster, randomize_coefficients, rattled_bulk

SI_TINY = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "acedata" / "Si_tiny.xyz"
E0_SI = -158.54496821


def _zbl_dimer(model, a, b, r):
    """Switched ZBL energy of element pair (a, b) at distances r from the model's module."""
    r = torch.as_tensor(np.atleast_1d(r), dtype=torch.float64)
    zi, zj = torch.full_like(r, a, dtype=torch.long), torch.full_like(r, b, dtype=torch.long)
    return model.zbl(r, zi, zj)


def test_zbl_si_si_hand_value():
    # ZBL 1985 universal screening, Si–Si at r = 1 Å, by hand (30-digit arithmetic):
    # a = 0.8854·0.529177/(2·14^0.23) = 0.1276736 Å, x = r/a = 7.832474,
    # φ(x) = 0.18175e^(−3.1998x) + 0.50986e^(−0.94229x) + 0.28022e^(−0.4029x) + 0.02817e^(−0.20162x)
    #      = 0.01806459,
    # V = 14²·14.399645 eV·Å / 1 Å · φ = 50.98423421 eV
    assert float(zbl_unswitched(1.0, 14, 14)) == pytest.approx(50.98423421340572, rel=1e-12)
    a = 0.8854 * 0.529177 / (2 * 14 ** 0.23)
    x = 1.0 / a
    phi = sum(c * math.exp(-d * x) for c, d in [(0.18175, 3.1998), (0.50986, 0.94229), (0.28022, 0.4029),
                                                (0.02817, 0.20162)])
    assert float(zbl_unswitched(1.0, 14, 14)) == pytest.approx(196 * 14.399645 * phi, rel=1e-14)
    # in the model: below r_inner the switched ZBL is V + C (C the LAMMPS constant shift)
    m = torchace.ace_model(["Si"], 2, 4, zbl=True)
    assert m.zbl.r_outer[0, 0] == pytest.approx(m.config.r0[0][0]) and m.zbl.r_inner[0, 0] == pytest.approx(1.2)
    assert float(_zbl_dimer(m, 0, 0, 1.0)) == pytest.approx(50.98423421340572 + float(m.zbl.C[0, 0]), rel=1e-12)


@pytest.mark.parametrize("zs,inner,outer", [((14, 14), 1.2, 2.4), ((1, 74), 0.0, 1.5), ((8, 6), 0.6, 2.0)])
def test_zbl_switch_smooth_to_zero(zs, inner, outer):
    zbl = ZBL(list(zs), [[inner] * 2] * 2, [[outer] * 2] * 2)

    def derivs(r):
        r = torch.tensor([r], dtype=torch.float64, requires_grad=True)
        e = zbl(r, torch.tensor([0]), torch.tensor([1]))
        (d1,) = torch.autograd.grad(e.sum(), r, create_graph=True)
        (d2,) = torch.autograd.grad(d1.sum(), r)
        return float(e.detach()), float(d1.detach()), float(d2)

    e_in = derivs(0.5 * outer)[0]
    for h in (1e-3, 1e-4):  # E, E′, E″ → 0 at r_outer as h³, h², h
        e, d1, d2 = derivs(outer - h)
        scale = 50 * abs(e_in)
        assert abs(e) < scale * h ** 3 + 1e-12 and abs(d1) < scale * h ** 2 and abs(d2) < scale * h
    for r in (outer, outer + 1e-9, outer + 1.0, 10.0):
        assert derivs(r) == (0.0, 0.0, 0.0)
    if inner > 0:  # C² across r_inner
        lo, hi = derivs(inner - 1e-7), derivs(inner + 1e-7)
        for a, b in zip(lo, hi):
            assert abs(a - b) < 1e-4 * (1 + abs(a))
    # repulsive everywhere inside: E decreasing on (0, r_outer)
    r = torch.linspace(0.05, outer, 2000, dtype=torch.float64)
    e = zbl(r, torch.zeros(2000, dtype=torch.long), torch.ones(2000, dtype=torch.long))
    assert bool((e[1:] - e[:-1] <= 1e-12).all())


def test_zbl_config_validation():
    with pytest.raises(ValueError, match="exceeds rcut"):
        torchace.ace_model(["Si"], 2, 4, rcut=5.0, zbl=True, zbl_outer=6.0)
    with pytest.raises(ValueError, match="zbl_inner < zbl_outer"):
        torchace.ace_model(["Si"], 2, 4, zbl=True, zbl_inner=2.0, zbl_outer=1.5)
    with pytest.raises(ValueError, match="zbl is False"):
        torchace.ace_model(["Si"], 2, 4, zbl_outer=1.5)


def _cluster_with_close_pairs(els, seed):
    at = random_cluster(els, 6, 2.2, seed=seed, min_dist=0.9)
    return at


def test_zbl_model_energy_is_pair_sum_and_fd():
    m = torchace.ace_model(["Si", "Ge"], 2, 4, E0={"Si": -1.0, "Ge": -2.0}, zbl=True, zbl_inner=0.8,
                           zbl_outer=2.6)
    at = _cluster_with_close_pairs(["Si", "Ge"], 3)
    d = at.get_all_distances()
    assert (d[np.triu_indices(len(at), 1)] < 2.6).sum() >= 3  # exercises inner and switching regions
    # coefficients zero: E − ΣE0 is the ZBL pair sum Σ_{i<j} E(r_ij)
    e = torchace.evaluate(m, at)[K.ENERGY].item()
    s = {"Si": 0, "Ge": 1}
    sp = [s[x] for x in at.get_chemical_symbols()]
    pair_sum = sum(float(_zbl_dimer(m, sp[i], sp[j], d[i, j])) for i in range(len(at)) for j in range(i + 1, len(at)))
    e0 = sum(-1.0 if x == "Si" else -2.0 for x in at.get_chemical_symbols())
    assert e - e0 == pytest.approx(pair_sum, rel=1e-12)
    assert abs(pair_sum) > 1.0
    # forces and virials by finite differences, with the basis switched on too
    randomize_coefficients(m, 0.05, seed=1)
    out = torchace.evaluate(m, at)
    fd = fd_forces(m, at, h=1e-5)
    assert np.abs(out[K.FORCES].numpy() - fd).max() < 1e-6 * max(1.0, np.abs(fd).max())
    bulk = rattled_bulk(["Si", "Ge"], a=4.6, rattle=0.2, seed=4)  # compressed: neighbours inside r_outer
    out = torchace.evaluate(m, bulk)
    W = fd_virial(m, bulk)
    assert np.abs(out[K.VIRIAL][0].numpy() - W).max() < 1e-5 * max(1.0, np.abs(W).max())


def test_zbl_save_load_and_torchscript(tmp_path):
    m = torchace.ace_model(["Si", "Ge"], 2, 4, zbl=True, zbl_outer=2.3)
    randomize_coefficients(m, 0.05, seed=2)
    d = m.config.to_dict()
    assert d["zbl"] is True and d["zbl_outer"] == 2.3 and d["zbl_inner"] is None
    assert json.loads(json.dumps(d)) == d and torchace.ACEConfig.from_dict(d) == m.config
    path = tmp_path / "m.json"
    m.save(str(path))
    loaded = torchace.load(str(path))
    assert loaded.config.zbl and loaded.zbl is not None
    structs = [rattled_bulk(["Si", "Ge"], a=4.8, seed=5), _cluster_with_close_pairs(["Si", "Ge"], 6)]
    a, b = torchace.evaluate(m, structs), torchace.evaluate(loaded, structs)
    for key in (K.ENERGY, K.FORCES, K.VIRIAL):
        assert torch.equal(a[key], b[key])
    # the ZBL contributes, and TorchScript (also saved and reloaded) gives the same numbers
    plain = torchace.ace_model(["Si", "Ge"], 2, 4)
    plain.coefficients = m.coefficients.detach()
    assert float((torchace.evaluate(plain, structs)[K.ENERGY] - a[K.ENERGY]).abs().min()) > 0.1
    s = torch.jit.script(m)
    buf = io.BytesIO()
    torch.jit.save(s, buf)
    buf.seek(0)
    for mod in (s, torch.jit.load(buf)):
        c = torchace.evaluate(m, structs, module=mod)
        for key in (K.ENERGY, K.FORCES, K.VIRIAL):
            assert torch.allclose(c[key], a[key], rtol=1e-13, atol=1e-12)


def _labelled(true, structs):
    from ase.calculators.singlepoint import SinglePointCalculator

    out = torchace.evaluate(true, structs)
    forces = torch.split(out[K.FORCES], out[K.N_ATOMS].tolist())
    for k, at in enumerate(structs):
        kw = dict(energy=float(out[K.ENERGY][k]), forces=forces[k].numpy())
        if at.pbc.all():
            kw["stress"] = out[K.STRESS][k].numpy()[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
        at.calc = SinglePointCalculator(at, **kw)
    return structs


def test_fit_with_zbl_baseline_recovers_model():
    """Targets have the baseline's energy, forces and virial subtracted (E0 fitted alongside)."""
    kw = dict(zbl=True, zbl_inner=1.0, zbl_outer=2.5)
    true = torchace.ace_model(["Si", "Ge"], 2, 4, E0={"Si": -3.25, "Ge": -1.5}, **kw)
    randomize_coefficients(true, 0.05, seed=3)
    structs = [rattled_bulk(["Si", "Ge"], a=4.9, rattle=0.2, seed=10 + k) if k % 2
               else _cluster_with_close_pairs(["Si", "Ge"], 20 + k) for k in range(8)]
    data = _labelled(true, structs)
    model = torchace.ace_model(["Si", "Ge"], 2, 4, **kw)
    res = torchace.fit(model, data, E0="fit", solver=solvers.QR(lam=1e-10))
    assert res.errors["all"]["F"]["rmse"] < 1e-6 and res.errors["all"]["E"]["rmse"] < 1e-5
    out, ref = torchace.evaluate(model, data), torchace.evaluate(true, data)
    assert float((out[K.FORCES] - ref[K.FORCES]).abs().max()) < 1e-6
    assert float((out[K.VIRIAL] - ref[K.VIRIAL]).abs().max()) < 1e-5
    assert res.E0["Si"] == pytest.approx(-3.25, abs=1e-6) and res.E0["Ge"] == pytest.approx(-1.5, abs=1e-6)
    # the baseline really is subtracted: a model without it does not fit these data exactly
    nobase = torchace.ace_model(["Si", "Ge"], 2, 4, E0={"Si": -3.25, "Ge": -1.5})
    res2 = torchace.fit(nobase, data, solver=solvers.QR(lam=1e-10), compute_errors=False)
    assert res2.errors == {}
    out2 = torchace.evaluate(nobase, data)
    assert float((out2[K.FORCES] - ref[K.FORCES]).abs().max()) > 1e-2


def test_synthetic_dimers_and_restraint_construction():
    m = torchace.ace_model(["Si", "Ge"], 2, 4, rcut=5.5, E0={"Si": -158.5, "Ge": -100.25})
    aug = synthetic_dimers(m)
    assert aug.weights == {"synthetic_dimer": {"E": 0.01, "F": 0.0, "V": 0.0}}
    assert [a.get_chemical_symbols() for a in aug.structures] == [["Si", "Si"], ["Si", "Ge"], ["Ge", "Ge"]]
    e0 = {"Si": -158.5, "Ge": -100.25}
    for at, (a, b) in zip(aug.structures, [(0, 0), (0, 1), (1, 1)]):
        r = at.get_distance(0, 1)
        s, sc = r / m.config.r0[a][b], 5.5 / m.config.r0[a][b]
        assert s ** -2 - sc ** -2 + 2 * sc ** -3 * (s - sc) == pytest.approx(100.0, rel=1e-12)
        assert not at.pbc.any() and at.info["config_type"] == "synthetic_dimer"
        assert at.info["energy"] == pytest.approx(100.0 + sum(e0[x] for x in at.get_chemical_symbols()), rel=1e-14)
    assert 0.2 < aug.structures[0].get_distance(0, 1) < 0.3  # Si: r0 = 2.4 Å → r_syn ≈ 0.239 Å
    absolute = synthetic_dimers(m, E_syn=50.0, weight=0.1, relative_to_E0=False, energy_key="dft_energy")
    assert [a.info["dft_energy"] for a in absolute.structures] == [50.0] * 3
    assert absolute.weights["synthetic_dimer"]["E"] == 0.1
    # ACEpotentials.jl restraint: r_in = 0.01 Å, label env(r_in) (E0 is subtracted later, as from any label)
    rest = restraint_data(m)
    assert rest.weights == {"restraint": {"E": 0.01, "F": 0.0, "V": 0.0}}
    for at, (a, b) in zip(rest.structures, [(0, 0), (0, 1), (1, 1)]):
        assert at.get_distance(0, 1) == pytest.approx(0.01, abs=1e-15)
        r0 = m.config.r0[a][b]
        s, sc = 0.01 / r0, 5.5 / r0
        assert at.info["energy"] == pytest.approx(s ** -2 - sc ** -2 + 2 * sc ** -3 * (s - sc), rel=1e-14)
        assert at.info["config_type"] == "restraint"
    assert float(pair_envelope(m, 0.01, 0, 0)) == pytest.approx(57599.43, rel=1e-6)  # Si–Si, r0 = 2.4
    assert envelope_distance(m, 0, 1, 1e3) < envelope_distance(m, 0, 1, 1e2)
    with pytest.raises(ValueError, match="below the minimum pair distance"):
        restraint_data(m, r_in=0.001)
    # with a ZBL baseline the dimers' labels lose the baseline like all data: allowed, with a warning
    from torchace.fit.data import read_data
    from torchace.fit.weights import resolve_weights
    from torchace.fit.repulsion import augment

    mz = torchace.ace_model(["Si"], 2, 4, zbl=True)
    ds = read_data([Atoms("Si", info={"energy": -1.0})])
    with pytest.warns(UserWarning, match="ZBL baseline"):
        ds2, w2, extra = augment(mz, ds, resolve_weights({"synthetic_dimer": {"E": 1.0}}), synthetic_dimers=True)
    assert len(ds2) == 2 and len(extra) == 1 and w2["synthetic_dimer"]["E"] == 1.0  # the user's entry wins


def test_fit_options_append_dimers():
    true = torchace.ace_model(["Si", "Ge"], 2, 4, E0={"Si": -3.25, "Ge": -1.5})
    randomize_coefficients(true, 0.05, seed=5)
    data = _labelled(true, [rattled_bulk(["Si", "Ge"], seed=30 + k) for k in range(3)])
    m = torchace.ace_model(["Si", "Ge"], 2, 4, E0={"Si": -3.25, "Ge": -1.5})
    plain = torchace.fit(m, data, solver=solvers.QR(lam=1e-6))
    res = torchace.fit(m, data, solver=solvers.QR(lam=1e-6), synthetic_dimers={"E_syn": 50.0},
                       repulsion_restraint=True)
    aug = res.info["augmentation"]
    assert [(x["config_type"], x["pair"]) for x in aug] == [
        ("synthetic_dimer", "Si-Si"), ("synthetic_dimer", "Si-Ge"), ("synthetic_dimer", "Ge-Ge"),
        ("restraint", "Si-Si"), ("restraint", "Si-Ge"), ("restraint", "Ge-Ge")]
    assert res.n_obs == plain.n_obs + 6 and res.n_structures == plain.n_structures
    assert set(res.errors) == set(plain.errors)  # the error tables cover the user's data only
    assert aug[0]["label"] == pytest.approx(50.0 - 6.5)
    with pytest.raises(ValueError, match="E0='fit'"):
        torchace.fit(m, data, E0="fit", synthetic_dimers=True)
    with pytest.raises(ValueError, match="repulsion_restraint must be true, false or a mapping"):
        torchace.fit(m, data, E0={"Si": -3.25, "Ge": -1.5}, repulsion_restraint="yes")


@pytest.mark.skipif(not SI_TINY.exists(), reason="shared reference data not present")
def test_si_tiny_dimer_curve_repulsive_with_augmentation():
    """Si_tiny (order 2, totaldegree 8, rcut 5.5, QR λ = 1e-3): the plain fit's Si–Si dimer curve is not
    repulsive on [1, 2] Å (measured: E(1 Å) ≈ −577 eV, rising by up to 34 eV per 0.01 Å); with the
    synthetic dimer or ACEpotentials' restraint it decreases monotonically there (measured E(1 Å) ≈ 45 eV)."""
    r = np.linspace(1.0, 2.0, 101)
    weights = {"default": {"E": 30, "F": 1, "V": 1}, "liq": {"E": 10, "F": 0.66, "V": 0.25}}
    curves = {}
    for name, kw in [("plain", {}), ("synthetic", {"synthetic_dimers": True}),
                     ("restraint", {"repulsion_restraint": True})]:
        m = torchace.ace_model(["Si"], 2, 8, rcut=5.5, E0={"Si": E0_SI})
        res = torchace.fit(m, str(SI_TINY), weights=weights, solver=solvers.QR(lam=1e-3), compute_errors=False, **kw)
        curves[name] = dimer_curve(m, "Si", "Si", r)
        if kw:
            (aug,) = res.info["augmentation"]
            assert aug["predicted"] == pytest.approx(aug["label"], rel=1e-3)
    assert np.diff(curves["plain"]).max() > 1.0
    for name in ("synthetic", "restraint"):
        assert np.diff(curves[name]).max() < 0, name
        assert curves[name][0] > 10.0
