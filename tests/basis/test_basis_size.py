"""basis_size against ACEpotentials.jl v0.10 ace1_model numbers."""
import pytest

import torchace
from torchace.basis.spec import product_spec


@pytest.mark.parametrize("elements,order,td,expected", [
    (["Si"], 3, 12, 223),             # issue / ACEpotentials.jl: 211 many-body + 12 pair
    (["Si"], 3, [20, 16, 12], 319),   # ACEpotentials.jl paper Si "small" model
    (["Si"], 4, 20, 5476),            # ACEpotentials.jl paper Table III model (5456 + 20 pair)
    (["Si", "Ge"], 3, 8, 648),        # 2·(308 + 2·8), 308 also given by ace-jax's selection
])
def test_basis_size(elements, order, td, expected):
    m = torchace.ace_model(elements, order, td)
    assert m.basis_size == expected
    assert m.coefficients.shape == (expected,)


def test_manybody_counts():
    assert torchace.ace_model(["Si"], 3, 12).n_b == 211
    assert torchace.ace_model(["Si"], 3, [20, 16, 12]).n_b == 299


@pytest.mark.parametrize("nz,order,td", [(1, 4, 14), (1, 6, 12), (2, 3, 10)])
def test_invariant_count_by_characters(nz, order, td):
    """Independent count: the number of invariants of each (n,l)-multiset equals the multiplicity of
    the trivial representation in its symmetrised tensor power, computed from O(3) characters."""
    import numpy as np
    from itertools import groupby
    from torchace.basis.coupling_coefficients import symmetric_coupling, _groups

    def chi(l, th):
        return np.sin((l + 0.5) * th) / np.sin(th / 2)

    th = np.linspace(1e-3, np.pi - 1e-3, 4001)
    # Haar measure on SO(3) for class functions: (1 - cos θ)/π dθ
    w = (1 - np.cos(th)) / np.pi
    def sym_power_char(l, k, th):
        # character of Sym^k(V_l) via Newton's identities on power sums p_j = chi_l(j θ)
        p = [None] + [chi(l, j * th) for j in range(1, k + 1)]
        h = [np.ones_like(th)]
        for n in range(1, k + 1):
            h.append(sum(p[j] * h[n - j] for j in range(1, n + 1)) / n)
        return h[k]

    sp = product_spec(nz, order, td)
    checked = 0
    for t in sp.nl_tuples:
        if len(t) < 2:
            continue
        char = np.ones_like(th)
        for key, g in groupby(t):
            char = char * sym_power_char(key[1], len(list(g)), th)
        # Σl even is enforced, so parity is trivial and SO(3) invariants = O(3) invariants
        n_inv = int(round(np.trapezoid(char * w, th)))
        ms, coeffs = symmetric_coupling(tuple(l for _, l in t), _groups(t))
        assert coeffs.shape[0] == n_inv, t
        checked += 1
    assert checked > 300


def test_coupling_disk_cache(tmp_path, monkeypatch):
    import numpy as np
    from torchace.basis import coupling_coefficients as coupling

    monkeypatch.setenv("TORCHACE_CACHE", str(tmp_path))
    coupling.symmetric_coupling.cache_clear()
    ms, c = coupling.symmetric_coupling((1, 2, 3), (1, 1, 1))
    files = list(tmp_path.glob("coupling_*.npz"))
    assert len(files) == 1 and c.shape[0] == 1
    coupling.symmetric_coupling.cache_clear()
    ms2, c2 = coupling.symmetric_coupling((1, 2, 3), (1, 1, 1))  # now read from disk
    assert np.array_equal(ms, ms2) and np.array_equal(c, c2)
    coupling.symmetric_coupling.cache_clear()
