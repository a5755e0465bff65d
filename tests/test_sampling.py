"""Samplers with the exact score of Gaussian-mixture data must reproduce that data.

Paper settings throughout: VE sigma 0.01..50 with eps 1e-5 and snr 0.16; VP / sub-VP beta 0.1..20 with
eps 1e-3 and snr 0.01. Tolerances are a few standard errors of n = 4000 samples plus the small bias
of 1000 discretisation steps.
"""

import math

import pytest
import torch
from conftest import PAPER_SDES
from exact import GaussianMixture, gaussian, two_mode_mixture

from scoresde import ode_sample, pc_sample, tweedie_denoise
from scoresde.sampling import pc_trajectory, trajectory
from scoresde.utils import per_sample_generators

N_SAMPLES = 4000
SNR = {"ve": 0.16, "vp": 0.01, "subvp": 0.01}


def assert_matches_mixture(x, gmm, mean_tol=0.08, weight_tol=0.03, cov_rtol=0.06):
    x = x.double()
    se_weight = math.sqrt(0.7 * 0.3 / x.shape[0])
    weight = (x[:, 0] > 0).double().mean().item()  # the modes sit at x = -2 and x = +2
    assert abs(weight - 0.7) < weight_tol + 3 * se_weight, f"mixture weight {weight:.3f} != 0.7"
    assert torch.allclose(x.mean(0), gmm.mean(), atol=mean_tol), f"mean {x.mean(0)} != {gmm.mean()}"
    cov = torch.cov(x.T)
    assert torch.allclose(cov, gmm.cov(), rtol=cov_rtol, atol=0.05), f"cov {cov} != {gmm.cov()}"


@pytest.mark.parametrize("corrector", ["none", "langevin", "ald"])
@pytest.mark.parametrize("predictor", ["euler_maruyama", "reverse_diffusion", "ancestral"])
@pytest.mark.parametrize("name", list(PAPER_SDES))
def test_pc_sampling_reproduces_mixture(name, predictor, corrector):
    sde, gmm = PAPER_SDES[name](), two_mode_mixture()
    x, nfe = pc_sample(
        gmm.score_fn(sde),
        sde,
        (N_SAMPLES, 2),
        steps=1000,
        predictor=predictor,
        corrector=corrector,
        snr=SNR[name],
        generator=torch.Generator().manual_seed(0),
        dtype=torch.float64,
    )
    assert nfe == 1000 * (1 + (corrector != "none")) + 1
    assert_matches_mixture(x, gmm)


@pytest.mark.parametrize("name", list(PAPER_SDES))
def test_corrector_only_sampling(name):
    """Langevin alone (C2000 of Table 1) still finds the modes and their weights, less accurately."""
    sde, gmm = PAPER_SDES[name](), two_mode_mixture()
    x, nfe = pc_sample(
        gmm.score_fn(sde),
        sde,
        (N_SAMPLES, 2),
        steps=2000,
        predictor="none",
        corrector="langevin",
        snr=0.16,
        generator=torch.Generator().manual_seed(0),
        dtype=torch.float64,
    )
    assert nfe == 2001
    assert_matches_mixture(x, gmm, mean_tol=0.15, weight_tol=0.04, cov_rtol=0.1)


@pytest.mark.parametrize(
    ("method", "steps"),
    [("rk45", None), ("heun", 100), ("euler", 500), ("heun-sigma", 100), ("euler-sigma", 500)],
)
@pytest.mark.parametrize("name", list(PAPER_SDES))
def test_ode_sampling_reproduces_mixture(name, method, steps):
    sde, gmm = PAPER_SDES[name](), two_mode_mixture()
    x, nfe = ode_sample(
        gmm.score_fn(sde),
        sde,
        (N_SAMPLES, 2),
        method=method,
        steps=steps,
        generator=torch.Generator().manual_seed(1),
        dtype=torch.float64,
    )
    assert nfe == {"rk45": nfe, "heun": 200, "euler": 500, "heun-sigma": 200, "euler-sigma": 500}[method]
    assert_matches_mixture(x, gmm)


