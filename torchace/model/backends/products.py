"""The product basis as the kernels evaluate it (issue 29): the shared-prefix DAG of the m-resolved products
(``product_dag``, one multiply per node) or the coupled pairs of one-particle blocks (``basis/recoupling.py``), each
with its coefficient array, built once per basis; ``product_scheme`` picks the cheaper by operation count.
Used by the fused C++ kernel (``fused.py``, ``fused_nonlinear.py``) and the Triton backend."""
from __future__ import annotations

import threading
import weakref
from typing import Optional

import torch

from ...basis.recoupling import CoupledPairs, coupled_pairs

_LOCK = threading.Lock()

def product_dag(idx: torch.Tensor, n_a: int):
    """Shared-prefix DAG of the product basis: (parent, last, child_start, node_of_aa) as int64 tensors.

    ``idx`` [n_aa, ν] holds each AA function's sorted A-indices, padded with ``n_a`` (a factor 1).  Node 0
    is the empty product; node k = node parent[k] × A[last[k]]; every prefix of an AA function is a node
    (the prefixes missing from the basis are added).  Nodes are numbered level by level with each node's
    children contiguous, [child_start[p], child_start[p + 1]), so parents precede children.  Evaluating the
    basis costs one multiply per node, and ∂E/∂A one reverse sweep, instead of ν - 1 multiplies and a
    ν-term leave-one-out per function.
    """
    keys = {()}
    rows = []
    for row in idx.tolist():
        key = tuple(a for a in row if a != n_a)
        rows.append(key)
        keys.update(key[:t] for t in range(1, len(key) + 1))
    number = {(): 0}
    parent, last = [0], [n_a]
    level = [()]
    while level:
        nxt = sorted((k for k in keys if len(k) == len(level[0]) + 1 and k[:-1] in number),
                     key=lambda k: (number[k[:-1]], k[-1]))
        for k in nxt:
            number[k] = len(parent)
            parent.append(number[k[:-1]])
            last.append(k[-1])
        level = nxt
    n = len(parent)
    counts = torch.bincount(torch.tensor(parent[1:], dtype=torch.long), minlength=n)
    child_start = torch.zeros(n + 1, dtype=torch.long)
    child_start[1:] = torch.cumsum(counts, 0)
    child_start += 1  # node 0's children start at 1
    as_long = lambda x: torch.tensor(x, dtype=torch.long)  # noqa: E731
    return as_long(parent), as_long(last), child_start, as_long([number[k] for k in rows])


def node_coefficients(model, coefficients: torch.Tensor, node_of_aa: torch.Tensor, n_nodes: int) -> torch.Tensor:
    """Many-body coefficients [..., basis_size] → coefficients per DAG node [..., nz, n_nodes] (float64, CPU):
    c·C folded onto the AA functions, then summed onto their nodes (an AA function may repeat a multiset)."""
    lead = coefficients.shape[:-1]
    c_mb = coefficients[..., : model.n_manybody].reshape(*lead, model.nz, model.n_b).to(torch.float64)
    c_aa = model.coupling.transpose_apply(c_mb).cpu()
    return torch.zeros(*lead, model.nz, n_nodes, dtype=torch.float64).index_add_(-1, node_of_aa.cpu(), c_aa)


_DAGS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def cached_dag(model):
    """``product_dag`` of the model's product basis, built once per basis (tens of ms for large bases; a
    ``torchace.evaluate`` call builds a new evaluator each time).  Kept with the index table it was built
    from and rebuilt when that table's values change (however changed)."""
    p = model.product
    idx = p.idx.detach().cpu()
    n_a = int(model.embedding.n_a)
    with _LOCK:
        hit = _DAGS.get(p)
        if hit is None or hit[1] != n_a or not torch.equal(hit[0], idx):
            hit = _DAGS[p] = (idx.clone(), n_a, product_dag(idx, n_a))
    return hit[2]


_PAIRS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()

# the product schemes of the energy kernel (torchace/basis/recoupling.py): "auto" takes the cheaper by cost()
PRODUCT_SCHEMES = ("auto", "dag", "pairs")


