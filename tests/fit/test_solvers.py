"""Linear least-squares solvers (torchace.solvers) against numpy/scipy/sklearn and closed forms."""
import math

import numpy as np
import pytest
import torch

from torchace.fit.solvers import ARD, BLR, LSQR, QR, RRQR, TruncatedSVD
from torchace.fit.solvers.base import Solver, SolveResult, committee_std

F64 = torch.float64


def T(a, device):
    return torch.as_tensor(np.asarray(a), dtype=F64, device=device)


def N(t):
    return t.detach().cpu().numpy()


def rel(a, b):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300)


def conditioned(rng, m, k, cond):
    """m×k matrix with singular values logspaced from 1 to 1/cond."""
    U, _ = np.linalg.qr(rng.standard_normal((m, k)))
    V, _ = np.linalg.qr(rng.standard_normal((k, k)))
    return (U * np.logspace(0, -math.log10(cond), k)) @ V.T


def problem(seed=0, m=200, k=20, noise=0.1, cond=None):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((m, k)) if cond is None else conditioned(rng, m, k, cond) * math.sqrt(m)
    c = rng.standard_normal(k)
    return A, A @ c + noise * rng.standard_normal(m), c


def reduced(A, y):
    """(R, Qᵀy, n_obs, ‖y‖² − ‖Qᵀy‖²), the equivalent k×k system."""
    Q, R = torch.linalg.qr(A)
    z = Q.T @ y
    return R, z, A.shape[0], float(y @ y - z @ z)


def log_gauss(A, y, noise_var, prior_var):
    """log N(y | 0, noise_var I + prior_var A Aᵀ), directly (small m only)."""
    C = noise_var * np.eye(len(y)) + prior_var * A @ A.T
    _, logdet = np.linalg.slogdet(C)
    return -0.5 * (y @ np.linalg.solve(C, y) + logdet + len(y) * math.log(2 * math.pi))


# ---------------------------------------------------------------- QR

def test_qr_matches_lstsq_and_normal_equations(device):
    A, y, _ = problem(cond=1e4)
    res = QR().solve(T(A, device), T(y, device))
    assert isinstance(res, SolveResult) and res.coefficients.device.type == device
    assert res.coefficients.dtype == F64
    assert rel(N(res.coefficients), np.linalg.lstsq(A, y, rcond=None)[0]) < 1e-10
    k = A.shape[1]
    gamma = np.linspace(0.5, 2.0, k)
    Pfull = np.random.default_rng(1).standard_normal((k + 3, k))
    for lam, P in [(0.3, None), (0.3, gamma), (2.0, Pfull)]:
        PP = np.eye(k) if P is None else (np.diag(P) if P.ndim == 1 else P)
        ref = np.linalg.solve(A.T @ A + lam ** 2 * PP.T @ PP, A.T @ y)  # ‖Ac − y‖² + lam²‖Pc‖²
        c = QR(lam=lam, Gamma=None if P is None else T(P, device)).solve(T(A, device), T(y, device))
        assert rel(N(c.coefficients), ref) < 1e-10
        assert c.hyperparameters["lam"] == lam
    with pytest.raises(ValueError, match="underdetermined"):
        QR().solve(T(A[:5], device), T(y[:5], device))


def test_input_validation():
    A = torch.randn(10, 3, dtype=F64)
    with pytest.raises(ValueError):
        QR().solve(A, torch.randn(9, dtype=F64))
    with pytest.raises(ValueError):
        QR().solve(A[0], torch.randn(3, dtype=F64))
    with pytest.raises(ValueError, match="n_obs"):
        QR().solve(A, torch.randn(10, dtype=F64), n_obs=5)
    with pytest.raises(ValueError, match="method"):
        BLR(method="qr").solve(A, torch.randn(10, dtype=F64))
    with pytest.raises(ValueError, match="backend"):
        RRQR(backend="lapack").solve(A, torch.randn(10, dtype=F64))
    with pytest.raises(ValueError, match="validation"):
        QR().solve(A, torch.randn(10, dtype=F64), validation=(A[:, :2], torch.randn(10, dtype=F64)))
    with pytest.raises(NotImplementedError):
        Solver().solve(A, torch.randn(10, dtype=F64))


# ---------------------------------------------------------------- LSQR

