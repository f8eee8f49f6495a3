"""The nonlinear ACE model where the linear model goes: TorchScript export (torch.jit.script of the model itself),
metatomic export (metatomic-ase calculator and metatomic.torch), the ASE calculator and `torchace evaluate`, for every
embedding (None, FS, MLP) with fixed and learned radials: the same energies, site energies, forces and
virials/stresses as torchace.evaluate (float64: 1e-12 relative; float32 exports to single precision)."""
import copy
import json
import sys

import numpy as np
import pytest
import torch

import torchace
from torchace import keys as K
from torchace.io.torchscript import load_torchscript, read_metadata
from torchace.model import nonlinear_ace_model
from torchace.testing import (fd_virial, has_module, labelled_dataset, max_rel, random_cluster, rattled_bulk,
                              rattled_sige_cells, results_close)
from torchace.testing import run

RTOL = 1e-12
KEYS = (K.ENERGY, K.NODE_ENERGY, K.FORCES, K.VIRIAL)
VOIGT = ([0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1])
E0 = {"Si": -158.5, "Ge": -100.25}

pytestmark = pytest.mark.usefixtures("one_thread")

# (embedding, learnable radials, densities, extra options): every embedding with fixed and learned radials; ZBL,
# pure2b, three FS densities with a general exponent, and a single-element order-3 basis among them
VARIANTS = {
    "none-fixed": (None, False, 1, dict(zbl=True)),
    "none-learned": (None, True, 1, dict(elements=["Si"], order=3, totaldegree=8)),
    "fs-fixed": ("fs", False, 3, dict(pure2b=True, fs_parameters=[1.0, 1.0, 0.8, 0.5, -0.3, 0.75])),
    "fs-learned": ("fs", True, 2, dict(zbl=True, fs_parameters=[1.0, 1.0, 0.7, 0.5])),
    "mlp-fixed": ("mlp", False, 2, dict(mlp_hidden=4)),
    "mlp-learned": ("mlp", True, 2, dict(mlp_hidden=4, zbl=True)),
}


def build(name: str, seed: int = 0):
    """A small nonlinear model of the variant with random parameters (every density, the pair part, W = I + noise,
    the MLP's output weights), a random basis rescaling and non-zero E0."""
    emb, learned, dens, opts = VARIANTS[name]
    opts = dict(opts)
    elements, order, td = opts.pop("elements", ["Si", "Ge"]), opts.pop("order", 2), opts.pop("totaldegree", 6)
    e0 = {s: E0[s] for s in elements}
    m = nonlinear_ace_model(elements, order, td, densities=dens, embedding=emb, learnable_radials=learned, E0=e0,
                            **opts)
    g = torch.Generator().manual_seed(seed + 1)
    # a prior-like rescaling of the basis (with learned radials it acts inside the radial sum)
    m.set_basis_scale(0.5 + torch.rand(m.embedding.nl_scale.shape, generator=g, dtype=torch.float64),
                      0.5 + torch.rand(m.pair.scale.shape, generator=g, dtype=torch.float64))
    m.randomize_densities(0.05, seed=seed, first=0)
    with torch.no_grad():
        m.pair_coefficients.copy_(0.05 * torch.randn(m.pair_coefficients.shape, generator=g, dtype=torch.float64))
        if learned:
            m.radials.weights.add_(0.05 * torch.randn(m.radials.weights.shape, generator=g, dtype=torch.float64))
        if emb == "mlp":
            m.embedding_fn.w.copy_(0.5 * torch.randn(m.embedding_fn.w.shape, generator=g, dtype=torch.float64))
    m.metadata = {"fit": {"variant": name}}
    return m


def structures(elements):
    """A cubic 8-atom cell, a triclinic 8-atom cell, a non-periodic cluster and a slab (mixed pbc)."""
    cubic, tric = rattled_sige_cells()
    mol = random_cluster(["Si", "Ge"], 8, 3.2, seed=4)
    slab = rattled_bulk(["Si", "Ge"], seed=9)
    slab.pbc = [True, True, False]
    slab.center(vacuum=4.0, axis=2)
    out = [cubic, tric, mol, slab]
    if elements == ["Si"]:
        for at in out:
            at.set_chemical_symbols(["Si"] * len(at))
    return out


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def variant(request, tmp_path_factory):
    m = build(request.param)
    path = tmp_path_factory.mktemp("nlts") / f"{request.param}.pt"
    assert torchace.export(m, path) == str(path)
    return request.param, m, str(path)