def cached_pairs(model) -> Optional[CoupledPairs]:
    """``recoupling.coupled_pairs`` of the model's product basis (None where it does not apply), built once per
    basis and rebuilt when its index tables change, as ``cached_dag``."""
    emb = fixed_embedding(model)[0]
    tables = [model.product.idx.detach().cpu()] + [t.detach().cpu() for t in (emb.n_idx, emb.l_idx, emb.lm_idx)]
    with _LOCK:
        hit = _PAIRS.get(model.product)
        if hit is None or len(hit[0]) != 4 or not all(torch.equal(a, b) for a, b in zip(hit[0], tables)):
            plan = coupled_pairs(tables[0], int(emb.n_a), *tables[1:])
            hit = _PAIRS[model.product] = ([t.clone() for t in tables], plan)
    return hit[1]


def dag_cost(parent: torch.Tensor) -> int:
    """Multiply-adds per atom of the DAG's energy and reverse sweep (one per node forward, two per child back)."""
    return 3 * int(parent.shape[0])


def product_scheme(model, products: str = "auto") -> str:
    """"dag" or "pairs" for the energy kernel: ``products`` if not "auto", else the cheaper of the two by their
    operation counts (``CoupledPairs.cost``, ``dag_cost``); "dag" where the coupled pairs do not apply."""
    if products not in PRODUCT_SCHEMES:
        raise ValueError(f"products must be one of {PRODUCT_SCHEMES}, got {products!r}")
    # learned radials (the nonlinear model's LearnedBasis) mix radial rows per species pair: not planned here
    learned = getattr(model, "radials", None) is not None or fixed_embedding(model)[1] is not None
    plan = None if learned else cached_pairs(model)
    if products == "pairs":
        if plan is None or plan.n_terms == 0:
            raise ValueError("the coupled-pair scheme does not apply to this model (order above 4, learned radials, "
                             "or a block without all its m): use products='dag'")
        return "pairs"
    if products == "dag" or plan is None or plan.n_terms == 0:
        return "dag"
    return "pairs" if plan.cost()["flops"] < dag_cost(cached_dag(model)[0]) else "dag"


def product_args(model, scheme: str, dtype: torch.dtype) -> tuple:
    """The kernel's product-basis arguments for ``scheme`` ("dag" or "pairs"): ((parent, last, children) of the DAG,
    (pair_index, pair_coef, terms) of the coupled pairs); the other scheme's are empty (the DAG: the empty product)."""
    long = dict(dtype=torch.long)
    if scheme == "pairs":
        plan = cached_pairs(model)
        n_a = int(fixed_embedding(model)[0].n_a)
        return ((torch.zeros(1, **long), torch.full((1,), n_a, **long), torch.ones(2, **long)),
                (plan.pair_index, plan.pair_coef.to(dtype).contiguous(), plan.terms))
    parent, last, children, _ = cached_dag(model)
    return (parent, last, children), (torch.zeros(0, 3, **long), torch.zeros(0, dtype=dtype), torch.zeros(0, 3, **long))


def coefficient_count(model, scheme: str) -> int:
    """Length of the kernel's coefficient arrays for ``scheme``: DAG nodes or coupled-pair terms."""
    return cached_pairs(model).n_terms if scheme == "pairs" else int(cached_dag(model)[0].shape[0])


def product_coefficients(model, coefficients: torch.Tensor, scheme: str) -> torch.Tensor:
    """Many-body coefficients [..., basis_size] → the kernel's coefficient array of ``scheme`` (float64, CPU):
    per DAG node (``node_coefficients``) or per coupled-pair term (``CoupledPairs.weights``), [..., nz, n]."""
    if scheme == "pairs":
        lead = coefficients.shape[:-1]
        c_mb = coefficients[..., : model.n_manybody].reshape(*lead, model.nz, model.n_b).to(torch.float64)
        return cached_pairs(model).weights(model.coupling.transpose_apply(c_mb).cpu())
    parent, _, _, node_of_aa = cached_dag(model)
    return node_coefficients(model, coefficients, node_of_aa, parent.shape[0])


def fixed_embedding(model):
    """(the fixed one-particle basis ``EdgeEmbedding``, the learned radials or None) of ``model``: its own
    embedding, or a learned basis (``learned`` over ``base``, the nonlinear model's ``LearnedBasis``)."""
    emb = model.embedding
    learned = getattr(emb, "learned", None)
    return (emb.base, learned) if learned is not None else (emb, None)
