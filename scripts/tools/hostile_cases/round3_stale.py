"""Round 3 (issue 26), class 9: no stale answers after the model changes.  Each case changes a model that a
calculator or a reused evaluator has already used, in a way no version counter sees or by replacing what was
cached, and checks the next answer against a fresh copy of the changed model (reference backend)."""
import copy

from hostile_inputs import Ctx, case  # noqa: F401  (Ctx: the helpers' type)

REL = 1e-9


def _si8(seed=1):
    from ase.build import bulk

    a = bulk("Si", "diamond", 5.43, cubic=True)
    a.rattle(0.05, seed=seed)
    return a


def _fresh_energy(model, atoms) -> float:
    import torchace

    return float(torchace.evaluate(copy.deepcopy(model), atoms, backend="reference")["energy"][0])


def _close(a: float, b: float, rel: float = REL):
    return True if abs(a - b) <= rel * max(abs(b), 1.0) else f"{a!r} instead of {b!r}"


@case(9, "calculator: coefficients.data.mul_(2) after a call (same atoms)", expect="ok", quick=True)
def _(ctx):
    from torchace.calculators import TorchACECalculator

    m = ctx.model().eval()
    a = _si8()
    a.calc = TorchACECalculator(m)
    a.get_potential_energy()
    m.coefficients.data.mul_(2)
    return _close(a.get_potential_energy(), _fresh_energy(m, a))


@case(9, "calculator: model.E0 replaced by a new tensor (64 atoms)", expect="ok")
def _(ctx):
    import torch
    from torchace.calculators import TorchACECalculator

    m = ctx.model().eval()
    a = _si8() * (2, 2, 2)
    a.calc = TorchACECalculator(m)
    a.get_potential_energy()
    m.E0 = torch.tensor([-4.6])
    a.rattle(0.01, seed=3)
    return _close(a.get_potential_energy(), _fresh_energy(m, a))


@case(9, "float32 calculator (a copy): load_state_dict of another model into the caller's", expect="ok")
def _(ctx):
    import torch
    from torchace.calculators import TorchACECalculator

    m = ctx.model(seed=1).eval()
    other = ctx.model(seed=2)
    a = _si8()
    a.calc = TorchACECalculator(m, dtype=torch.float32)
    a.get_potential_energy()
    m.load_state_dict(other.state_dict())
    return _close(a.get_potential_energy(), _fresh_energy(m, a), rel=1e-5)


@case(9, "reused fused evaluator: nl_scale written through a numpy view", expect="ok")
def _(ctx):
    import torchace
    from torchace.model.backends import select
    from torchace.model.evaluate import model_inputs
    from torchace.structures.batch import collate

    m = ctx.model().eval()
    a = _si8()
    ev = select(m, "cpu").evaluator(m)
    inputs = model_inputs(m, collate([a], m.config.numbers, m.rcut))
    ev(*inputs, True, True)
    m.embedding.nl_scale.numpy()[...] *= 0.5
    return _close(float(ev(*inputs, True, True)[torchace.keys.ENERGY][0]), _fresh_energy(m, a))


@case(9, "calculator: refit with a committee (BLR) on the same model: forces_std of the new committee",
      expect="ok")
def _(ctx):
    import numpy as np
    import torchace
    from torchace import solvers
    from torchace.calculators import TorchACECalculator

    truth = ctx.model(seed=3).eval()

    def data(seed):
        frames = []
        for k in range(3):
            a = _si8(seed=10 * seed + k)
            out = torchace.evaluate(truth, a)
            a.info["energy"] = float(out["energy"][0])
            a.arrays["forces"] = out["forces"].numpy()
            frames.append(a)
        return frames

    m = torchace.ace_model(["Si"], 2, 6)
    torchace.fit(m, data(1), solver=solvers.BLR(committee_size=4, seed=1), compute_errors=False)
    a = _si8(seed=7)
    a.calc = calc = TorchACECalculator(m)
    calc.get_property("forces_std", a)
    torchace.fit(m, data(2), solver=solvers.BLR(committee_size=4, seed=2), compute_errors=False)
    got = calc.get_property("forces_std", a)
    b = a.copy()
    b.calc = fresh = TorchACECalculator(copy.deepcopy(m))
    want = fresh.get_property("forces_std", b)
    return True if np.allclose(got, want, rtol=1e-10, atol=1e-14) else "forces_std of the old committee"


@case(9, "calculator: committee removed after a call (m.committee = None): no std reported", expect="ok")
def _(ctx):
    import torch
    from torchace.calculators import PropertyNotImplementedError, TorchACECalculator

    m = ctx.model().eval()
    m.committee = m.coefficients.detach() + 1e-3 * torch.randn(3, m.basis_size, dtype=torch.float64)
    a = _si8()
    a.calc = calc = TorchACECalculator(m)
    calc.get_property("energy_std", a)
    m.committee = None
    try:
        calc.get_property("energy_std", a)
    except PropertyNotImplementedError:
        return True
    return "energy_std of a committee the model no longer has"


@case(9, "nonlinear model: density_coefficients.data written after a calculator call", expect="ok")
def _(ctx):
    import torch
    import torchace
    from torchace.calculators import TorchACECalculator

    m = torchace.ace_model(["Si"], 2, 6, densities=2, embedding="fs")
    with torch.no_grad():
        m.density_coefficients.normal_(0.0, 0.05, generator=torch.Generator().manual_seed(1))
    m.eval()
    a = _si8()
    a.calc = TorchACECalculator(m)
    a.get_potential_energy()
    m.density_coefficients.data.mul_(-1.3)
    return _close(a.get_potential_energy(), _fresh_energy(m, a))


@case(9, "float64 calculator: the caller moves the model to float32 (model.float())", expect="ok")
def _(ctx):
    from torchace.calculators import TorchACECalculator

    m = ctx.model().eval()
    a = _si8()
    a.calc = TorchACECalculator(m, backend="analytic")
    a.get_potential_energy()
    m.float()
    return _close(a.get_potential_energy(), _fresh_energy(copy.deepcopy(m).double(), a), rel=1e-6)