# ---- TorchScript ----

def test_torchscript_matches_model(variant, device):
    name, m, path = variant
    module, meta = load_torchscript(path, map_location=device)
    model = m if device == "cpu" else copy.deepcopy(m).to(device)
    structs = structures(m.elements)
    for s in ([structs[1]], structs):  # one triclinic cell, and every kind (periodic, cluster, slab) in one batch
        ref = torchace.evaluate(model, s)
        results_close(torchace.evaluate(model, s, module=module), ref, RTOL, keys=KEYS)
    # the autograd path of the archive (positions that require grad), against the model's reference backend
    results_close(_call(module, model, structs, requires_grad=True),
                  torchace.evaluate(model, structs, backend="reference"), RTOL, keys=KEYS)
    out = _call(module, model, structs[:1], forces=False, virials=False)  # energies only
    assert set(out) == {K.ENERGY, K.NODE_ENERGY} and max_rel(out[K.ENERGY], ref[K.ENERGY][:1]) < RTOL
    assert not module.training
    if m.capabilities.nonlinear:
        assert meta["nonlinear"] == {"densities": m.densities, "embedding": m.embedding_name,
                                     "learnable_radials": m.learnable_radials,
                                     "n_parameters": sum(p.numel() for p in m.parameters() if p.requires_grad)}
    else:  # one density, no embedding, fixed radials: the linear model, exported as such
        assert "nonlinear" not in meta
    assert meta["basis_size"] == m.basis_size and meta["config"] == m.config_dict()
    assert meta["E0"] == {s: E0[s] for s in m.elements} and meta["committee_size"] == 0
    assert meta["model_metadata"] == {"fit": {"variant": name}} and read_metadata(path) == meta


def _call(module, model, structs, requires_grad=False, forces=True, virials=True):
    """The archive called directly (``torch.jit.load`` + ``forward``'s documented inputs)."""
    from torchace.model.evaluate import model_inputs
    from torchace.structures.batch import collate

    dev, dt = model.coefficients.device, model.coefficients.dtype
    b = collate(structs, model.config.numbers, model.rcut, dtype=dt, device=dev)
    args = list(model_inputs(model, b))
    if requires_grad:
        args[0] = args[0].clone().requires_grad_(True)
    out = module(*args, forces, virials)
    return {k: v.detach() for k, v in out.items()}


def test_export_does_not_touch_the_model_and_copies_it(tmp_path):
    m = build("fs-learned").train()
    p = tmp_path / "m.pt"
    torchace.export(m, p)
    assert m.training and m.density_coefficients.requires_grad and m.radials.weights.requires_grad
    module, _ = load_torchscript(str(p))
    assert not module.training
    at = structures(m.elements)[0]
    before = torchace.evaluate(m.eval(), at, backend="analytic")[K.ENERGY]  # the archive's own path, bit for bit
    with torch.no_grad():
        m.density_coefficients.mul_(2.0)  # the archive holds a copy
    got = torchace.evaluate(m, at, module=module)[K.ENERGY]
    assert float((got - before).abs().max()) == 0.0
    assert float((torchace.evaluate(m, at)[K.ENERGY] - before).abs().max()) > 1e-6
    # no edges at all (an isolated atom, two atoms beyond rcut): E0, zero forces
    from ase import Atoms

    lone = torchace.evaluate(m, [Atoms("Ge", positions=[[0, 0, 0]]), Atoms("SiGe", positions=[[0, 0, 0], [0, 0, 9]])],
                             module=module)
    assert lone[K.ENERGY].tolist() == [E0["Ge"], E0["Si"] + E0["Ge"]] and float(lone[K.FORCES].abs().max()) == 0.0


def test_float32_torchscript_export(tmp_path):
    m = build("fs-learned")
    p = tmp_path / "m32.pt"
    torchace.export(m, p, dtype="float32")
    module, meta = load_torchscript(str(p))
    assert meta["dtype"] == "float32" and m.density_coefficients.dtype == torch.float64
    m32 = copy.deepcopy(m).to(torch.float32)
    s = structures(m.elements)
    got = torchace.evaluate(m32, s, module=module)
    results_close(got, torchace.evaluate(m32, s), 1e-5)
    ref = torchace.evaluate(m, s)
    assert max_rel(got[K.ENERGY], ref[K.ENERGY]) < 1e-5
    assert float((got[K.FORCES].double() - ref[K.FORCES]).abs().max()) < 1e-3


# ---- metatomic ----

