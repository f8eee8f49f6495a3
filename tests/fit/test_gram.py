"""Gram-only streaming assembly, the dual (kernel) Tikhonov solver and the λ/prior scans (issue 27): the Gram
equals the dense system's, the residuals give the rows' RMSE, dual == primal (float64, 1e-10), a scan equals
separate fits, memory plans refuse with their numbers, and an interrupted assembly resumes to the same result.

Run as a script (``python tests/fit/test_gram.py CKPT``) it is the child that the kill test SIGKILLs mid-assembly.
"""
import copy
import json
import os
import signal
import sys

import pytest
import torch

import torchace
from torchace import priors
from torchace.fit.assembly import assemble
from torchace.fit.checkpoint import CheckpointMismatch
from torchace.fit.dual import TikhonovDual, assemble_kernel, lams_relative
from torchace.fit.gram import TikhonovGram, assemble_gram, mean_diag
from torchace.fit.streams import RowSource, stream_errors
from torchace.resources import ResourceLimitError

BATCH = 10  # atoms per batch: several batches (panels) even for these few structures
E0 = {"Si": -2.0, "Ge": -3.0}


@pytest.fixture(scope="module")
def data():
    from torchace.testing import labelled_dataset

    return list(labelled_dataset(6))


@pytest.fixture(scope="module")
def small():  # K = 138 < rows: the Gram path's case
    return torchace.ace_model(["Si", "Ge"], 2, 6, E0=E0)


@pytest.fixture(scope="module")
def wide():  # K = 648 > the rows of three structures: the dual path's case
    return torchace.ace_model(["Si", "Ge"], 3, 8, E0=E0)


def _rel(a, b):
    return float((a - b).norm() / b.norm())


def _dense(model, structs, fit_e0):
    s = assemble(model, structs, batch_atoms=BATCH)
    M = torch.cat([s.A, s.e0_columns], 1) if fit_e0 else s.A
    return M.to(torch.float64), s.y.to(torch.float64)