@pytest.mark.parametrize("name", list(PAPER_SDES))
def test_image_shaped_gaussian(name):
    """(B, 1, 2, 2) data with a full covariance: PC and ODE recover mean and covariance."""
    sde = PAPER_SDES[name]()
    mean = torch.tensor([0.5, -0.5, 0.0, 1.0], dtype=torch.float64)
    A = torch.tensor(
        [[0.6, 0.2, 0, 0], [0, 0.5, 0.1, 0], [0, 0, 0.4, -0.2], [0.1, 0, 0, 0.3]], dtype=torch.float64
    )
    cov = A @ A.T
    g = gaussian(mean, cov)
    for sampler in ("pc", "ode"):
        gen = torch.Generator().manual_seed(2)
        shape = (N_SAMPLES, 1, 2, 2)
        if sampler == "pc":
            x, _ = pc_sample(
                g.score_fn(sde), sde, shape, steps=500, snr=SNR[name], generator=gen, dtype=torch.float64
            )
        else:
            x, _ = ode_sample(
                g.score_fn(sde), sde, shape, method="heun", steps=50, generator=gen, dtype=torch.float64
            )
        assert x.shape == shape
        flat = x.reshape(N_SAMPLES, 4)
        assert torch.allclose(flat.mean(0), mean, atol=0.05)
        assert torch.allclose(torch.cov(flat.T), cov, atol=0.03)


def test_step_count_independent_of_training_N():
    """A coarse sampler (200 steps) and an SDE with another N still reproduce the data."""
    gmm = two_mode_mixture()
    for sde, steps in [(PAPER_SDES["ve"](), 200), (type(PAPER_SDES["vp"]())(N=50), 1000)]:
        x, nfe = pc_sample(
            gmm.score_fn(sde),
            sde,
            (N_SAMPLES, 2),
            steps=steps,
            corrector="none",
            generator=torch.Generator().manual_seed(3),
            dtype=torch.float64,
        )
        assert nfe == steps + 1
        assert_matches_mixture(x, gmm)


def test_tweedie_denoising(sde):
    """denoise=True returns the last step's mean; for the ODE it applies E[x0 | x(eps)]."""
    gmm = two_mode_mixture()
    score = gmm.score_fn(sde)
    kw = dict(steps=50, generator=None, dtype=torch.float64)
    raw, n0 = ode_sample(
        score, sde, (500, 2), method="euler", **{**kw, "generator": torch.Generator().manual_seed(4)}
    )
    den, n1 = ode_sample(
        score,
        sde,
        (500, 2),
        method="euler",
        denoise=True,
        **{**kw, "generator": torch.Generator().manual_seed(4)},
    )
    t = torch.full((500,), sde.sampling_eps, dtype=torch.float64)
    # fixed-step ODE grids end at eps or at the SDE's default noise level (sub-VP: sigma 0.01)
    t_ode = torch.full((500,), trajectory(score, sde, (2, 2), "euler", 50, dtype=torch.float64)[2],
                       dtype=torch.float64)
    assert n1 == n0 + 1
    assert torch.allclose(den, tweedie_denoise(score, sde, raw, t_ode))
    a, na = pc_sample(score, sde, (500, 2), corrector="none", denoise=True,
                      **{**kw, "generator": torch.Generator().manual_seed(5)})
    b, nb = pc_sample(score, sde, (500, 2), corrector="none", denoise=False,
                      **{**kw, "generator": torch.Generator().manual_seed(5)})
    x, x_mean, t_end, nt = pc_trajectory(score, sde, (500, 2), 50, corrector="none", dtype=torch.float64,
                                         generator=torch.Generator().manual_seed(5))
    # every sampler lands on eps; denoising is the last step's mean (the official x_mean), then one
    # Tweedie step there (one more NFE); without it the last iterate keeps its noise
    assert na == nb + 1 == nt + 1 == 51 and t_end == sde.sampling_eps
    assert torch.equal(b, x) and not torch.equal(x, x_mean)
    assert torch.allclose(a, tweedie_denoise(score, sde, x_mean, t))