# optional: without them the TorchScript, calculator and CLI tests still run
HAVE_METATOMIC = all(has_module(n) for n in ("metatomic.torch", "metatomic_ase"))
needs_metatomic = pytest.mark.skipif(not HAVE_METATOMIC, reason="needs metatomic-torch and metatomic-ase")


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def mta_variant(request, tmp_path_factory):
    m = build(request.param, seed=3)
    path = tmp_path_factory.mktemp("nlmta") / f"{request.param}.pt"
    assert torchace.export(m, path, format="metatomic", metadata={"author": "test"}) == str(path)
    return request.param, m, str(path)


@needs_metatomic
def test_metatomic_ase_calculator_matches_torchace(mta_variant):
    import metatomic_ase

    _, m, path = mta_variant
    calc = metatomic_ase.MetatomicCalculator(path, check_consistency=True, uncertainty_threshold=None)
    for at in structures(m.elements)[1:]:  # triclinic, cluster, slab
        ref = torchace.evaluate(m, at)
        at = at.copy()
        at.calc = calc
        assert max_rel(at.get_potential_energy(), float(ref[K.ENERGY][0])) < RTOL
        assert max_rel(at.get_forces(), ref[K.FORCES].numpy()) < RTOL
        assert max_rel(calc.get_property("energies", at), ref[K.NODE_ENERGY].numpy()) < RTOL
        if at.pbc.all():
            assert max_rel(at.get_stress(), ref[K.STRESS][0].numpy()[VOIGT]) < RTOL


@needs_metatomic
@pytest.mark.filterwarnings("ignore:A conversion to `System`:UserWarning")  # the slab's vacuum cell vector
@pytest.mark.parametrize("name", ["none-learned", "fs-learned"])
def test_metatomic_model_api_batches_and_selected_atoms(name, tmp_path):
    """metatomic.torch directly: several systems in one call, a subset of atoms, per-atom and per-system energies;
    capabilities and metadata (energy only: a nonlinear model has no committee)."""
    from metatensor.torch import Labels
    from metatomic.torch import ModelEvaluationOptions, ModelOutput, load_atomistic_model, systems_to_torch
    from vesin.metatomic import NeighborList

    m = build(name, seed=5)
    path = str(tmp_path / "m.pt")
    torchace.export(m, path, format="metatomic", metadata={"author": "test"})
    model = load_atomistic_model(path)
    caps = model.capabilities()
    assert set(caps.outputs.keys()) == {"energy"} and caps.dtype == "float64"
    assert caps.interaction_range == m.rcut and caps.atomic_types == [int(z) for z in m.config.numbers]
    extra = model.metadata().extra
    assert json.loads(extra["torchace_nonlinear"])["embedding"] == m.embedding_name
    assert json.loads(extra["user"]) == {"author": "test"} and extra["committee_size"] == "0"
    assert "nonlinear" in model.metadata().name
    structs = structures(m.elements)
    systems = systems_to_torch(structs, dtype=torch.float64)
    for opt in model.requested_neighbor_lists():
        NeighborList(opt, "angstrom").add_neighbor_list(systems)
    rng = np.random.default_rng(1)
    sel = [(k, a) for k, s in enumerate(structs) for a in range(len(s)) if rng.random() < 0.6]
    nodes = torchace.evaluate(m, structs)[K.NODE_ENERGY]
    starts = np.cumsum([0] + [len(s) for s in structs])
    idx = torch.tensor([starts[k] + a for k, a in sel])
    per_sys = torch.zeros(len(structs), dtype=nodes.dtype).index_add_(0, torch.tensor([k for k, _ in sel]), nodes[idx])
    for kind, want in (("atom", nodes[idx]), ("system", per_sys)):
        opts = ModelEvaluationOptions(length_unit="angstrom",
                                      outputs={"energy": ModelOutput(unit="eV", sample_kind=kind)},
                                      selected_atoms=Labels(["system", "atom"], torch.tensor(sel, dtype=torch.int32)))
        block = model(systems, opts, check_consistency=True)["energy"].block()
        if kind == "atom":
            assert block.samples.values.tolist() == [list(p) for p in sel]
        assert max_rel(block.values.detach().reshape(-1), want) < RTOL


