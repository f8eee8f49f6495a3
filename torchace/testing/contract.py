"""The model contract as reusable checks: ``ModelContractTests``, a pytest mixin run over every model family.

What every energy model promises (issue 30, "One model contract"), checked on small structures:

* symmetry: E(QR + t) = E(R), E(P·R) = E(R) for rotations Q (reflections included), translations t and
  permutations P; F(QR) = F(R)·Qᵀ, W(QR) = Q·W(R)·Qᵀ, F(P·R) = P·F(R);
* derivatives: F = −∂E/∂x and W = −∂E/∂ε (symmetric strain of cell and positions) against central finite
  differences of the energy (``fd_forces``, ``fd_virial``);
* E0: an isolated atom has the energy E0 of its element and no force;
* cutoff smoothness: as a neighbour crosses rcut the energy and forces are continuous and reach the values
  without that pair (E → E(rest) + E0(neighbour), its force → 0), and beyond rcut they are exactly those;
* export round trips: TorchScript (``io.torchscript.script_model``, saved and loaded) and the model file
  (``model.save`` / ``torchace.load``) give the same numbers as the model;
* backends: every backend that ``torchace.backends.available`` lists for the model agrees with ``reference``
  to ``BACKEND_RTOL`` (1e-12 in float64).

Use::

    class TestMyFamily(ModelContractTests):
        @pytest.fixture(scope="class")
        @classmethod
        def model(cls):
            return build_a_small_model()     # float64, eval mode, non-trivial coefficients

        skip = {"model_file": "this family has no model file"}   # checks it cannot do, with the reason

Tolerances are per dtype (class attributes, override them).  What a model can do (scriptable, model file,
backends) is read through ``capabilities`` (``ContractCapabilities``, from ``model.capabilities``); the checks
it cannot do are skipped with the reason.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from ase import Atoms

from .. import keys as K
from ..model.backends import BACKENDS, EVALUATE, ROWS, available, select
from ..model.contract import capabilities
from ..model.evaluate import evaluate
from . import BACKEND_RTOL, backend_agreement, fd_forces, fd_virial, random_cluster, random_rotation, \
    rattled_bulk, results_close

OUTPUTS = (K.ENERGY, K.FORCES, K.VIRIAL)


@dataclass(frozen=True)
class ContractCapabilities:
    """What a model declares it can do, as far as the contract checks need it (None: it can; else why not)."""

    torchscript: Optional[str]
    model_file: Optional[str]
    backends: Tuple[str, ...]          # evaluators of energy, forces, virial
    row_backends: Tuple[str, ...]      # design-matrix rows (linear models)


def probe_capabilities(model) -> ContractCapabilities:
    """The model's capabilities: TorchScript as the model declares it (``model.capabilities.scriptable``;
    ``test_torchscript`` then checks the declaration), the model file's document by trying, and the backends
    ``torchace.backends.available`` lists that ``select`` also accepts for the model (a model outside the ACE
    family has only its own forward)."""
    ts = None if capabilities(model).scriptable else f"{type(model).__name__} declares scriptable=False"
    try:
        model.to_dict()
        mf = None
    except (AttributeError, NotImplementedError, TypeError) as exc:
        mf = f"no model file document: {type(exc).__name__}: {exc}"
    dev = model.coefficients.device
    if select(model, dev).name not in BACKENDS:  # another family (e.g. a PACEModel): its own forward only
        return ContractCapabilities(ts, mf, (), ())
    names = {task: tuple(name for name, why in available(model, dev, task).items()
                         if why is None and _selectable(model, dev, name, task)) for task in (EVALUATE, ROWS)}
    return ContractCapabilities(ts, mf, names[EVALUATE], names[ROWS])


_SCRIPTED: Dict[int, tuple] = {}


def scripted_copy(model) -> torch.jit.ScriptModule:
    """``io.torchscript.script_model(model)``, compiled once per model (compiling takes seconds)."""
    from ..io.torchscript import script_model

    if id(model) not in _SCRIPTED:
        _SCRIPTED.clear()  # one model at a time: the test classes run one after the other
        _SCRIPTED[id(model)] = (model, script_model(model))  # the model is kept: its id stays its own
    return _SCRIPTED[id(model)][1]


def _selectable(model, device, name: str, task: str) -> bool:
    try:
        select(model, device, name, task)
    except ValueError:  # e.g. a model outside the ACE family: its own forward only
        return False
    return True


def isolated_atom(symbol: str) -> Atoms:
    return Atoms(symbol, positions=[[0.0, 0.0, 0.0]])


def probe_chain(elements: List[str], d: float, r: float) -> Atoms:
    """Atoms A, B, C on a line: A–B at ``d``, B–C at ``r`` (A–C at d + r: beyond rcut for r near rcut)."""
    e = list(elements)
    return Atoms([e[0], e[1 % len(e)], e[-1]], positions=[[0.0, 0.0, 0.0], [d, 0.0, 0.0], [d + r, 0.0, 0.0]])


class ModelContractTests:
    """pytest mixin: subclasses provide a ``model`` fixture (float64 unless they override the tolerances' use)
    and may set ``skip`` {check name: reason} for what their family cannot do.  Check names: "rotation",
    "translation", "permutation", "fd_forces", "fd_virial", "isolated_atom", "cutoff", "torchscript",
    "model_file", "backends"."""

    skip: Dict[str, str] = {}
    # relative to the largest value of each output
    INVARIANCE_RTOL = {torch.float64: 1e-10, torch.float32: 1e-4}
    FD_RTOL = {torch.float64: 1e-6, torch.float32: 1e-2}
    FD_STEP, FD_STRAIN_STEP = 1e-4, 1e-5          # Å, strain
    EXPORT_RTOL = {torch.float64: 1e-12, torch.float32: 1e-6}
    E0_RTOL = {torch.float64: 1e-12, torch.float32: 1e-6}
    # cutoff: the neighbour at rcut − ε for these ε (Å); ΔE(ε), ΔF(ε) shrink at least as CUTOFF_RATE·ε (a
    # continuous energy and force) down to the floor of rounding
    CUTOFF_EPS = (1e-2, 1e-3, 1e-4)
    CUTOFF_RATE = 2.0
    CUTOFF_FLOOR = {torch.float64: 1e-11, torch.float32: 1e-4}
    SEED = 0

    # ---- what the subclass may override
    def capabilities(self, model) -> ContractCapabilities:
        """What the model can do (``probe_capabilities``: its declaration, and what the registry runs here)."""
        return probe_capabilities(model)

    def elements(self, model) -> List[str]:
        return list(model.config.elements)

    def structures(self, model) -> List[Atoms]:
        """A rattled periodic diamond cell and a cluster (both with every element of the model)."""
        el = self.elements(model)
        return [rattled_bulk(el, a=5.5, rattle=0.1, seed=self.SEED),
                random_cluster(el, 6, 2.6, seed=self.SEED, min_dist=2.0)]

    def fd_structures(self, model) -> List[Atoms]:
        """Small structures for finite differences (every energy is a model call): a 2-atom periodic cell
        (sheared, rattled) and a 4-atom cluster."""
        el = self.elements(model)
        cell = rattled_bulk(el, a=5.5, rattle=0.1, seed=self.SEED + 1, cubic=False)
        cell.set_cell(cell.cell.array @ np.array([[1.0, 0.03, 0.0], [0.0, 1.0, 0.02], [0.01, 0.0, 0.98]]),
                      scale_atoms=True)
        return [cell, random_cluster(el, 4, 2.2, seed=self.SEED + 2, min_dist=2.0)]

    # ---- helpers
    def _capabilities(self, model) -> ContractCapabilities:
        """``capabilities`` once per model (pytest makes a new instance of the class for every test)."""
        cache = type(self).__dict__.get("_capabilities_cache")
        if cache is None:
            cache = {}
            type(self)._capabilities_cache = cache
        if id(model) not in cache:
            cache[id(model)] = (model, self.capabilities(model))  # the model is kept: its id stays its own
        return cache[id(model)][1]

    def _skip_if(self, check: str, reason: Optional[str] = None) -> None:
        import pytest

        why = self.skip.get(check) or reason
        if why:
            pytest.skip(why)

    @staticmethod
    def _dtype(model) -> torch.dtype:
        return model.coefficients.dtype

    @staticmethod
    def _eval(model, atoms, **kw) -> Dict[str, torch.Tensor]:
        return evaluate(model, atoms, **kw)

    # ---- symmetry
    def test_rotation(self, model):
        self._skip_if("rotation")
        rng = np.random.default_rng(self.SEED)
        rtol = self.INVARIANCE_RTOL[self._dtype(model)]
        for at in self.structures(model):
            ref = self._eval(model, at)
            for reflect in (False, True):
                Q = random_rotation(rng, reflect)
                rot = at.copy()
                rot.positions = at.positions @ Q.T
                if at.pbc.any():
                    rot.set_cell(at.cell.array @ Q.T, scale_atoms=False)
                got = self._eval(model, rot)
                Qt = torch.as_tensor(Q, dtype=ref[K.FORCES].dtype)
                want = {K.ENERGY: ref[K.ENERGY], K.FORCES: ref[K.FORCES] @ Qt.T, K.VIRIAL: Qt @ ref[K.VIRIAL] @ Qt.T}
                results_close(got, want, rtol, OUTPUTS)

    def test_translation(self, model):
        self._skip_if("translation")
        rtol = self.INVARIANCE_RTOL[self._dtype(model)]
        for at in self.structures(model):
            moved = at.copy()
            moved.positions += np.array([0.37, -1.21, 2.9])
            if at.pbc.all():
                moved.wrap()
            results_close(self._eval(model, moved), self._eval(model, at), rtol, OUTPUTS)

    def test_permutation(self, model):
        self._skip_if("permutation")
        rtol = self.INVARIANCE_RTOL[self._dtype(model)]
        for at in self.structures(model):
            p = np.random.default_rng(self.SEED).permutation(len(at))
            ref = self._eval(model, at)
            got = self._eval(model, at[p])
            want = {K.ENERGY: ref[K.ENERGY], K.FORCES: ref[K.FORCES][torch.as_tensor(p)], K.VIRIAL: ref[K.VIRIAL]}
            results_close(got, want, rtol, OUTPUTS)

    # ---- derivatives
    def test_fd_forces(self, model):
        self._skip_if("fd_forces")
        rtol = self.FD_RTOL[self._dtype(model)]
        for at in self.fd_structures(model):
            f = self._eval(model, at, virials=False)[K.FORCES]
            results_close({K.FORCES: f}, {K.FORCES: torch.as_tensor(fd_forces(model, at, self.FD_STEP))}, rtol,
                          (K.FORCES,))

    def test_fd_virial(self, model):
        self._skip_if("fd_virial")
        rtol = self.FD_RTOL[self._dtype(model)]
        for at in self.fd_structures(model):
            if not at.pbc.all():
                continue
            w = self._eval(model, at)[K.VIRIAL][0]
            results_close({K.VIRIAL: w}, {K.VIRIAL: torch.as_tensor(fd_virial(model, at, self.FD_STRAIN_STEP))},
                          rtol, (K.VIRIAL,))

    # ---- E0 and the cutoff
    def test_isolated_atom(self, model):
        self._skip_if("isolated_atom")
        E0 = model.E0.detach().cpu().tolist()
        for z, symbol in enumerate(self.elements(model)):
            out = self._eval(model, isolated_atom(symbol))
            assert abs(float(out[K.ENERGY][0]) - E0[z]) <= self.E0_RTOL[self._dtype(model)] * max(abs(E0[z]), 1.0), \
                (symbol, float(out[K.ENERGY][0]), E0[z])
            assert float(out[K.FORCES].abs().max()) == 0.0, (symbol, out[K.FORCES])

    def test_cutoff(self, model):
        """A–B at 0.55·rcut, C at rcut ∓ ε from B (and beyond rcut from A): beyond rcut E = E(A, B) + E0(C) and
        F = F(A, B) (C free); below, the differences ΔE, ΔF go to zero as ε → 0, at least linearly (ML-PACE's and
        ACEpotentials.jl's envelopes: ΔE ~ ε², ΔF ~ ε)."""
        self._skip_if("cutoff")
        el, rc = self.elements(model), float(model.rcut)
        d = 0.55 * rc
        free = self._eval(model, probe_chain(el, d, rc + 1.0))
        e_free, f_free = float(free[K.ENERGY][0]), free[K.FORCES]
        out = self._eval(model, probe_chain(el, d, rc * (1 + 1e-9)))
        assert abs(float(out[K.ENERGY][0]) - e_free) <= 1e-12 * max(abs(e_free), 1.0)
        assert float((out[K.FORCES] - f_free).abs().max()) <= 1e-12 * max(float(f_free.abs().max()), 1.0)
        dE, dF = [], []
        for eps in self.CUTOFF_EPS:
            out = self._eval(model, probe_chain(el, d, rc - eps))
            dE.append(abs(float(out[K.ENERGY][0]) - e_free))
            dF.append(float((out[K.FORCES] - f_free).abs().max()))
        floor = self.CUTOFF_FLOOR[self._dtype(model)]
        for diffs in (dE, dF):
            for eps0, eps1, a, b in zip(self.CUTOFF_EPS, self.CUTOFF_EPS[1:], diffs, diffs[1:]):
                assert b <= max(a * self.CUTOFF_RATE * eps1 / eps0, floor), (self.CUTOFF_EPS, dE, dF)

    # ---- exports
    def test_torchscript(self, model, tmp_path):
        from ..io.torchscript import quiet_jit

        self._skip_if("torchscript", self._capabilities(model).torchscript)
        path = os.path.join(str(tmp_path), "model.pt")
        with quiet_jit():
            torch.jit.save(scripted_copy(model), path)
            module = torch.jit.load(path)
        rtol = self.EXPORT_RTOL[self._dtype(model)]
        for at in self.structures(model):
            results_close(self._eval(model, at, module=module), self._eval(model, at, backend="reference"), rtol,
                          OUTPUTS + (K.NODE_ENERGY,))

    def test_model_file(self, model, tmp_path):
        from ..io.model_file import load

        self._skip_if("model_file", self._capabilities(model).model_file)
        path = os.path.join(str(tmp_path), "model.json")
        model.save(path)
        back = load(path, dtype=self._dtype(model))
        for at in self.structures(model):
            for backend in self._capabilities(model).backends:
                a = self._eval(model, at, backend=backend)
                b = self._eval(back, at, backend=backend)
                for k in OUTPUTS + (K.NODE_ENERGY,):
                    assert torch.equal(a[k], b[k]), (backend, k, float((a[k] - b[k]).abs().max()))

    # ---- backends
    def test_backends(self, model):
        caps = self._capabilities(model)
        names = caps.backends
        self._skip_if("backends", None if len(names) > 1 else
                      f"one evaluator only ({', '.join(names) or 'its own forward'}): nothing to compare")
        assert self._dtype(model) in BACKEND_RTOL
        for name in names:
            if name != "reference":
                backend_agreement(model, self.structures(model), name)
        for name in caps.row_backends:
            if name != "reference":
                backend_agreement(model, self.structures(model), name, task="rows")