@pytest.mark.parametrize("fit_e0", [False, True])
def test_gram_equals_dense_assembly(small, data, fit_e0):
    train, test = data[:4], data[4:]
    g = assemble_gram(small, train, errors={"test": test, "allF": (data, ("F",))}, fit_e0=fit_e0,
                      batch_atoms=BATCH)
    M, y = _dense(small, train, fit_e0)
    assert g.n_obs == M.shape[0] and g.width == M.shape[1]
    assert _rel(g.G, M.T @ M) < 1e-13 and _rel(g.b, M.T @ y) < 1e-13
    assert abs(g.yty - float(y @ y)) <= 1e-13 * float(y @ y)
    # the residuals (rows for E/V: fewer than K; moments for F) give the per-atom RMSE of the dense rows
    assert g.errors["test"]["E"].rows is not None and g.errors["allF"]["F"].G is not None
    C = torch.randn(g.width, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    src = RowSource.errors(small, test, fit_e0=fit_e0, batch_atoms=BATCH)
    streamed = stream_errors(src, C[:g.n_basis], C[g.n_basis:] if fit_e0 else None)
    table = g.error_table(C)
    for kind in ("E", "F", "V"):
        assert torch.allclose(table[f"test_{kind}"], streamed[kind], rtol=1e-10, atol=0)
    sq = torch.tensor([s.n_atoms for s in test if s.energy is not None], dtype=torch.float64)
    Et = torch.tensor([s.energy - sum(E0[x] for x in s.atoms.get_chemical_symbols()) for s in test],
                      dtype=torch.float64)
    rows = torch.cat([torchace.fit.design_matrix_rows(small, [s.atoms])["energy"] for s in test])
    if fit_e0:  # the E0 corrections act on the element counts
        counts = torch.tensor([[list(s.atoms.numbers).count(z) for z in small.config.numbers] for s in test],
                              dtype=torch.float64)
        rows = torch.cat([rows, counts], 1)
    by_hand = torch.sqrt((((rows @ C - Et[:, None]) / sq[:, None]) ** 2).mean(0))
    assert torch.allclose(table["test_E"], by_hand, rtol=1e-10, atol=0)


@pytest.mark.parametrize("fit_e0", [False, True])
@pytest.mark.parametrize("keep_rows, method", [(True, "eigh"), (False, "cholesky")])
def test_dual_equals_primal(wide, data, fit_e0, keep_rows, method):
    train = data[:3]
    gamma = priors.gaussian(1.0).column_scale(wide)
    g = assemble_gram(wide, train, fit_e0=fit_e0, batch_atoms=BATCH)
    assert wide.basis_size > g.n_obs  # K > rows: what the dual is for
    unit = mean_diag(g, gamma)
    lams = [unit * 1e-3, unit * 1e-1, unit * 10]
    primal = TikhonovGram(g, gamma, method="cholesky").solve(lams)
    ks = assemble_kernel(wide, train, gamma=gamma, fit_e0=fit_e0, batch_atoms=BATCH, keep_rows=keep_rows)
    assert len(ks.source.batches) > 2 and (ks.kept is not None) == keep_rows
    assert abs(lams_relative(ks) / unit - 1) < 1e-12  # one unit of λ for both forms
    kernel = ks.kernel.clone()
    dual = TikhonovDual(ks, method=method).solve(lams)
    assert torch.equal(ks.kernel, kernel) and torch.equal(kernel, kernel.T)  # symmetric, and left as it was
    for j in range(len(lams)):
        assert _rel(dual[:, j], primal[:, j]) < 1e-10, (j, _rel(dual[:, j], primal[:, j]))
    eigh = TikhonovGram(g, gamma, method="eigh").solve(lams)  # all λ from one eigendecomposition, E0 eliminated
    assert max(_rel(eigh[:, j], primal[:, j]) for j in range(len(lams))) < 1e-10


def test_scan_equals_separate_fits(small, data):
    train, val, test = data[:3], data[3:5], data[5:]
    g = assemble_gram(small, train, errors={"validation": val, "test": test}, batch_atoms=BATCH)
    lams = [1e-5, 1e-3, 1e-1]
    ps = {"none": None, "gauss": priors.gaussian(1.0), "alg": priors.algebraic_smoothness(p=3)}
    res = torchace.fit.scan(g, lams, priors=ps, model=small)
    assert len(res.table) == 9 and res.best == min(res.table, key=lambda r: r["validation_F"])
    assert res.best_test == min(res.table, key=lambda r: r["test_F"])
    val_src = RowSource.errors(small, val, batch_atoms=BATCH)
    for name in ("gauss", "alg"):
        row = next(r for r in res.table if r["prior"] == name and r["lam_rel"] == 1e-3)
        m = torchace.ace_model(["Si", "Ge"], 2, 6, E0=E0)
        torchace.fit(m, train, prior=ps[name], solver=torchace.fit.solvers.QR(lam=row["lam"] ** 0.5),
                     batch_atoms=BATCH, compute_errors=False)
        c = m.coefficients.detach().to(torch.float64)
        if name == "gauss":  # a basis prior is fitted on the rescaled basis: back to the unscaled one
            c = c / ps[name].column_scale(small)
        C = TikhonovGram(g, ps[name].column_scale(small)).solve([row["lam"]])[:, 0]
        assert _rel(C, c) < 1e-9
        assert abs(stream_errors(val_src, c[:, None])["F"][0] / row["validation_F"] - 1) < 1e-9
    # the chosen solution goes into a model, and the table to JSON
    m = torchace.ace_model(["Si", "Ge"], 2, 6, E0=E0)
    res.apply(m)
    assert torch.equal(m.coefficients.to(torch.float64), res.coefficients)


def test_scan_data_resumes_from_its_checkpoints(wide, data, tmp_path):
    kw = dict(validation=data[3:5], test=data[5:], fit_e0=True, batch_atoms=BATCH, checkpoint_dir=str(tmp_path),
              priors={"none": None, "gauss": priors.gaussian(0.5)})
    for form, files in (("gram", ["gram.npz"]), ("dual", ["kernel_0.npz", "kernel_1.npz"])):
        # fresh copies: scan_data puts the fitted E0 into its model, and other E0 are other targets (a mismatch)
        first = torchace.fit.scan_data(copy.deepcopy(wide), data[:3], [1e-3, 1e-1], form=form, **kw)
        assert sorted(f for f in os.listdir(tmp_path) if f.startswith(files[0][:4])) == files
        again = torchace.fit.scan_data(copy.deepcopy(wide), data[:3], [1e-3, 1e-1], form=form, **kw)  # read back
        assert again.table == first.table and torch.equal(again.coefficients, first.coefficients)


def test_scan_dual_equals_scan_and_json(wide, data, tmp_path):
    train, val, test = data[:3], data[3:5], data[5:]
    errors = {"validation": (val, ("E", "F")), "test": (test, ("F",))}
    ps = {"none": None, "gauss": priors.gaussian(0.5)}
    lams = [1e-3, 1e-1]
    g = assemble_gram(wide, train, errors=errors, fit_e0=True, batch_atoms=BATCH)
    a = torchace.fit.scan(g, lams, priors=ps, model=wide)
    b = torchace.fit.scan_dual(wide, train, lams, errors=errors, priors=ps, fit_e0=True, batch_atoms=BATCH)
    assert [r["prior"] for r in a.table] == [r["prior"] for r in b.table]
    assert set(b.info["seconds"]) == {"none", "gauss", "errors"}  # one error pass for both priors
    for ra, rb in zip(a.table, b.table):
        for k in ("lam", "validation_E", "validation_F", "test_F"):
            assert abs(ra[k] / rb[k] - 1) < 1e-9, (k, ra, rb)
    b.to_json(str(tmp_path / "scan.json"))
    doc = json.loads((tmp_path / "scan.json").read_text())
    assert doc["select"] == "validation_F" and len(doc["table"]) == 4 and doc["best"] == b.best


def test_dual_rows_spilled_to_disk(wide, data, tmp_path):
    ref = assemble_kernel(wide, data[:3], fit_e0=True, batch_atoms=BATCH, keep_rows=True)
    ks = assemble_kernel(wide, data[:3], fit_e0=True, batch_atoms=BATCH, keep_rows=False, spill=str(tmp_path))
    files = sorted(os.listdir(tmp_path))
    assert len(files) == len(ks.source.batches) and all(f.endswith(".npy") for f in files)
    assert torch.equal(ks.kernel, ref.kernel)
    lam = [lams_relative(ref) * 1e-2]
    assert torch.equal(TikhonovDual(ks, method="eigh").solve(lam), TikhonovDual(ref, method="eigh").solve(lam))
    ks.remove_spill()
    assert not os.listdir(tmp_path)


def test_memory_plans_refuse_with_numbers(small, wide, data):
    with pytest.raises(ResourceLimitError, match=r"K = 138 basis columns and 210 rows needs .*Gram matrix.*"
                                                 r"more than the .* available"):
        assemble_gram(small, data, batch_atoms=BATCH, available=100_000)
    with pytest.raises(ResourceLimitError, match=r"dual .* K = 648 basis columns and 105 rows .*kernel"):
        assemble_kernel(wide, data[:3], batch_atoms=BATCH, keep_rows=False, available=10_000)
    # "auto" drops the kept rows (8·n·K bytes) before refusing
    ks = assemble_kernel(wide, data[:3], batch_atoms=BATCH, available=dual_need(wide, data[:3]) + 1000)
    assert ks.kept is None and "kept rows" not in ks.plan.parts


def dual_need(model, structs):
    from torchace.fit.dual import dual_plan

    return dual_plan(RowSource(model, structs, batch_atoms=BATCH), False, available=0).need


class Crash(Exception):
    pass


def _crash_at(n):
    def hook(done, state):
        if done == n:
            raise Crash

    return hook


def test_gram_resume_after_interruption(small, data, tmp_path):
    ckpt = str(tmp_path / "gram.npz")
    kw = dict(errors={"test": data[4:]}, fit_e0=True, batch_atoms=BATCH)
    ref = assemble_gram(small, data[:4], **kw)
    with pytest.raises(Crash):
        assemble_gram(small, data[:4], checkpoint=ckpt, every=2, on_step=_crash_at(3), **kw)
    seen = []
    res = assemble_gram(small, data[:4], checkpoint=ckpt, every=2, on_step=lambda n, s: seen.append(n), **kw)
    assert seen[0] == 3  # batch 3 was lost with the crash, 2 were on disk
    assert torch.equal(res.G, ref.G) and torch.equal(res.b, ref.b) and res.yty == ref.yty
    for k, r in ref.errors["test"].items():
        C = torch.ones(res.width, 1, dtype=torch.float64)
        assert torch.equal(res.errors["test"][k].sse(C), r.sse(C))
    with pytest.raises(CheckpointMismatch, match="fit_e0"):
        assemble_gram(small, data[:4], checkpoint=ckpt, **dict(kw, fit_e0=False))


def test_dual_resume_after_interruption(wide, data, tmp_path):
    ckpt = str(tmp_path / "kernel.npz")
    gamma = priors.gaussian(1.0).column_scale(wide)
    ref = assemble_kernel(wide, data[:3], gamma=gamma, fit_e0=True, batch_atoms=BATCH)
    with pytest.raises(Crash):
        assemble_kernel(wide, data[:3], gamma=gamma, fit_e0=True, batch_atoms=BATCH, checkpoint=ckpt,
                        on_step=_crash_at(2))
    res = assemble_kernel(wide, data[:3], gamma=gamma, fit_e0=True, batch_atoms=BATCH, checkpoint=ckpt)
    assert torch.equal(res.kernel, ref.kernel) and torch.equal(res.y, ref.y) and torch.equal(res.Z, ref.Z)
    lam = [lams_relative(ref) * 1e-2]
    assert torch.equal(TikhonovDual(res).solve(lam), TikhonovDual(ref).solve(lam))
    with pytest.raises(CheckpointMismatch, match="gamma"):
        assemble_kernel(wide, data[:3], fit_e0=True, batch_atoms=BATCH, checkpoint=ckpt)


def test_split():
    parts = torchace.fit.split(range(10), (0.6, 0.2, 0.2), seed=1)
    assert [len(p) for p in parts] == [6, 2, 2] and sorted(sum(parts, [])) == list(range(10))
    with pytest.raises(ValueError, match="sum to at most 1"):
        torchace.fit.split(range(10), (0.8, 0.4))


@pytest.mark.parametrize("e0", [None, E0])
def test_regularity_study_numbers_unchanged(small, data, e0):
    """analysis.regularity on the Gram path gives the numbers of its former dense-rows algebra (rebuilt here)."""
    from torchace.analysis import regularity as R

    train, test = data[:4], data[4:]
    sys_ = R.assemble(small, train, test, None, e0)
    gamma = R.gamma_of(small, priors.gaussian(1.0), sys_.n_e0)
    new = R.scan(sys_, gamma, [-4, -3, -2], refine=False)  # measured: 1e-13 (F) to 8e-11 (E, 1e-4) apart
    ref_model = torchace.ace_model(["Si", "Ge"], 2, 6, E0=e0 or {"Si": 0.0, "Ge": 0.0})
    M, y = _dense(ref_model, train, e0 is None)  # the former algebra: dense rows, then one Cholesky per λ
    G, b, n_e0 = M.T @ M, M.T @ y, sys_.n_e0

    def rows(structs):  # unweighted force rows and per-atom energy rows, padded with zero E0 columns
        r = torchace.fit.design_matrix_rows(ref_model, [s.atoms for s in structs])
        pad = torch.zeros(r["forces"].shape[0], n_e0, dtype=torch.float64)
        F = (torch.cat([r["forces"], pad], 1), torch.cat([torch.as_tensor(s.forces).reshape(-1) for s in structs]))
        n = torch.tensor([s.n_atoms for s in structs], dtype=torch.float64)
        counts = torch.tensor([[list(s.atoms.numbers).count(z) for z in ref_model.config.numbers] for s in structs],
                              dtype=torch.float64)[:, :n_e0]
        Et = torch.tensor([s.energy - float(ref_model.reference_energy(s.atoms.numbers)) for s in structs],
                          dtype=torch.float64)
        return F, (torch.cat([r["energy"], counts], 1) / n[:, None], Et / n)

    (trF, _), (teF, teE) = rows(train), rows(test)
    rmse = lambda A, t, c: float(torch.sqrt(torch.mean((A @ c - t) ** 2)))  # noqa: E731
    d = torch.cat([torch.ones(small.basis_size), torch.zeros(n_e0)]).to(torch.float64)
    for r in new:
        Gs = G / gamma[:, None] / gamma[None, :] + r["lam"] * torch.diag(d)
        c = torch.cholesky_solve((b / gamma)[:, None], torch.linalg.cholesky(Gs))[:, 0] / gamma
        for key, (A, t) in (("train_F", trF), ("test_F", teF), ("test_E", teE)):
            assert abs(r[key] / rmse(A, t, c) - 1) < 1e-9, (key, r[key], rmse(A, t, c))


def _scan_config(**scan):
    return {"model": {"elements": ["Si"], "order": 2, "totaldegree": 8, "rcut": 5.5},
            "data": {"train": "@bundled/zuo2020/Si_test.xyz.gz"}, "E0": "fit",
            "weights": {"default": {"E": 30, "F": 1, "V": 0}}, "scan": scan}


@pytest.mark.parametrize("bad, match", [
    ({"lams": []}, "scan.lams"), ({"lams": [1.0, -1.0]}, r"scan.lams\[1\]"), ({"validation": 1.5}, "scan.validation"),
    ({"form": "primal"}, "scan.form"), ({"select": "test_F"}, "scan.select"),
    ({"priors": {"g": {"name": "gaussian", "sigma": -1}}}, "sigma"), ({"solver": 1}, "unknown key"),
    ({"checkpoint_dir": "nowhere"}, "scan.checkpoint_dir")])
def test_scan_config_checked_when_loaded(tmp_path, bad, match):
    from torchace.fit.config import FitConfig

    with pytest.raises(ValueError, match=match):
        FitConfig.from_dict(_scan_config(**bad), str(tmp_path))
    with pytest.raises(ValueError, match=r"remove \['solver'\]"):
        FitConfig.from_dict(dict(_scan_config(), solver={"name": "BLR"}), str(tmp_path))


def test_scan_from_the_fit_config(tmp_path):
    import yaml

    from torchace.cli import main

    (tmp_path / "ckpt").mkdir()
    cfg = _scan_config(lams=[1e-8, 1e-4], priors={"none": None, "g": {"name": "gaussian", "sigma": 0.5}},
                       validation=0.3, checkpoint_dir="ckpt")
    cfg["output"] = {"model": "m.json", "errors": "e.json", "log": None}
    (tmp_path / "fit.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["fit", str(tmp_path / "fit.yaml"), "-q"]) == 0
    report = json.loads((tmp_path / "e.json").read_text())
    assert len(report["scan"]["table"]) == 4 and report["scan"]["best"]["prior"] in ("none", "g")
    assert os.listdir(tmp_path / "ckpt") == ["gram.npz"]  # a second run would resume from it
    model = torchace.load(str(tmp_path / "m.json"))
    assert float(model.coefficients.detach().abs().sum()) > 0
    assert model.metadata["scan"]["best"] == report["scan"]["best"]


def _gram_child_args():
    from torchace.testing import labelled_dataset

    model = torchace.ace_model(["Si", "Ge"], 2, 6, E0=E0)
    data = list(labelled_dataset(6))
    return model, data[:4], dict(errors={"test": data[4:]}, fit_e0=True, batch_atoms=BATCH)


# a child process killed mid-assembly (4 s on 2 cores)
def test_gram_resume_after_sigkill(tmp_path):
    from torchace.testing import run

    ckpt = str(tmp_path / "gram.npz")
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))  # threaded sums round by thread count
    p = run([sys.executable, __file__, ckpt], env=env, timeout=300)
    assert p.returncode == -signal.SIGKILL, p.stderr
    model, train, kw = _gram_child_args()
    seen = []
    res = assemble_gram(model, train, checkpoint=ckpt, on_step=lambda n, s: seen.append(n), **kw)
    ref = assemble_gram(model, train, **kw)
    assert seen[0] == 4  # three steps were on disk when the child died
    assert torch.equal(res.G, ref.G) and torch.equal(res.b, ref.b)
    C = torch.ones(res.width, 1, dtype=torch.float64)
    assert all(torch.equal(res.errors["test"][k].sse(C), r.sse(C)) for k, r in ref.errors["test"].items())


if __name__ == "__main__":  # child of test_gram_resume_after_sigkill
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))

    def die(n, state):
        if n == 3:
            os.kill(os.getpid(), signal.SIGKILL)

    m, tr, kw = _gram_child_args()
    assemble_gram(m, tr, checkpoint=sys.argv[1], on_step=die, **kw)
    sys.exit(3)  # not reached