@needs_metatomic
def test_metatomic_float32_and_committee_not_exported(tmp_path):
    import metatomic_ase

    m = build("mlp-learned")
    p32 = tmp_path / "m32.pt"
    torchace.export(m, p32, format="metatomic", dtype="float32")
    assert m.density_coefficients.dtype == torch.float64
    calc = metatomic_ase.MetatomicCalculator(str(p32), uncertainty_threshold=None)
    assert calc.model().capabilities().dtype == "float32"
    at = structures(m.elements)[0]
    at.calc = calc
    ref = torchace.evaluate(m, at)
    assert max_rel(at.get_potential_energy(), float(ref[K.ENERGY][0])) < 1e-5
    assert np.abs(at.get_forces() - ref[K.FORCES].numpy()).max() < 1e-3
    # a nonlinear model's committee is not exported (yet): a warning, and the energy output only
    m.committee = torch.zeros(2, m.basis_size, dtype=torch.float64)
    with pytest.warns(UserWarning, match="committee of a nonlinear model is not exported"):
        torchace.export(m, tmp_path / "c.pt", format="metatomic")
    calc = metatomic_ase.MetatomicCalculator(str(tmp_path / "c.pt"), uncertainty_threshold=None)
    assert set(calc.model().capabilities().outputs.keys()) == {"energy"}
    assert calc.model().metadata().extra["committee_size"] == "0"
    with pytest.warns(UserWarning, match="committee of a nonlinear model is not exported"):
        torchace.export(m, tmp_path / "c-ts.pt")
    assert read_metadata(str(tmp_path / "c-ts.pt"))["committee_size"] == 0


def test_torchscript_export_runs_without_torchace(tmp_path):
    """The archive runs in a process where torchace cannot be imported (torch.jit.load alone)."""
    from torchace.model.evaluate import model_inputs
    from torchace.structures.batch import collate

    m = build("fs-learned")
    ts = tmp_path / "m.pt"
    torchace.export(m, ts)
    at = structures(m.elements)[1]
    b = collate([at], m.config.numbers, m.rcut, dtype=torch.float64)
    args = [a.tolist() if isinstance(a, torch.Tensor) else a for a in model_inputs(m, b)]
    ref = torchace.evaluate(m, at)
    code = f"""
import sys, warnings
sys.modules["torchace"] = None  # any import of torchace now fails
warnings.simplefilter("ignore")
import torch
pos, sp, batch, ei, us, cell, n = {args!r}
t = torch.tensor
out = torch.jit.load({str(ts)!r})(t(pos, dtype=torch.float64), t(sp), t(batch), t(ei), t(us, dtype=torch.float64),
                                  t(cell, dtype=torch.float64), n, True, True)
print(repr(float(out["energy"][0])), repr(float(out["forces"].abs().max())), repr(float(out["virial"].abs().max())))
"""
    out = run([sys.executable, "-c", code], timeout=300)
    assert out.returncode == 0, out.stderr
    e, f, w = (float(x) for x in out.stdout.strip().splitlines()[-1].split())
    assert max_rel(e, float(ref[K.ENERGY][0])) < RTOL
    assert max_rel(f, float(ref[K.FORCES].abs().max())) < RTOL and max_rel(w, float(ref[K.VIRIAL].abs().max())) < RTOL


# ---- ASE calculator ----

def test_calculator_auto_backend_and_agreement(tmp_path):
    from torchace.calculators.ase import TorchACECalculator

    from torchace.model.backends import fused

    m = build("fs-learned")
    sel = torchace.backends.select(m, "cpu", "auto", "evaluate")
    reasons = torchace.backends.available(m)
    auto = "fused" if fused.available() else "analytic"  # the fused kernel evaluates nonlinear models too
    assert sel.name == auto and reasons["analytic"] is None and reasons["reference"] is None
    assert (reasons["fused"] is None) == fused.available() and "linear models only" in reasons["triton"]
    m.save(str(tmp_path / "nl.json"))
    ts = tmp_path / "nl.pt"
    torchace.export(m, ts)
    calcs = [TorchACECalculator(m), TorchACECalculator(str(tmp_path / "nl.json")),
             TorchACECalculator(m, backend="reference"), TorchACECalculator(str(ts), backend="torchscript")]
    assert [c.backend for c in calcs] == [auto, auto, "reference", "torchscript"]
    assert type(calcs[1].model).__name__ == "ACEModel"
    with pytest.raises(ValueError, match="linear models only"):
        TorchACECalculator(m, backend="triton")
    for at in structures(m.elements)[1:]:  # triclinic, cluster, slab
        ref = torchace.evaluate(m, at)
        for c in calcs:
            assert max_rel(c.get_potential_energy(at), float(ref[K.ENERGY][0])) < RTOL
            assert max_rel(c.get_forces(at), ref[K.FORCES].numpy()) < RTOL
            assert max_rel(c.get_property("energies", at), ref[K.NODE_ENERGY].numpy()) < RTOL
            if at.pbc.all():
                assert max_rel(c.get_stress(at), ref[K.STRESS][0].numpy()[VOIGT]) < RTOL
    assert "energy_std" not in calcs[0].implemented_properties


