"""Optional cross-check against ace-jax (independent JAX port of ACEpotentials.jl; skipped if absent).

The two many-body bases are evaluated on the same random environments; each is fitted onto the other
by least squares.  Equal spans ⇒ both residuals at round-off (bound 1e-8, relative).
"""
import numpy as np
import pytest

import torchace
from torchace.testing import random_envs, site_basis_envs

pytest.importorskip("ace_jax")
from acejax_bridge import acejax_basis_sizes, acejax_site_basis  # noqa: E402


def _rel_residual(X, Y):
    """max over columns of Y of ||Y - X·argmin|| / ||Y||."""
    coef, *_ = np.linalg.lstsq(X, Y, rcond=None)
    return float(np.max(np.linalg.norm(Y - X @ coef, axis=0) / np.linalg.norm(Y, axis=0)))


@pytest.mark.parametrize("elements,order,td", [(["Si"], 3, 12), (["Si", "Ge"], 3, 8), (["Si"], 4, 10),
                                             (["Si", "Ge", "C"], 3, 6)])
def test_same_span_as_acejax(elements, order, td):
    m = torchace.ace_model(elements, order, td)
    sizes = acejax_basis_sizes(elements, order, td)
    assert sizes["n_manybody"] == m.n_b
    assert abs(sizes["rcut"] - m.rcut) < 1e-12
    numbers = m.config.numbers
    rng = np.random.default_rng(7)
    for zc in numbers:
        envs = random_envs(rng, numbers, 2 * m.n_b + 50, 12, 1.0, m.rcut)
        envs = [(zc, zn, R) for _, zn, R in envs]
        B_t = site_basis_envs(m, envs).numpy()
        B_j = acejax_site_basis(elements, order, td, None, envs)
        assert B_j.shape == B_t.shape
        assert _rel_residual(B_t, B_j) < 1e-8
        assert _rel_residual(B_j, B_t) < 1e-8