def test_lsqr_matches_scipy_and_converges(device):
    spl = pytest.importorskip("scipy.sparse.linalg")
    A, y, _ = problem(seed=2, m=150, k=30, cond=1e3)
    At, yt = T(A, device), T(y, device)
    for damp in (0.0, 0.7):
        for iters in (2, 5):  # same Krylov iterates as scipy (later ones amplify rounding, in scipy too)
            ours = LSQR(damp=damp, atol=1e-14, btol=1e-14, maxiter=iters).solve(At, yt)
            ref = spl.lsqr(A, y, damp=damp, atol=1e-14, btol=1e-14, iter_lim=iters)
            assert ours.info["iterations"] == ref[2] == iters
            assert rel(N(ours.coefficients), ref[0]) < 1e-10
        ours = LSQR(damp=damp, atol=1e-14, btol=1e-14, conlim=1e12, maxiter=500).solve(At, yt)
        ref = spl.lsqr(A, y, damp=damp, atol=1e-14, btol=1e-14, conlim=1e12, iter_lim=500)
        assert ours.info["istop"] == ref[1] and ours.info["istop"] in (1, 2)
        assert rel(N(ours.coefficients), ref[0]) < 1e-8
        # converged LSQR(damp=d) is the QR Tikhonov solution with lam = d
        assert rel(N(ours.coefficients), N(QR(lam=damp).solve(At, yt).coefficients)) < 1e-8
    assert rel(N(ours.coefficients), np.linalg.solve(A.T @ A + 0.49 * np.eye(30), A.T @ y)) < 1e-8
    zero = LSQR().solve(At, torch.zeros_like(yt))
    assert zero.info["istop"] == 0 and float(zero.coefficients.abs().max()) == 0


# ---------------------------------------------------------------- RRQR, truncated SVD

def rank_deficient(seed=4, m=120, k=30, r=12):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((m, r)) @ rng.standard_normal((r, k))
    A[:, 5] = A[:, 3]  # exactly repeated column as in redundant basis functions
    return A, rng.standard_normal(m), r


@pytest.mark.parametrize("solver", [RRQR(), RRQR(backend="torch"), TruncatedSVD(), TruncatedSVD(rtol=1e-10)])
def test_rank_deficient_residual_and_rank(solver, device):
    A, y, r = rank_deficient()
    c_ref = np.linalg.lstsq(A, y, rcond=None)[0]
    res = solver.solve(T(A, device), T(y, device))
    assert res.hyperparameters["rank"] == r
    rss_ref = np.sum((A @ c_ref - y) ** 2)
    assert abs(res.info["rss"] - rss_ref) < 1e-9 * rss_ref
    assert abs(np.sum((A @ N(res.coefficients) - y) ** 2) - rss_ref) < 1e-9 * rss_ref
    if isinstance(solver, TruncatedSVD):  # TSVD is the minimum-norm solution, as lstsq
        assert rel(N(res.coefficients), c_ref) < 1e-8
    else:  # RRQR's basic solution: exactly k − r coefficients are zero
        assert int((res.coefficients == 0).sum()) == A.shape[1] - r


def test_tsvd_rank_and_rtol_options(device):
    A, y, _ = problem(seed=5, m=60, k=10, cond=1e6)
    U, s, Vt = np.linalg.svd(A, full_matrices=False)
    for rank in (1, 4, 10):
        ref = Vt[:rank].T @ ((U[:, :rank].T @ y) / s[:rank])
        res = TruncatedSVD(rank=rank).solve(T(A, device), T(y, device))
        assert res.hyperparameters["rank"] == rank and rel(N(res.coefficients), ref) < 1e-10
    res = TruncatedSVD(rtol=1e-3).solve(T(A, device), T(y, device))
    assert res.hyperparameters["rank"] == int(np.sum(s > 1e-3 * s[0]))
    # defaults keep every numerically non-zero singular value (eps·max(m, k) relative), as lstsq
    A, y, _ = problem(seed=5, m=60, k=10, cond=1e11)
    for solver in (TruncatedSVD(), RRQR()):
        res = solver.solve(T(A, device), T(y, device))
        assert res.hyperparameters["rank"] == 10
        assert rel(N(res.coefficients), np.linalg.lstsq(A, y, rcond=None)[0]) < 1e-3


