"""Committee energies from the fused C++ kernel's single pass (FusedEvaluator(model, committee=True)).

Each member's energies must equal those of the same kernel on a copy of the model whose coefficients are
that member; the mean model's energies, forces and virials must not change.  Skipped where the kernel
cannot be built (no C++ compiler or ninja).
"""
import copy

import pytest
import torch

import torchace
from torchace import keys as K
from torchace.model.backends import fused
from torchace.model.evaluate import model_inputs
from torchace.structures.batch import collate
from torchace.testing import randomize_coefficients, rattled_bulk

pytestmark = pytest.mark.skipif(not fused.available(), reason="fused C++ kernel not buildable here")

MEAN_KEYS = (K.ENERGY, K.NODE_ENERGY, K.FORCES, K.VIRIAL, fused.CLOSEST_PAIR)


def _model(elements, order, td, n_members=5, seed=1, **kw):
    m = torchace.ace_model(elements, order, td, **kw)
    randomize_coefficients(m, seed=seed)
    g = torch.Generator().manual_seed(seed + 100)
    m.committee = torch.randn(n_members, m.basis_size, generator=g, dtype=torch.float64) * 0.1
    with torch.no_grad():
        m.E0.copy_(torch.tensor([-1.5, -2.0, -0.7][: len(elements)], dtype=torch.float64))
        m.pair.scale.uniform_(0.5, 2.0, generator=g)  # the pair scale must be folded into members too
    return m.eval()


def _batch(m, dtype=torch.float64):
    el = m.elements
    atoms = [rattled_bulk(el, seed=3), rattled_bulk(el, reps=(2, 1, 1), seed=4)]
    return model_inputs(m, collate(atoms, m.config.numbers, m.rcut, dtype=dtype))


def _member_energies(m, inp):
    """Reference: the same kernel on copies of the model carrying one member each, [n_members, n_structures]."""
    out = []
    for k in range(m.committee.shape[0]):
        m2 = copy.deepcopy(m)
        m2.coefficients = m.committee[k]
        m2.committee = None
        out.append(fused.FusedEvaluator(m2)(*inp, False, False)[K.ENERGY])
    return torch.stack(out)


MODELS = [(["Si", "Ge"], 3, 8, {"rcut": 5.0}), (["Si"], 2, 10, {}), (["Si"], 2, 8, {"pair": False})]


@pytest.mark.parametrize("spec", MODELS, ids=["SiGe", "Si", "Si-nopair"])
def test_committee_energies_match_members(spec):
    elements, order, td, kw = spec
    m = _model(elements, order, td, **kw)
    if "pair" in kw:
        assert m.n_pair == 0
    inp = _batch(m)
    got = fused.FusedEvaluator(m, committee=True)(*inp, True, True)
    ref = _member_energies(m, inp)
    ce = got[fused.COMMITTEE_ENERGY]
    assert ce.shape == (m.committee.shape[0], 2) and ce.dtype == torch.float64
    torch.testing.assert_close(ce, ref, rtol=1e-12, atol=0)
    # members differ from each other and from the mean: the comparison is not vacuous
    assert (ref - ref[:1]).abs()[1:].min() > 1e-6
    assert (ref - got[K.ENERGY]).abs().min() > 1e-6


@pytest.mark.parametrize("spec", MODELS, ids=["SiGe", "Si", "Si-nopair"])
def test_pair_part_of_members(spec):
    """Members that differ from the mean only in their pair block: the committee must see the difference."""
    elements, order, td, kw = spec
    m = _model(elements, order, td, **kw)
    comm = m.coefficients.detach().repeat(3, 1)
    comm[1, m.n_manybody:] += 0.2
    comm[2, m.n_manybody:] *= -1.0
    m.committee = comm
    inp = _batch(m)
    got = fused.FusedEvaluator(m, committee=True)(*inp, False, False)
    ce = got[fused.COMMITTEE_ENERGY]
    torch.testing.assert_close(ce, _member_energies(m, inp), rtol=1e-12, atol=0)
    torch.testing.assert_close(ce[0], got[K.ENERGY], rtol=1e-12, atol=0)
    if m.n_pair > 0:
        assert (ce[1:] - ce[0]).abs().min() > 1e-6


