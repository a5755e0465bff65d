"""solve_inverse against exact posteriors (float64, Gaussian-mixture priors with exact scores).

The measured errors of every method are printed as a table (``pytest tests/test_inverse.py -k
table -s``); ``smc`` must match the posterior within the two-sample noise floor, ``dps`` and
``pigdm`` are approximations and only checked for sanity.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
from exact import two_mode_mixture
from exact_conditional import bimodal_mixture, fast_score_fn
from exact_inverse import (
    directions,
    image_mixture,
    mode_weights,
    posterior,
    sample_posterior,
    sliced_w2,
    sw2_floor,
)

from scoresde.controllable import inpaint
from scoresde.inverse import solve_inverse
from scoresde.operators import AvgPool, Blur, Dense, Mask, random_projection
from scoresde.sde import make_sde

SDES = {"ve": {"sigma_min": 0.01, "sigma_max": 10.0}, "vp": {}, "subvp": {}}
F64 = torch.float64


def _sde(name):
    return make_sde(name, **SDES[name])


def _image_case(op, noise_std):
    mix = image_mixture()
    y = op.forward(((mix.mu[0] + mix.mu[1]) / 2).view(1, 1, 4, 4))[0]  # between the modes
    return mix, op, y, noise_std


CASES = {  # name -> () -> (prior mixture, operator, one measurement y (m,), noise_std)
    # x1 observed exactly at 0, where both components overlap: p(x2 | y) is bimodal
    "projection": lambda: (bimodal_mixture(), torch.tensor([[1.0, 0.0]], dtype=F64),
                           torch.tensor([0.0], dtype=F64), 0.0),
    # x2 observed with noise 0.5: both modes keep weight, each shifted towards y
    "noisy-coordinate": lambda: (two_mode_mixture(), torch.tensor([[0.0, 1.0]], dtype=F64),
                                 torch.tensor([0.3], dtype=F64), 0.5),
    # 4x4 images, full-rank Gaussian blur (reflect padding), noise 0.1
    "blur-4x4": lambda: _image_case(Blur((1, 4, 4), sigma=0.8), 0.1),
    # 4x4 images, 2x2 block means (super-resolution x2), noise 0.05
    "superres-4x4": lambda: _image_case(AvgPool((1, 4, 4), 2), 0.05),
}
N_SAMPLES, STEPS = 800, 100
PARTICLES = {"projection": 16, "noisy-coordinate": 16, "blur-4x4": 8, "superres-4x4": 8}


def _dense(A):
    return A if isinstance(A, torch.Tensor) else A.matrix()


@functools.cache
def _measure(method: str, sde_name: str, case: str) -> dict:
    """Draw N_SAMPLES posterior samples with ``method``; their sliced W2 to an exact sample, the
    noise floor, and the mode weights against the exact ones."""
    mix, A, y, noise = CASES[case]()
    sde = _sde(sde_name)
    post = posterior(mix, _dense(A), y, noise)
    dirs = directions(post[1].shape[1])
    options = {"particles": PARTICLES[case]} if method == "smc" else {}
    if method == "pigdm-gaussian":
        method, options = "pigdm", {"jacobian": "gaussian"}
    x, nfe = solve_inverse(fast_score_fn(mix, sde), sde, y.expand(N_SAMPLES, -1), A, noise, STEPS,
                           method=method, generator=torch.Generator().manual_seed(0), **options)
    exact = sample_posterior(post, N_SAMPLES, torch.Generator().manual_seed(1))
    weights, se = mode_weights(mix, x)
    return {"x": x, "nfe": nfe, "sw2": sliced_w2(x, exact, dirs),
            "floor": sw2_floor(post, N_SAMPLES, dirs), "weights": weights, "exact_weights": post[0],
            "weight_err": float((weights - post[0]).abs().max()), "weight_se": float(se.max())}


def test_exact_posteriors_are_what_the_cases_claim():
    w = {name: posterior(mix, _dense(A), y, s)[0] for name, (mix, A, y, s) in
         ((name, make()) for name, make in CASES.items())}
    assert all(float(v.min()) > 0.2 for v in w.values()), w  # every case keeps two modes
    mix, A, y, _ = CASES["projection"]()
    _, means, covs = posterior(mix, A, y, 0.0)
    assert torch.allclose(means[:, 0], torch.zeros(2, dtype=F64), atol=1e-12)  # x1 = y exactly
    assert torch.allclose(covs[:, 0, 0], torch.zeros(2, dtype=F64), atol=1e-12)
    assert (means[:, 1] * torch.tensor([1.0, -1.0], dtype=F64) > 0.5).all()  # modes apart in x2
    mix, A, y, s = CASES["noisy-coordinate"]()
    w, means, covs = posterior(mix, A, y, s)  # one component by hand: Gaussian conditioning
    S, mu = mix.S[0], mix.mu[0]
    gain = S[:, 1] / (S[1, 1] + s**2)
    assert torch.allclose(means[0], mu + gain * (y[0] - mu[1]))
    assert torch.allclose(covs[0], S - gain[:, None] * S[1][None, :])


@pytest.mark.parametrize("sde_name", list(SDES))
@pytest.mark.parametrize("case", list(CASES))
def test_smc_matches_the_exact_posterior(sde_name, case):
    """MCGDiff: sliced W2 to an exact sample within 3 noise floors, mode weights within 4
    standard errors (+0.02 for the time discretisation)."""
    r = _measure("smc", sde_name, case)
    assert r["nfe"] == STEPS + 1
    assert r["sw2"] < 3 * r["floor"], f"sliced W2 {r['sw2']:.4f} vs noise floor {r['floor']:.4f}"
    assert r["weight_err"] < 4 * r["weight_se"] + 0.02, (r["weights"], r["exact_weights"])


def test_table_of_errors_against_the_exact_posterior():
    """dps, pigdm and smc on every case and SDE: the errors quoted in docs/inverse.md."""
    methods = ("dps", "pigdm", "pigdm-gaussian", "smc")
    lines = ["| case | SDE | floor | " + " | ".join(f"{m} SW2 | {m} weight err" for m in methods) + " |"]
    for case in CASES:
        for sde_name in SDES:
            rs = {m: _measure(m, sde_name, case) for m in methods}
            for m, r in rs.items():
                assert torch.isfinite(r["x"]).all() and r["nfe"] == STEPS + 1, m
                assert r["sw2"] < 5.0, (m, case, sde_name, r["sw2"])  # sanity: data scale ~2
            cells = " | ".join(f"{r['sw2']:.3f} | {r['weight_err']:.3f}" for r in rs.values())
            lines.append(f"| {case} | {sde_name} | {rs['smc']['floor']:.3f} | {cells} |")
    print("\n" + "\n".join(lines))


@pytest.mark.parametrize("sde_name", list(SDES))
def test_masking_operator_agrees_with_inpaint_smc(sde_name):
    """solve_inverse(Mask, noise 0, smc) and inpaint(smc) sample the same distribution."""
    mix, sde, n = bimodal_mixture(), _sde(sde_name), 800
    y = torch.zeros(n, 2, dtype=F64)
    mask = torch.tensor([1.0, 0.0], dtype=F64)
    score = fast_score_fn(mix, sde)
    gen = torch.Generator().manual_seed(0)
    a, _ = solve_inverse(score, sde, y[:, :1], Mask(mask), 0.0, STEPS, method="smc", generator=gen,
                         particles=16)
    b, _ = inpaint(score, sde, y, mask.expand(n, 2), STEPS, method="smc", corrector="none",
                   generator=gen, particles=16)
    post = posterior(mix, Mask(mask).matrix(), y[0, :1], 0.0)
    dirs = directions(2)
    floor = sw2_floor(post, n, dirs)
    assert sliced_w2(a, b, dirs) < 3 * floor
    (wa, sa), (wb, sb) = mode_weights(mix, a), mode_weights(mix, b)
    assert abs(float(wa[0] - wb[0])) < 4 * math.hypot(sa[0], sb[0])


@pytest.mark.parametrize("method", ["dps", "pigdm", "smc"])
def test_per_sample_generators_make_samples_batch_independent(method):
    mix, sde = two_mode_mixture(), _sde("vp")
    A, y = torch.tensor([[0.0, 1.0]], dtype=F64), torch.tensor([[0.3], [-0.2], [1.0]], dtype=F64)
    opts = {"particles": 4} if method == "smc" else {}

    def gens(idx):
        return [torch.Generator().manual_seed(100 + i) for i in idx]

    full, _ = solve_inverse(fast_score_fn(mix, sde), sde, y, A, 0.5, 8, method=method,
                            generator=gens(range(3)), **opts)
    one, _ = solve_inverse(fast_score_fn(mix, sde), sde, y[2:], A, 0.5, 8, method=method,
                           generator=gens([2]), **opts)
    assert torch.allclose(full[2:], one, atol=1e-10, rtol=0)


class Counting:
    """An exact N(0, I) score that counts evaluations (rows)."""

    def __init__(self, sde):
        self.sde, self.rows, self.calls = sde, 0, 0

    def __call__(self, x, t):
        self.rows, self.calls = self.rows + x.shape[0], self.calls + 1
        return -x / (self.sde.mean_coeff(t) ** 2 + self.sde.std(t) ** 2).view(-1, *[1] * (x.ndim - 1))


@pytest.mark.parametrize("sde_name", list(SDES))
@pytest.mark.parametrize("method", ["dps", "pigdm", "smc"])
@pytest.mark.parametrize("denoise", [True, False])
def test_nfe_is_the_number_of_score_evaluations(sde_name, method, denoise):
    sde = _sde(sde_name)
    score = Counting(sde)
    op = Blur((1, 4, 4), sigma=0.7)
    y = torch.randn(3, 16, dtype=F64, generator=torch.Generator().manual_seed(0))
    opts = {"particles": 5} if method == "smc" else {}
    x, nfe = solve_inverse(score, sde, y, op, 0.1, 7, method=method, denoise=denoise,
                           generator=torch.Generator().manual_seed(1), **opts)
    assert x.shape == (3, 1, 4, 4) and x.dtype == F64 and torch.isfinite(x).all()
    assert nfe == 7 + denoise and score.rows == 3 * nfe * (5 if method == "smc" else 1)


def test_gaussian_prior_pigdm_and_smc_posterior_mean():
    """N(0, I) prior, y = A x + 0.3 n with a random projection: posterior mean
    A^T (A A^T + 0.09 I)^-1 y = y / 1.09 along A's orthonormal rows (PiGDM's r_t^2 is exact
    for unit-variance Gaussian data)."""
    sde, n = _sde("vp"), 2000
    op = random_projection((6,), 2, torch.Generator().manual_seed(3))
    y = torch.tensor([[1.0, -0.5]], dtype=F64)
    want = op.adjoint(y / 1.09)[0]
    for method, opts in (("pigdm", {}), ("pigdm", {"jacobian": "gaussian"}), ("smc", {"particles": 8})):
        x, _ = solve_inverse(Counting(sde), sde, y.expand(n, -1), op, 0.3, 100, method=method,
                             generator=torch.Generator().manual_seed(2), **opts)
        assert torch.allclose(x.mean(0), want, atol=5 / math.sqrt(n)), (method, x.mean(0), want)


# --- operators ---------------------------------------------------------------------------------


def _operators():
    g = torch.Generator().manual_seed(0)
    mask = (torch.rand(1, 4, 6, generator=g) < 0.5).double()
    return {"mask": Mask(mask), "pool2": AvgPool((2, 4, 6), 2), "pool4": AvgPool((1, 8, 8), 4),
            "blur": Blur((2, 5, 6), sigma=1.0), "projection": random_projection((3, 4), 5, g),
            "dense": Dense(torch.randn(3, 12, generator=g, dtype=F64), (1, 3, 4))}


@pytest.mark.parametrize("name", list(_operators()))
def test_operator_adjoint_svd_and_gram_solve(name):
    op = _operators()[name]
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, *op.in_shape, generator=g, dtype=F64)
    Ax = op.forward(x)
    v = torch.randn(*Ax.shape, generator=g, dtype=F64)
    assert torch.allclose((Ax * v).sum(1), (x * op.adjoint(v)).flatten(1).sum(1))  # <Ax, v> = <x, A^T v>
    M = op.matrix()
    assert torch.allclose(Ax, x.flatten(1) @ M.T)
    U, S, V = op.svd()
    assert torch.allclose(U @ torch.diag(S) @ V.T, M, atol=1e-12)
    assert torch.allclose(V.T @ V, torch.eye(len(S), dtype=F64), atol=1e-12)
    r2 = torch.tensor([0.3, 1.0, 2.0], dtype=F64)
    want = torch.stack([torch.linalg.solve(r * M @ M.T + 0.01 * torch.eye(len(M), dtype=F64), vi)
                        for r, vi in zip(r2, v, strict=True)])
    assert torch.allclose(op.gram_solve(v, r2, 0.01), want, atol=1e-9)


def test_operators_are_the_image_operations():
    x = torch.randn(2, 3, 8, 8, dtype=F64, generator=torch.Generator().manual_seed(0))
    pool = AvgPool((3, 8, 8), 2)
    assert torch.allclose(pool.forward(x), torch.nn.functional.avg_pool2d(x, 2).flatten(1))
    blur = Blur((3, 8, 8), sigma=1.2, radius=3)
    k = torch.exp(-torch.arange(-3, 4, dtype=F64) ** 2 / (2 * 1.2**2))
    k = k / k.sum()
    kernel = (k[:, None] * k[None, :]).expand(3, 1, 7, 7)
    ref = torch.nn.functional.conv2d(torch.nn.functional.pad(x, [3] * 4, mode="reflect"), kernel,
                                     groups=3)
    assert torch.allclose(blur.forward(x), ref.flatten(1))
    assert torch.linalg.matrix_rank(blur.matrix()) == 3 * 64  # full rank
    mask = torch.zeros(3, 8, 8, dtype=F64)
    mask[:, :, :4] = 1
    assert torch.equal(Mask(mask).forward(x), x.flatten(1)[:, mask.flatten() == 1])
    P = random_projection((3, 8, 8), 10, torch.Generator().manual_seed(0)).matrix()
    assert torch.allclose(P @ P.T, torch.eye(10, dtype=F64), atol=1e-12)


# --- bad input: one clear ValueError before any score evaluation -----------------------------------


class NoAdjoint:
    in_shape = (2,)

    def forward(self, x):
        return x[:, :1]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"A": torch.ones(2, 2)}, r"A maps x of shape \(2,\) to \(2,\) measurements but y has shape"),
        ({"A": torch.ones(2, 2, 2)}, r"A must be a 2-D \(m, D\) tensor"),
        ({"A": "blur"}, r"A must be a dense \(m, D\) tensor or an operator"),
        ({"y": torch.zeros(4)}, r"y must be a \(B, m\) tensor"),
        ({"noise_std": -0.1}, r"noise_std=-0.1 must be a finite number >= 0"),
        ({"noise_std": float("nan")}, r"noise_std=nan must be"),
        ({"A": NoAdjoint(), "method": "pigdm"}, r"A \(NoAdjoint\) has no adjoint.*'pigdm'"),
        ({"A": NoAdjoint(), "method": "smc"}, r"has no adjoint.*'smc'"),
        ({"method": "smc", "particles": 0}, r"particles=0 must be an integer >= 1"),
        ({"method": "smc", "particles": 2.5}, r"particles=2.5 must be an integer"),
        ({"method": "ddrm"}, r"method='ddrm' is unknown; choose one of dps, pigdm, smc"),
        ({"method": "dps", "particles": 4}, r"dps takes the options .* unknown option\(s\) particles"),
        ({"method": "smc", "predictor": "euler_maruyama"}, r"predictor='euler_maruyama'"),
        ({"method": "pigdm", "jacobian": "exact"}, r"jacobian='exact' must be 'vjp' or 'gaussian'"),
        ({"steps": 0}, r"steps must be a whole number >= 1"),
        ({"eps": 2.0}, r"eps must lie in"),
        ({"generator": [torch.Generator()]}, r"got 1 per-sample generators for 3 measurements"),
    ],
)
def test_bad_input_is_one_clear_error_before_any_score_evaluation(kwargs, message):
    sde = _sde("vp")
    score = Counting(sde)
    args = {"y": torch.zeros(3, 1), "A": torch.tensor([[1.0, 0.0]]), "noise_std": 0.1,
            "steps": 4, "method": "dps", **kwargs}
    with pytest.raises(ValueError, match=message):
        solve_inverse(score, sde, **args)
    assert score.calls == 0
    assert NoAdjoint().forward(torch.zeros(1, 2)).shape == (1, 1)