def test_tsvd_validation_selects_signal_rank(device):
    rng = np.random.default_rng(0)
    m, k, r = 300, 25, 7
    s = 10.0 ** (-np.arange(k) / 5)
    V, _ = np.linalg.qr(rng.standard_normal((k, k)))
    U, _ = np.linalg.qr(rng.standard_normal((m, k)))
    A = (U * s) @ V.T
    c = V[:, :r] @ (rng.standard_normal(r) + 3)  # the signal lives in the top r singular directions
    y = A @ c + 1e-2 * rng.standard_normal(m)
    Av = (rng.standard_normal((100, k)) * s) @ V.T
    yv = Av @ c
    res = TruncatedSVD().solve(T(A, device), T(y, device), validation=(T(Av, device), T(yv, device)))
    chosen = res.hyperparameters["rank"]
    assert r <= chosen <= r + 2
    curve = N(res.info["validation_rmse_by_rank"])
    for j in (1, r, k):  # the curve is the validation RMSE of each truncation
        cj = N(TruncatedSVD(rank=j).solve(T(A, device), T(y, device)).coefficients)
        assert abs(curve[j - 1] - np.sqrt(np.mean((Av @ cj - yv) ** 2))) < 1e-10 * curve[j - 1]
    assert curve[chosen - 1] == curve.min() < 0.7 * curve[-1]
    assert abs(res.info["validation_rmse"] - curve.min()) < 1e-12


# ---------------------------------------------------------------- BLR

@pytest.mark.parametrize("shape,cond,noise", [((80, 12), None, 0.3), ((60, 15), 1e8, 0.3), ((20, 30), None, 3.0)])
def test_blr_svd_cholesky_agree_and_maximise_evidence(shape, cond, noise, device):
    m, k = shape  # the last: underdetermined, noisy enough for an interior evidence maximum
    A, y, _ = problem(seed=6, m=m, k=k, noise=noise, cond=cond)
    svd = BLR(method="svd").solve(T(A, device), T(y, device))
    cho = BLR(method="cholesky").solve(T(A, device), T(y, device))
    assert rel(N(svd.coefficients), N(cho.coefficients)) < 1e-8
    for key in ("noise_var", "prior_var", "log_evidence"):
        assert abs(svd.hyperparameters[key] - cho.hyperparameters[key]) < 1e-8 * abs(svd.hyperparameters[key])
    assert not svd.info["at_bound"]
    h = svd.hyperparameters
    # the reported log evidence is log N(y | 0, noise_var I + prior_var A Aᵀ), and it is a maximum
    best = log_gauss(A, y, h["noise_var"], h["prior_var"])
    assert abs(best - h["log_evidence"]) < 1e-8 * abs(best)
    for fn, fp in [(1.02, 1), (0.98, 1), (1, 1.05), (1, 0.95), (1.02, 1.05)]:
        assert log_gauss(A, y, fn * h["noise_var"], fp * h["prior_var"]) < best
    # the posterior mean for these hyper-parameters
    ref = np.linalg.solve(A.T @ A + h["noise_var"] / h["prior_var"] * np.eye(k), A.T @ y)
    assert rel(N(svd.coefficients), ref) < 1e-8


def test_blr_recovers_noise(device):
    A, y, c = problem(seed=7, m=3000, k=25, noise=0.2)
    res = BLR().solve(T(A, device), T(y, device))
    assert abs(res.hyperparameters["noise_var"] / 0.04 - 1) < 0.2
    assert 0.1 < res.hyperparameters["prior_var"] < 10  # c ~ N(0, 1)
    assert rel(N(res.coefficients), c) < 0.05


def test_blr_matches_sklearn_bayesian_ridge():
    linear_model = pytest.importorskip("sklearn.linear_model")
    A, y, _ = problem(seed=8, m=100, k=15, noise=0.5, cond=1e3)
    tiny = 1e-12  # (almost) flat Gamma hyper-priors: sklearn becomes the pure evidence maximiser
    sk = linear_model.BayesianRidge(fit_intercept=False, tol=1e-14, max_iter=100000, alpha_1=tiny,
                                    alpha_2=tiny, lambda_1=tiny, lambda_2=tiny).fit(A, y)
    res = BLR().solve(T(A, "cpu"), T(y, "cpu"))
    assert rel(N(res.coefficients), sk.coef_) < 1e-6
    assert abs(res.hyperparameters["noise_var"] * sk.alpha_ - 1) < 1e-6
    assert abs(res.hyperparameters["prior_var"] * sk.lambda_ - 1) < 1e-6