def test_mean_outputs_unchanged():
    m = _model(["Si", "Ge"], 3, 8, rcut=5.0)
    inp = _batch(m)
    for forces, virials in ((True, True), (True, False), (False, False)):
        plain = fused.FusedEvaluator(m)(*inp, forces, virials)
        comm = fused.FusedEvaluator(m, committee=True)(*inp, forces, virials)
        assert fused.COMMITTEE_ENERGY not in plain
        assert set(comm) == set(plain) | {fused.COMMITTEE_ENERGY}
        for key in MEAN_KEYS:
            if key in plain:
                assert torch.equal(comm[key], plain[key]), key


def test_threads_do_not_change_committee_energies():
    m = _model(["Si", "Ge"], 3, 8, rcut=5.0)
    inp = _batch(m)
    f = fused.FusedEvaluator(m, committee=True)
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = f(*inp, True, True)
        torch.set_num_threads(max(2, n))
        many = f(*inp, True, True)
    finally:
        torch.set_num_threads(n)
    torch.testing.assert_close(many[fused.COMMITTEE_ENERGY], one[fused.COMMITTEE_ENERGY], rtol=1e-13, atol=0)


def test_float32():
    m = _model(["Si", "Ge"], 3, 8, rcut=5.0)
    ref = _member_energies(m, _batch(m))
    m32 = copy.deepcopy(m).to(dtype=torch.float32)
    inp = _batch(m32, torch.float32)
    got = fused.FusedEvaluator(m32, committee=True)(*inp, True, True)
    ce = got[fused.COMMITTEE_ENERGY]
    assert ce.dtype == torch.float32 and ce.shape == ref.shape
    torch.testing.assert_close(ce.double(), ref, rtol=1e-4, atol=1e-4)
    plain = fused.FusedEvaluator(m32)(*inp, True, True)
    for key in MEAN_KEYS:
        assert torch.equal(got[key], plain[key]), key


def test_isolated_atom_without_edges():
    m = _model(["Si", "Ge"], 3, 8, rcut=5.0)
    from ase import Atoms

    inp = model_inputs(m, collate([Atoms("Ge", positions=[[0.0, 0.0, 0.0]])], m.config.numbers, m.rcut))
    assert inp[3].shape[1] == 0
    got = fused.FusedEvaluator(m, committee=True)(*inp, True, True)
    ce = got[fused.COMMITTEE_ENERGY]
    assert ce.shape == (5, 1)
    # A = 0 without neighbours (and no pair terms): every member's energy is E0 of the atom
    torch.testing.assert_close(ce, _member_energies(m, inp), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(ce, torch.full((5, 1), -2.0, dtype=torch.float64), rtol=1e-12, atol=1e-14)
    assert torch.equal(got[K.FORCES], torch.zeros(1, 3, dtype=torch.float64))


def test_committee_updates_and_removal():
    m = _model(["Si"], 2, 10)
    inp = _batch(m)
    f = fused.FusedEvaluator(m, committee=True)
    e1 = f(*inp, False, False)[fused.COMMITTEE_ENERGY].clone()
    with torch.no_grad():  # in place: the cache must notice (version counter)
        m.committee[:, m.n_manybody:] *= 2.0
    e2 = f(*inp, False, False)[fused.COMMITTEE_ENERGY]
    assert not torch.allclose(e1, e2)
    torch.testing.assert_close(e2, _member_energies(m, inp), rtol=1e-12, atol=0)
    m.committee = torch.randn(2, m.basis_size, dtype=torch.float64)  # a new committee of another size
    e3 = f(*inp, False, False)[fused.COMMITTEE_ENERGY]
    assert e3.shape == (2, 2)
    torch.testing.assert_close(e3, _member_energies(m, inp), rtol=1e-12, atol=0)
    m.committee = None
    assert fused.COMMITTEE_ENERGY not in f(*inp, False, False)
    m.committee = torch.randn(2, m.basis_size + 1, dtype=torch.float64)
    with pytest.raises(ValueError, match="committee"):
        f(*inp, False, False)
