"""The coupled-pair plan (torchace/basis/recoupling.py) reproduces the product basis's energy Σ_k c̃_k AA_k.

The plan is a polynomial identity in A: it must hold for any A (not only for A of real geometries) and any
coefficients in the span of the coupled basis B = C·AA, so random A and random c test it exactly."""
import pytest
import torch

import torchace
from torchace.basis.recoupling import coupled_pairs


def _plan(m):
    e = m.embedding
    return coupled_pairs(m.product.idx, e.n_a, e.n_idx, e.l_idx, e.lm_idx)


@pytest.mark.parametrize("elements,order,td,kw", [
    (["Si"], 1, 8, {}), (["Si"], 2, 10, {}), (["Si"], 3, 10, {}), (["Si"], 4, 12, {}),
    (["H", "C", "O"], 4, 8, {}), (["Si", "Ge"], 3, 8, {"pure2b": True}), (["Si"], 4, 8, {"pure": True}),
    (["Si"], 4, 10, {"wL": 2.0})])
def test_plan_equals_products(elements, order, td, kw):
    m = torchace.ace_model(elements, order, td, **kw)
    plan = _plan(m)
    assert plan is not None
    g = torch.Generator().manual_seed(order)
    A = torch.randn(6, m.embedding.n_a, generator=g, dtype=torch.float64)
    species = torch.arange(6) % m.nz
    c_aa = m.coupling.transpose_apply(torch.randn(m.nz, m.n_b, generator=g, dtype=torch.float64))
    ref = (m.product(A) * c_aa[species]).sum(1)
    got = plan.site_energy(A, plan.weights(c_aa)[species])
    assert torch.allclose(got, ref, rtol=1e-12, atol=1e-12 * float(ref.abs().max())), (got - ref).abs().max()
    # a coefficient vector outside the invariants (one m-resolved product alone) is not representable: the
    # identity above is a property of the coupling, not of the test's data
    if order >= 2:
        single = torch.zeros(m.nz, m.product.n_aa, dtype=torch.float64)
        k = int((m.product.idx != m.embedding.n_a).sum(1).argmax())  # a product of the highest order
        single[:, k] = 1.0
        ref1 = (m.product(A) * single[species]).sum(1)
        got1 = plan.site_energy(A, plan.weights(single)[species])
        if m.product.idx[k].tolist().count(int(m.product.idx[k, 0])) < order:  # not an l = 0 power
            assert not torch.allclose(got1, ref1, rtol=1e-6)


def test_plan_is_cheaper_for_large_bases_and_refuses_order_5():
    from torchace.model.backends.products import cached_dag, dag_cost
    m = torchace.ace_model(["Si"], 4, 16)
    plan = _plan(m)
    assert plan.cost()["flops"] < 0.7 * dag_cost(cached_dag(m)[0])
    assert _plan(torchace.ace_model(["Si"], 5, 6)) is None