def test_calculator_stress_against_strain_differences_and_skin_reuse():
    """Stress vs central differences of the energy under symmetric strain (h = 1e-5); a reused neighbour list
    (skin) after small moves gives a fresh evaluation's numbers."""
    from torchace.calculators.ase import TorchACECalculator

    for name in ("fs-learned", "mlp-fixed"):
        m = build(name)
        calc = TorchACECalculator(m, skin=0.5)
        at = structures(m.elements)[1]  # triclinic
        at.calc = calc
        W = fd_virial(m, at, h=1e-5)
        fd_stress = -W / at.get_volume()
        got = at.get_stress(voigt=False)
        assert np.abs(got - fd_stress).max() < 1e-7 * max(1.0, np.abs(fd_stress).max()), (name, got, fd_stress)
        rng = np.random.default_rng(0)
        for _ in range(3):
            at.positions += rng.normal(scale=0.03, size=at.positions.shape)
            ref = torchace.evaluate(m, at)
            assert max_rel(at.get_forces(), ref[K.FORCES].numpy()) < RTOL
            assert max_rel(at.get_stress(), ref[K.STRESS][0].numpy()[VOIGT]) < RTOL
        assert calc.n_neighbour_list_builds == 1


# ---- command line ----

def test_cli_evaluate_and_errors_with_a_nonlinear_model(tmp_path, capsys):
    from ase.io import write

    from torchace.cli import main

    m = build("fs-learned")
    model = tmp_path / "nl.json"
    m.save(str(model))
    ds = labelled_dataset(3)
    data = tmp_path / "d.xyz"
    write(str(data), [s.atoms for s in ds], format="extxyz")
    out = tmp_path / "out.json"
    assert main(["evaluate", str(data), "--model", str(model), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    from torchace.model.backends import fused

    auto = "fused" if fused.available() else "analytic"
    assert f"backend {auto}" in text and "densities=2" in text and "E rmse" in text
    report = json.loads(out.read_text())
    from ase.io import read

    structs = read(str(data), ":")  # as written (extxyz rounds positions)
    ref = torchace.evaluate(m, structs)
    assert report["backends"] == {"evaluate": auto} and report["basis_size"] == m.basis_size
    assert max_rel([r["energy"] for r in report["results"]], ref[K.ENERGY].numpy()) < RTOL
    assert max_rel(np.concatenate([r["forces"] for r in report["results"]]), ref[K.FORCES].numpy()) < RTOL
    assert max_rel([r["virial"] for r in report["results"]], ref[K.VIRIAL].numpy()) < RTOL
    want = torchace.errors(m, str(data))
    assert set(report["errors"]) == set(want)
    for group, qs in want.items():
        for q, v in qs.items():
            assert (report["errors"][group][q] is None) == (v is None)
            if v is not None:
                assert max_rel(torch.tensor([report["errors"][group][q][s] for s in ("rmse", "mae")]),
                               torch.tensor([v["rmse"], v["mae"]])) < 1e-10
    # another backend, and the refusals: the Triton kernels and design rows are for linear models
    assert main(["evaluate", str(data), "--model", str(model), "--backend", "reference"]) == 0
    assert "backend reference" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="linear models only"):
        main(["evaluate", str(data), "--model", str(model), "--backend", "triton"])
    with pytest.raises(SystemExit, match="no design-matrix rows"):
        main(["evaluate", str(data), "--model", str(model), "--rows"])


def test_cli_export_of_a_nonlinear_model(tmp_path, capsys):
    from torchace.cli import main

    m = build("mlp-learned")
    model = tmp_path / "nl.json"
    m.save(str(model))
    assert main(["export", str(model), str(tmp_path / "nl.pt"), "--format", "torchscript"]) == 0
    assert "densities=2" in capsys.readouterr().out
    module, meta = load_torchscript(str(tmp_path / "nl.pt"))
    at = structures(m.elements)[0]
    results_close(torchace.evaluate(m, at, module=module), torchace.evaluate(m, at), RTOL, keys=KEYS)
    assert meta["nonlinear"]["embedding"] == "mlp"