@pytest.mark.parametrize("sampler", ["reverse_diffusion", "ancestral", "euler_maruyama", "ode-heun"])
def test_sample_does_not_depend_on_its_batch(sde, sampler):
    """With per-sample generators and a batch-independent corrector (ALD) sample i is the same in
    any batch; the Langevin corrector's step size uses batch-averaged norms, so it is not."""
    gmm = two_mode_mixture()

    def draw(start, count):
        gens = per_sample_generators(seed=11, start=start, count=count)
        if sampler == "ode-heun":
            return ode_sample(
                gmm.score_fn(sde),
                sde,
                (count, 2),
                method="heun",
                steps=20,
                generator=gens,
                dtype=torch.float64,
            )[0]
        return pc_sample(
            gmm.score_fn(sde),
            sde,
            (count, 2),
            steps=20,
            predictor=sampler,
            corrector="ald",
            snr=SNR[sde.name],
            generator=gens,
            dtype=torch.float64,
        )[0]

    whole = draw(0, 6)
    assert torch.allclose(whole[2:5], draw(2, 3), rtol=1e-12, atol=1e-12)


def test_bad_arguments():
    sde, gmm = PAPER_SDES["ve"](), two_mode_mixture()
    score = gmm.score_fn(sde)
    with pytest.raises(ValueError, match="unknown predictor 'heun'.*reverse_diffusion"):
        pc_sample(score, sde, (2, 2), predictor="heun")
    with pytest.raises(ValueError, match="unknown corrector"):
        pc_sample(score, sde, (2, 2), corrector="hmc")
    with pytest.raises(ValueError, match="steps must be a whole number >= 1"):
        pc_sample(score, sde, (2, 2), steps=0)
    with pytest.raises(ValueError, match="snr must be >= 0"):
        pc_sample(score, sde, (2, 2), snr=-0.1)
    with pytest.raises(ValueError, match="eps"):
        ode_sample(score, sde, (2, 2), eps=2.0)
    with pytest.raises(ValueError, match="unknown ODE method 'rk4'"):
        ode_sample(score, sde, (2, 2), method="rk4")


def test_non_finite_scores_are_reported():
    sde = PAPER_SDES["vp"]()

    def bad(x, t):
        return torch.full_like(x, float("nan"))

    with pytest.raises(FloatingPointError, match="non-finite"):
        pc_sample(bad, sde, (3, 2), steps=3)
    with pytest.raises(FloatingPointError, match="non-finite"):
        ode_sample(bad, sde, (3, 2), method="euler", steps=3)
    with pytest.raises(FloatingPointError, match="ode_sample: the adaptive ODE step size underflowed"):
        ode_sample(bad, sde, (3, 2), method="rk45")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_sampling(sde):
    gen = torch.Generator(device="cuda").manual_seed(0)

    def score(x, t):
        return -x / (1 + sde.std(t)[:, None] ** 2)

    x, _ = pc_sample(score, sde, (8, 2), steps=10, generator=gen)
    y, _ = ode_sample(score, sde, (8, 2), generator=torch.Generator(device="cuda").manual_seed(0))
    assert x.is_cuda and y.is_cuda


