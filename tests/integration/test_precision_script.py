"""float32 vs float64, devices, TorchScript round trip, coefficient assignment, config round trip."""
import json

import numpy as np
import torch

import torchace
from torchace import keys as K
from torchace.testing import RTOL, randomize_coefficients, rattled_bulk, results_close, scripted


def test_float32_close_to_float64(device):
    m64 = torchace.ace_model(["Si", "Ge"], 3, 8).to(device)
    randomize_coefficients(m64, 0.1, seed=3)
    m32 = torchace.ace_model(["Si", "Ge"], 3, 8, dtype=torch.float32).to(device)
    m32.coefficients = m64.coefficients.detach().float()
    at = rattled_bulk(["Si", "Ge"], seed=21)
    a, b = torchace.evaluate(m64, at), torchace.evaluate(m32, at)
    assert b[K.ENERGY].dtype == torch.float32 and b[K.FORCES].device.type == device
    errs = results_close(b, a, RTOL[torch.float32])
    assert errs[K.ENERGY] < 1e-5


def test_torchscript_same_numbers(sige_model, device):
    model = sige_model.to(device)
    s = scripted(model)
    structs = [rattled_bulk(["Si", "Ge"], seed=22), rattled_bulk(["Si"], seed=23)]
    a = torchace.evaluate(model, structs)
    b = torchace.evaluate(model, structs, module=s)
    results_close(b, a, 1e-13)
    # a saved and reloaded script gives the same numbers (no pickle involved)
    import io
    buf = io.BytesIO()
    torch.jit.save(s, buf)
    buf.seek(0)
    c = torchace.evaluate(model, structs, module=torch.jit.load(buf, map_location=device))
    results_close(c, a, 1e-13)
    model.to("cpu")


def test_coefficients_assignment_and_config_roundtrip():
    m = torchace.ace_model(["Si", "Ge"], 2, 6, E0={"Si": -1.0})
    p = m.coefficients
    m.coefficients = torch.arange(m.basis_size, dtype=torch.float64)
    assert m.coefficients is p and float(m.coefficients[5]) == 5.0
    cfg = torchace.ACEConfig.from_dict(json.loads(json.dumps(m.config.to_dict())))
    assert cfg == m.config
    m2 = torchace.ACEModel(cfg)
    assert m2.basis_size == m.basis_size
    assert torch.equal(m2.coupling.vals, m.coupling.vals) and torch.equal(m2.product.idx, m.product.idx)


def test_site_basis_linearly_independent():
    """B functions are linearly independent on random environments (the Gram matrix has full rank)."""
    from torchace.testing import random_envs, site_basis_envs
    m = torchace.ace_model(["Si"], 3, 10)
    envs = random_envs(np.random.default_rng(4), [14], 3 * m.n_b, 10, 1.0, m.rcut)
    B = site_basis_envs(m, envs).numpy()
    s = np.linalg.svd(B / np.linalg.norm(B, axis=0), compute_uv=False)
    assert s[-1] / s[0] > 1e-8, s[-1] / s[0]