# ---------------------------------------------------------------- ARD

def sparse_problem(seed=9, m=300, k=30, nnz=6, noise=0.05):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((m, k))
    c = np.zeros(k)
    support = rng.choice(k, nnz, replace=False)
    c[support] = rng.choice([-1, 1], nnz) * rng.uniform(1, 3, nnz)
    return A, A @ c + noise * rng.standard_normal(m), c


def test_ard_recovers_sparse_truth(device):
    A, y, c = sparse_problem()
    res = ARD(tol=1e-10, max_iter=1000).solve(T(A, device), T(y, device))
    coef = N(res.coefficients)
    assert np.array_equal(coef != 0, c != 0)  # pruned exactly
    assert res.hyperparameters["n_active"] == int(np.sum(c != 0))
    assert np.all(N(res.hyperparameters["prior_var"])[c == 0] == 0)
    assert np.max(np.abs(coef - c)) < 0.02
    assert abs(res.hyperparameters["noise_var"] / 0.05 ** 2 - 1) < 0.3
    # on the active set, the posterior mean for the final hyper-parameters
    act = c != 0
    pv = N(res.hyperparameters["prior_var"])[act]
    ref = np.linalg.solve(A[:, act].T @ A[:, act] / res.hyperparameters["noise_var"] + np.diag(1 / pv),
                          A[:, act].T @ y / res.hyperparameters["noise_var"])
    assert rel(coef[act], ref) < 1e-10


def test_ard_matches_sklearn():
    linear_model = pytest.importorskip("sklearn.linear_model")
    A, y, _ = sparse_problem(seed=10, m=200, k=20, nnz=5, noise=0.1)
    sk = linear_model.ARDRegression(fit_intercept=False, tol=1e-10, max_iter=1000).fit(A, y)
    res = ARD(tol=1e-10, max_iter=1000).solve(T(A, "cpu"), T(y, "cpu"))
    assert np.array_equal(N(res.coefficients) != 0, sk.coef_ != 0)
    assert rel(N(res.coefficients), sk.coef_) < 1e-6
    assert abs(res.hyperparameters["noise_var"] * sk.alpha_ - 1) < 1e-6


# ---------------------------------------------------------------- dense vs reduced system

@pytest.mark.parametrize("solver", [QR(), QR(lam=0.5, Gamma=torch.linspace(1, 3, 20, dtype=F64)),
                                    BLR(), BLR(method="cholesky"), ARD(tol=1e-10), TruncatedSVD(rtol=1e-6),
                                    TruncatedSVD(rank=9), RRQR()])
def test_dense_and_reduced_systems_agree(solver, device):
    if isinstance(solver, ARD):
        A, y, _ = sparse_problem(seed=11, m=250, k=20, nnz=6)
    else:
        A, y, _ = problem(seed=11, m=250, k=20, noise=0.3, cond=1e5)
    if isinstance(solver, QR) and solver.Gamma is not None:
        solver = QR(lam=solver.lam, Gamma=solver.Gamma.to(device))
    At, yt = T(A, device), T(y, device)
    dense = solver.solve(At, yt)
    R, z, n, off = reduced(At, yt)
    red = solver.solve(R, z, n_obs=n, rss_offset=off)
    assert rel(N(red.coefficients), N(dense.coefficients)) < 1e-8
    assert abs(red.info["rss"] - dense.info["rss"]) < 1e-8 * dense.info["rss"]
    assert red.hyperparameters.keys() == dense.hyperparameters.keys()
    for key, v in dense.hyperparameters.items():
        if isinstance(v, torch.Tensor):
            assert rel(N(red.hyperparameters[key]), N(v)) < 1e-8
        else:
            assert abs(red.hyperparameters[key] - v) <= 1e-8 * abs(v), key


# ---------------------------------------------------------------- committees

def posterior_cov(A, noise_var, prior_var):
    return np.linalg.inv(A.T @ A / noise_var + np.eye(A.shape[1]) / prior_var)


