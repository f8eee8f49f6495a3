"""Optional cross-check bridge to ace-jax (PyPI ``ace-jax``, a JAX port of ACEpotentials.jl).

Tests must guard with ``pytest.importorskip("ace_jax")``; ace_jax / jax are imported lazily.

What is built: the categorical ACEpotentials ``ace1_model(elements, order, totaldegree, rcut)``
(src/ace1_compat.jl), *analytic* (Julia splines the radials on 100 nodes; ace-jax's own
ace1-compatible builder ``build_embedding_model`` splines too, ~1e-6 off the analytic values).
ace-jax's ``build_model`` gives the right basis selection (TotalDegree(NZ, 1/wL), wL = 1.5,
one-hot species radials) and EquivariantTensors coupling, but with ``ace_model`` radial/angular
defaults, so three fields are swapped for the ace1 ones:

* radial  R_nl(r; zi, zj) = env(x) Q_{n'}(x) delta(z', zj),  n' = (n-1)//NZ, z' = (n-1)%NZ
  (species interleaved in the radial index n, fastest); Q = Jacobi(4,4) orthonormal on [-1,1]
  (ACE1 folds env^2 into the weight), env(x) = (1-x)^2 (1+x)^2 (PolyEnvelope2sX(-1,1,2,2)).
* x = -1 + 2 (y(r) - y(0)) / (y(rcut) - y(0)), clamped; y = Agnesi(p=2, q=4) with per-pair
  r0 = (bond_len(zi) + bond_len(zj)) / 2 and a = (-2q + p(4q-2)) / (p + p^2 + q + q^2).
  x = -1 at r = 0, +1 at rcut; env vanishes at both ends.
* Y_lm: real SPHERICAL harmonics (ace1 Ytype = :spherical), L2-normalised over the unit sphere,
  no Condon-Shortley phase, sqrt(2) on m != 0, stored at l*l + l + m.

rcut=None -> ACE1compat default: rcut = 2.5 * max_pair r0 (shared by all pairs).
Row order of B is ace-jax's own enumeration (NOT guaranteed to equal ACEpotentials' or
torchace's); align rows via ``acejax_basis_spec`` (the (n, l) body of every row).
Checked: for Si this equals ace-jax's splined ace1 model at the 100 spline nodes to 1e-14
(between nodes the spline is off by up to ~4e-3 in R_n, n = 12). Couplings are cached on disk
(~/.cache/ace-jax/coupling, or $ACEJAX_COUPLING_CACHE; td = 20 Si order 3 is a 240 MB entry).
"""
from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

WL = 1.5  # ACEpotentials default wL


def _jax():
    import jax
    jax.config.update("jax_enable_x64", True)
    return jax


@functools.lru_cache(maxsize=8)
def _build(elements: tuple, order: int, totaldegree: tuple, rcut):
    """(model, kept-row index array, nnll per kept row, info dict), cached per shape."""
    _jax()
    import jax.numpy as jnp
    from ace_jax.basis import radial_ace1 as ra
    from ace_jax.basis import radial_init as ri
    from ace_jax.basis.model import build_model

    zs = ri.resolve_elements(list(elements))
    NZ = len(zs)
    r0 = ri.r0_table(zs)                                   # per pair (bl_i + bl_j) / 2
    rc = 2.5 * float(r0.max()) if rcut is None else float(rcut)
    maxlev = list(totaldegree) if len(totaldegree) > 1 else [totaldegree[0]] * order
    assert len(maxlev) == order, "totaldegree list needs one entry per correlation order"

    # build at the largest level; per-order levels are applied by dropping B rows below
    # (the coupling is block-diagonal in the (n,l) body, so kept rows are unaffected)
    basis = build_model(zs, order, max(maxlev), rcut=rc, rin=0.0, radial_mode="onehot",
                        with_gamma=False)
    m = basis.model
    A, B, C = ra.jacobi_3term(m.polys_A.shape[0], 4.0, 4.0)
    m = dataclasses.replace(
        m, ysolid=False,
        polys_A=jnp.asarray(A), polys_B=jnp.asarray(B), polys_C=jnp.asarray(C),
        rnl_transform=jnp.asarray(ri.transform_table(zs, rc, None, 0.0, 2, 4)))

    level = lambda bb: sum(n / NZ + WL * l for n, l in bb)            # noqa: E731
    keep = np.array([i for i, bb in enumerate(basis.nnll)
                     if level(bb) <= maxlev[len(bb) - 1] + 1e-9], dtype=np.int64)
    info = dict(elements=zs, rcut=rc, r0=r0, n_B_built=int(basis.meta["n_B"]),
                n_pair_acejax=int(basis.meta["n_pair"]))
    return m, keep, tuple(basis.nnll[i] for i in keep), info


def _key(elements, order, totaldegree, rcut):
    # ints stay ints: build_model's pair basis needs an integer degree
    td = tuple(int(t) if float(t).is_integer() else float(t) for t in np.atleast_1d(totaldegree))
    return tuple(elements), int(order), td, (None if rcut is None else float(rcut))


def acejax_site_basis(elements, order, totaldegree, rcut, envs):
    """Many-body site basis B (pair basis excluded), shape [n_envs, n_manybody], float64.

    envs: list of (centre Z, neighbour Zs [M], displacements [M, 3] = x_neighbour - x_centre, Å).
    The returned row is the block of the centre's species (in ACEpotentials' species-blocked
    descriptor layout that block sits at columns z_centre*n_B : (z_centre+1)*n_B); the layout is
    the same for every centre species, values depend on it only through the pair r0.
    """
    _jax()
    import jax.numpy as jnp
    from ace_jax.eval.model import highest_precision

    m, keep, _, info = _build(*_key(elements, order, totaldegree, rcut))
    z2i = {z: i for i, z in enumerate(info["elements"])}
    rij = np.concatenate([np.asarray(d, float).reshape(-1, 3) for _, _, d in envs])
    zj = np.concatenate([[z2i[int(z)] for z in zn] for _, zn, _ in envs]).astype(np.int32)
    seg = np.concatenate([np.full(len(zn), k) for k, (_, zn, _) in enumerate(envs)]).astype(np.int32)
    zi = np.array([z2i[int(zc)] for zc, _, _ in envs], np.int32)[seg]
    with highest_precision():
        Bmat, _ = m.site_basis(jnp.asarray(rij), jnp.asarray(zi), jnp.asarray(zj),
                               jnp.asarray(seg), len(envs))
    return np.asarray(Bmat, dtype=np.float64)[:, keep]


def acejax_basis_spec(elements, order, totaldegree, rcut=None):
    """(n, l) body of every returned B row (n is the species-interleaved radial index)."""
    return _build(*_key(elements, order, totaldegree, rcut))[2]


def acejax_basis_sizes(elements, order, totaldegree, rcut=None):
    """Sizes per centre species: many-body (after per-order levels), pair.

    n_pair_ace1 = ceil(max totaldegree) * NZ is ACE1compat's pair basis; n_pair_acejax is what
    ace-jax's build_model (ace_model family) reports, = ceil(max totaldegree) regardless of NZ."""
    _, keep, _, info = _build(*_key(elements, order, totaldegree, rcut))
    NZ = len(info["elements"])
    n_pair = math.ceil(max(np.atleast_1d(totaldegree))) * NZ
    return dict(n_manybody=len(keep), n_pair_ace1=n_pair, n_pair_acejax=info["n_pair_acejax"],
                n_total_per_species=len(keep) + n_pair, n_species=NZ, rcut=info["rcut"],
                r0=info["r0"].tolist())