@pytest.mark.parametrize("sampler", ["pc", "ode", "sde"])
def test_one_trajectory_gives_both_denoise_settings(sde, sampler):
    """pc_trajectory / trajectory end where pc_sample / ode_sample / sde_sample with and without
    the final denoising end: the sweep draws the Tweedie on / off pair from one run."""
    from scoresde import sde_sample

    score = two_mode_mixture().score_fn(sde)
    gen = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    if sampler == "pc":
        x, x_mean, t_end, nfe = pc_trajectory(score, sde, (16, 2), steps=7, generator=gen())
        draw = lambda d: pc_sample(score, sde, (16, 2), steps=7, denoise=d, generator=gen())  # noqa: E731
        assert nfe == 14
    elif sampler == "ode":
        x, x_mean, t_end, nfe = trajectory(score, sde, (16, 2), "heun", steps=5, generator=gen())
        draw = lambda d: ode_sample(score, sde, (16, 2), method="heun", steps=5, denoise=d,  # noqa: E731
                                    generator=gen())
        assert nfe == 10 and torch.equal(x, x_mean)
    else:
        x, x_mean, t_end, nfe = trajectory(score, sde, (16, 2), "dpmpp-2m-sde", steps=5, generator=gen())
        draw = lambda d: sde_sample(score, sde, (16, 2), "dpmpp-2m-sde", 5, denoise=d,  # noqa: E731
                                    generator=gen())
        assert nfe == 5 and not torch.equal(x, x_mean)
    t = torch.full((16,), t_end)
    for denoise, want in ((True, tweedie_denoise(score, sde, x_mean, t)), (False, x)):
        got, n = draw(denoise)
        assert torch.equal(got, want) and n == nfe + int(denoise)


@pytest.mark.parametrize("method", ["heun", "euler"])
def test_sigma_stepping_is_more_accurate_for_ve(method):
    """On the same t grid (geometric in sigma for VE), steps in sigma (EDM) land closer to the exact
    ODE solution than steps in t: the solution is nearly straight in sigma."""
    sde, gmm = PAPER_SDES["ve"](), two_mode_mixture()
    kw = dict(generator_seed=0)

    def solve(m, **extra):
        gen = torch.Generator().manual_seed(kw["generator_seed"])
        return ode_sample(gmm.score_fn(sde), sde, (2000, 2), method=m, generator=gen,
                          dtype=torch.float64, **extra)[0]

    exact = solve("rk45", rtol=1e-9, atol=1e-9)
    err = {m: (solve(m, steps=32) - exact).pow(2).mean().sqrt().item() for m in (method, f"{method}-sigma")}
    assert err[f"{method}-sigma"] < 0.4 * err[method], err


TWO_POINTS = torch.tensor([[-1.0, 0.5], [1.0, -0.5]], dtype=torch.float64)


def near_discrete():
    """Two points with std 1e-3: the data a sampler must land on exactly."""
    return GaussianMixture([0.5, 0.5], TWO_POINTS, 1e-6 * torch.eye(2, dtype=torch.float64).repeat(2, 1, 1))


def distance_to_data(x):
    return torch.cdist(x, TWO_POINTS).min(1).values


# Sub-VP's s(eps) = 1e-4 is below the data's spread, so the final Tweedie step cannot remove excess
# noise of a coarse last step: there the log-SNR-uniform grid is used. Euler-Maruyama at 10 steps
# on sub-VP is unstable on every grid (its step in log-SNR leaves EM's stability region; measured
# mean distance 0.45 on logsnr_uniform) and is left out.
DISCRETE_CASES = [(n, p, k) for n in ("ve", "vp", "subvp")
                  for p in ("euler_maruyama", "reverse_diffusion", "ancestral") for k in (10, 20)
                  if (n, p, k) != ("subvp", "euler_maruyama", 10)]


@pytest.mark.parametrize(("name", "predictor", "steps"), DISCRETE_CASES)
def test_every_predictor_lands_on_near_discrete_data(name, predictor, steps):
    """The last step lands on eps, then Tweedie: no step reaches past the data (the old
    euler_maruyama stepped from eps a full step below 0 and ended ~116 (VP) / ~41 (VE) away)."""
    sde, data = PAPER_SDES[name](), near_discrete()
    schedule = "logsnr_uniform" if name == "subvp" else "time_uniform"
    x, nfe = pc_sample(data.score_fn(sde), sde, (400, 2), steps=steps, predictor=predictor,
                       corrector="none", schedule=schedule, generator=torch.Generator().manual_seed(0),
                       dtype=torch.float64)
    assert nfe == steps + 1
    d = distance_to_data(x)
    assert d.mean() < 0.05 and d.max() < 0.25, (d.mean().item(), d.max().item())