@pytest.mark.parametrize("method,shape", [("svd", (40, 5)), ("cholesky", (40, 5)), ("svd", (4, 6))])
def test_blr_committee_samples_posterior(method, shape, device):
    A, y, _ = problem(seed=12, m=shape[0], k=shape[1], noise=0.5)
    At, yt = T(A, device), T(y, device)
    res = BLR(method=method, committee_size=20000, seed=3, return_covariance=True).solve(At, yt)
    h = res.hyperparameters
    cov = posterior_cov(A, h["noise_var"], h["prior_var"])
    assert np.allclose(N(res.info["covariance"]), cov, rtol=1e-8, atol=1e-12 * np.abs(cov).max())
    com = N(res.committee)
    assert com.shape == (20000, shape[1])
    sd = np.sqrt(np.diag(cov))
    for K in (200, 20000):  # mean error shrinks like 1/√K
        assert np.all(np.abs(com[:K].mean(0) - N(res.coefficients)) < 5 * sd / math.sqrt(K))
    emp = np.cov(com.T)
    assert np.max(np.abs(emp - cov) / np.outer(sd, sd)) < 0.06  # ~ 4·√(2/K) for correlations
    again = BLR(method=method, committee_size=20000, seed=3).solve(At, yt).committee
    assert torch.equal(again, res.committee)
    other = BLR(method=method, committee_size=20000, seed=4).solve(At, yt).committee
    assert not torch.equal(other, res.committee)
    assert BLR(method=method).solve(At, yt).committee is None


def test_ard_committee(device):
    A, y, c = sparse_problem(seed=13, m=100, k=10, nnz=3, noise=0.3)
    res = ARD(committee_size=20000, tol=1e-10, return_covariance=True, seed=1).solve(T(A, device), T(y, device))
    com, cov, act = N(res.committee), N(res.info["covariance"]), N(res.coefficients) != 0
    assert act.sum() >= 3 and np.all(com[:, ~act] == 0) and np.all(cov[~act] == 0)
    sd = np.sqrt(np.diag(cov)[act])
    assert np.all(np.abs(com[:, act].mean(0) - N(res.coefficients)[act]) < 5 * sd / math.sqrt(20000))
    assert np.max(np.abs(np.cov(com[:, act].T) - cov[np.ix_(act, act)]) / np.outer(sd, sd)) < 0.06
    pv = N(res.hyperparameters["prior_var"])[act]
    ref = np.linalg.inv(A[:, act].T @ A[:, act] / res.hyperparameters["noise_var"] + np.diag(1 / pv))
    assert np.allclose(cov[np.ix_(act, act)], ref, rtol=1e-8, atol=0)


def test_committee_std(device):
    com = torch.tensor([[1.0, 0.0], [3.0, 0.0]], dtype=F64, device=device)  # K = 2 members
    rows = torch.tensor([[1.0, 5.0], [2.0, 0.0], [0.0, 1.0]], dtype=F64, device=device)
    sd = committee_std(com, rows)
    assert sd.shape == (3,)
    assert torch.allclose(sd.cpu(), torch.tensor([math.sqrt(2), 2 * math.sqrt(2), 0.0], dtype=F64))
    assert torch.allclose(committee_std(com, rows, correction=0).cpu(), torch.tensor([1.0, 2.0, 0.0], dtype=F64))
    # the committee spread of BLR predictions estimates the posterior predictive std √(x Σ xᵀ)
    A, y, _ = problem(seed=14, m=30, k=4, noise=0.5)
    res = BLR(committee_size=20000, return_covariance=True).solve(T(A, device), T(y, device))
    X = np.random.default_rng(0).standard_normal((6, 4))
    exact = np.sqrt(np.einsum("ri,ij,rj->r", X, N(res.info["covariance"]), X))
    assert np.all(np.abs(N(committee_std(res.committee, T(X, device))) / exact - 1) < 0.03)
    with pytest.raises(ValueError):
        committee_std(com, rows[:, :1])


def test_validation_rmse_reported(device):
    A, y, _ = problem(seed=15, m=50, k=5)
    Av, yv, _ = problem(seed=16, m=20, k=5)
    res = QR().solve(T(A, device), T(y, device), validation=(T(Av, device), T(yv, device)))
    assert abs(res.info["validation_rmse"] - np.sqrt(np.mean((Av @ N(res.coefficients) - yv) ** 2))) < 1e-12
