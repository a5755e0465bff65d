"""The fast reverse-SDE samplers (sde_sample: EDM's Algorithm 2, SDE-DPM-Solver++(2M), DPM-Solver++(3M)
SDE) against exact answers: Gaussian-mixture data with its closed-form perturbed score, float64."""

import math

import pytest
import torch
from exact import GaussianMixture, two_mode_mixture

from scoresde import SDE_METHODS, ode_sample, pc_sample, sde_sample, tweedie_denoise
from scoresde.sampling import DEFAULT_SIGMA_MIN, METHODS, trajectory
from scoresde.sampling.common import noise_level
from scoresde.utils import per_sample_generators

F64 = torch.float64
N = 2000


def draw(sde, method, nfe, gmm=None, n=N, seed=1, **kw):
    gmm = gmm or two_mode_mixture()
    steps = nfe // METHODS[method].nfe_per_step
    return sde_sample(gmm.score_fn(sde), sde, (n, 2), method, steps,
                      generator=torch.Generator().manual_seed(seed), dtype=F64, **kw)


def per_mode_errors(x, gmm):
    """Largest |weight|, |mean| and |covariance entry| error over the two modes (at x = -2, +2)."""
    errors = []
    for k, side in enumerate((x[:, 0] < 0, x[:, 0] > 0)):
        part = x[side]
        errors.append((abs(len(part) / len(x) - gmm.w[k].item()),
                       (part.mean(0) - gmm.mu[k]).abs().max().item(),
                       (torch.cov(part.T) - gmm.S[k]).abs().max().item()))
    return [max(e[i] for e in errors) for i in range(3)]


# (weight, mean, covariance) tolerances: ~3 standard errors of 2000 samples (weight se 0.010, a
# mode's mean se ~0.01-0.02, covariance entry se ~0.01-0.015) plus the discretisation bias measured
# at that NFE (largest over the SDEs, seed 1): at 20 NFE dpmpp-2m-sde misses a mode's mean by 0.077,
# 3M SDE by 0.03; EDM's 10 Heun steps on the Karras grid by 0.39 (0.19 without churn: the ODE's own
# bias on this grid, tests/test_fast_solvers.py), and by <= 0.04 from 50 NFE on.
TOLERANCE = {20: (0.04, 0.12, 0.07), 50: (0.04, 0.06, 0.06), 200: (0.04, 0.06, 0.06)}
EDM_20 = (0.05, 0.45, 0.25)


@pytest.mark.parametrize("nfe", [20, 50, 200])
@pytest.mark.parametrize("method", SDE_METHODS)
def test_per_mode_weights_means_covariances(sde, method, nfe):
    gmm = two_mode_mixture()
    x, n = draw(sde, method, nfe, gmm)
    assert n == nfe + 1  # the steps, then one Tweedie step
    tol = EDM_20 if (method, nfe) == ("edm", 20) else TOLERANCE[nfe]
    errors = per_mode_errors(x, gmm)
    for name, err, bound in zip(("weight", "mean", "covariance"), errors, tol, strict=True):
        assert err < bound, f"{method} at {nfe} NFE: {name} error {err:.3f} >= {bound}"


def sliced_w2(x, y, n_proj=128):
    proj = torch.randn(n_proj, x.shape[1], dtype=F64, generator=torch.Generator().manual_seed(99))
    proj = proj / proj.norm(dim=1, keepdim=True)
    a, b = (x @ proj.T).sort(0).values, (y @ proj.T).sort(0).values
    return ((a - b) ** 2).mean().sqrt().item()


def gaussian_w2(x, mean, cov):
    """W2 between N(mean, cov) and the Gaussian with x's sample moments (Bures formula)."""
    m, c = x.mean(0), torch.cov(x.T)
    root = _sqrtm(cov)
    cross = _sqrtm(root @ c @ root)
    return math.sqrt(max(((m - mean) ** 2).sum().item() + torch.trace(c + cov - 2 * cross).item(), 0.0))


def _sqrtm(a):
    w, v = torch.linalg.eigh(a)
    return v @ torch.diag(w.clamp(min=0).sqrt()) @ v.T


@pytest.mark.parametrize("method", SDE_METHODS)
def test_convergence_in_distribution(sde, method):
    """Gaussian data: the W2 distance of the samples' moments to the data's falls as NFE grows
    (measured at 10 / 50 / 200 NFE: 0.02-1.06 / 0.005-0.051 / 0.0075-0.0092 over the SDEs and
    methods) and is at the sampling noise of 20000 samples (~0.01) from 200 NFE on."""
    mean = torch.tensor([0.5, -0.5], dtype=F64)
    cov = torch.tensor([[0.3, 0.1], [0.1, 0.2]], dtype=F64)
    data = GaussianMixture([1.0], mean[None], cov[None])
    dist = {nfe: gaussian_w2(draw(sde, method, nfe, data, n=20000, seed=0)[0], mean, cov)
            for nfe in (10, 50, 200)}
    assert dist[10] > max(dist[50], dist[200]) and dist[50] < 0.07 and dist[200] < 0.02, dist


@pytest.mark.parametrize("method", SDE_METHODS)
def test_mixture_at_200_nfe_is_at_the_noise_floor(sde, method):
    """Sliced W2 to exact mixture samples at 200 NFE within 2.5x the distance between two exact
    sample sets of the same size (the floor; both dominated by the mode weights' fluctuation)."""
    gmm = two_mode_mixture()
    ref = gmm.sample(N, torch.Generator().manual_seed(7))[0]
    floor = sliced_w2(gmm.sample(N, torch.Generator().manual_seed(8))[0], ref)
    dist = sliced_w2(draw(sde, method, 200, gmm)[0], ref)
    assert dist < 2.5 * floor, (dist, floor)


def recording(score_fn, times):
    def score(x, t):
        times.append(t)
        return score_fn(x, t)
    return score


@pytest.mark.parametrize("method", SDE_METHODS)
def test_nfe_is_exact_and_no_score_outside_the_grid(sde, method):
    """Every score call counts as one NFE, and none is made outside [t_end, T] (EDM's churn
    evaluates between grid times, never above T)."""
    gmm, seen = two_mode_mixture(), []
    steps = 7
    x, nfe = sde_sample(recording(gmm.score_fn(sde), seen), sde, (16, 2), method, steps, dtype=F64,
                        generator=torch.Generator().manual_seed(0), S_churn=80.0) if method == "edm" else \
        sde_sample(recording(gmm.score_fn(sde), seen), sde, (16, 2), method, steps, dtype=F64,
                   generator=torch.Generator().manual_seed(0))
    assert nfe == len(seen) == steps * METHODS[method].nfe_per_step + 1
    t_end = trajectory(gmm.score_fn(sde), sde, (2, 2), method, 1, dtype=F64)[2]
    t = torch.cat(seen)
    assert t.max().item() <= sde.T and t.min().item() >= t_end * (1 - 1e-12)


@pytest.mark.parametrize("method", SDE_METHODS)
def test_sample_does_not_depend_on_its_batch(sde, method):
    gmm = two_mode_mixture()

    def run(start, count):
        gens = per_sample_generators(seed=3, start=start, count=count)
        return sde_sample(gmm.score_fn(sde), sde, (count, 2), method, 6, generator=gens, dtype=F64)[0]

    assert torch.allclose(run(0, 6)[2:5], run(2, 3), rtol=1e-12, atol=1e-12)


def test_noise_free_limits_are_the_ode_solvers(sde):
    """eta = 0 is DPM-Solver++(2M) on the ODE; S_churn = 0 is EDM's Heun (Algorithm 1)."""
    score = two_mode_mixture().score_fn(sde)
    x_T = sde.prior_sampling((64, 2), torch.Generator().manual_seed(4), dtype=F64)
    for sde_method, ode_method, option in (("dpmpp-2m-sde", "dpmpp-2m", {"eta": 0.0}),
                                           ("edm", "edm-heun", {"S_churn": 0.0})):
        a, na = sde_sample(score, sde, (64, 2), sde_method, 8, x_T=x_T, **option)
        b, nb = ode_sample(score, sde, (64, 2), ode_method, 8, x_T=x_T, denoise=True)
        assert na == nb and torch.allclose(a, b, rtol=1e-12, atol=1e-12), sde_method


def test_denoise_maps_the_last_mean(sde):
    """With denoise the result is Tweedie of the last step's mean; without it, the last iterate."""
    score = two_mode_mixture().score_fn(sde)
    gen = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    x, x_mean, t_end, nfe = trajectory(score, sde, (32, 2), "dpmpp-3m-sde", 6, generator=gen(), dtype=F64)
    noisy, n0 = sde_sample(score, sde, (32, 2), "dpmpp-3m-sde", 6, denoise=False, generator=gen(), dtype=F64)
    clean, n1 = sde_sample(score, sde, (32, 2), "dpmpp-3m-sde", 6, generator=gen(), dtype=F64)
    assert torch.equal(noisy, x) and n0 == nfe and n1 == nfe + 1
    assert torch.equal(clean, tweedie_denoise(score, sde, x_mean, torch.full((32,), t_end, dtype=F64)))


def test_grids_end_at_sigma_min(sde):
    """sigma_min sets the grid's last noise level; the SDE's default is DEFAULT_SIGMA_MIN."""
    score = two_mode_mixture().score_fn(sde)
    t_end = trajectory(score, sde, (2, 2), "edm", 3, sigma_min=0.05, dtype=F64)[2]
    assert noise_level(sde, t_end) == pytest.approx(0.05, rel=1e-9)
    default = trajectory(score, sde, (2, 2), "dpmpp-2m-sde", 3, dtype=F64)[2]
    want = DEFAULT_SIGMA_MIN[sde.name]
    assert noise_level(sde, default) == pytest.approx(want or noise_level(sde, sde.sampling_eps), rel=1e-9)


def refuse(score):
    def bad(x, t):
        raise AssertionError("score evaluated before the arguments were checked")
    return bad


@pytest.mark.parametrize(("method", "kw", "words"), [
    ("heun", {}, "unknown SDE method 'heun'"),
    ("edm", {"eta": 0.5}, "takes no option 'eta'"),
    ("edm", {"S_churn": -1.0}, "S_churn must be >= 0"),
    ("dpmpp-2m-sde", {"eta": 1.5}, r"eta must be in \[0.0, 1.0\]"),
    ("dpmpp-3m-sde", {"eta": -0.1}, r"eta must be in \[0.0, 1.0\]"),
    ("edm", {"sigma_min": 1e-6}, "sigma_min must lie in"),
    ("edm", {"sigma_min": 1e6}, "sigma_min must lie in"),
])
def test_bad_input_is_refused_before_any_score_evaluation(sde, method, kw, words):
    with pytest.raises(ValueError, match=words):
        sde_sample(refuse(None), sde, (4, 2), method, 5, dtype=F64, **kw)


TWO_POINTS = torch.tensor([[-1.0, 0.5], [1.0, -0.5]], dtype=F64)


@pytest.mark.parametrize("name", ["ve", "vp"])
def test_pc_last_step_mean_lands_closer_to_near_discrete_data(name):
    """Reverse diffusion at 10 steps on two points (std 1e-3): Tweedie of the last step's mean (the
    official x_mean) lands at least 2x closer than Tweedie of the noisy last iterate."""
    from conftest import PAPER_SDES

    from scoresde.sampling import pc_trajectory

    sde = PAPER_SDES[name]()
    data = GaussianMixture([0.5, 0.5], TWO_POINTS, 1e-6 * torch.eye(2, dtype=F64).repeat(2, 1, 1))
    score = data.score_fn(sde)
    x, x_mean, t_end, _ = pc_trajectory(score, sde, (400, 2), 10, corrector="none", dtype=F64,
                                        generator=torch.Generator().manual_seed(0))
    t = torch.full((400,), t_end, dtype=F64)
    dist = {k: torch.cdist(tweedie_denoise(score, sde, v, t), TWO_POINTS).min(1).values.mean().item()
            for k, v in (("mean", x_mean), ("noisy", x))}
    sampled, _ = pc_sample(score, sde, (400, 2), 10, corrector="none", dtype=F64,
                           generator=torch.Generator().manual_seed(0))
    assert torch.cdist(sampled, TWO_POINTS).min(1).values.mean().item() == pytest.approx(dist["mean"])
    assert dist["mean"] < 0.5 * dist["noisy"], dist
    assert math.isfinite(dist["mean"])


def test_sampler_names_come_from_the_method_table():
    """The sweep's samplers, the schema's enum and the CLI help all list the table's methods."""
    from pathlib import Path

    import yaml

    from scoresde.cli import build_parser
    from scoresde.stages.cases import SAMPLERS

    assert {f"{m.kind}-{name}" for name, m in METHODS.items()} <= set(SAMPLERS)
    schema = yaml.safe_load((Path(__file__).parents[1] / "workflow/schemas/params.schema.yaml").read_text())
    assert schema["$defs"]["sampler"]["enum"] == list(SAMPLERS)
    sample = build_parser()._subparsers._group_actions[0].choices["sample"]
    help_text = next(a.help for a in sample._actions if a.dest == "sampler")
    assert all(name in help_text for name in SAMPLERS)


def test_sweep_case_runs_through_sde_sample(sde):
    """An ``sde-`` case of the sweep draws what sde_sample draws, with the options (grid included)
    of sample.sde_options for its SDE, both denoise settings from one trajectory."""
    from scoresde.stages.cases import run_sampler, sampler_options

    score = two_mode_mixture().score_fn(sde)
    sample = {"sde_options": {sde.name: {"dpmpp-2m-sde": {"eta": 0.5, "s_noise": None,
                                                          "schedule": "karras"}}}}
    options = sampler_options(sample, sde.name, "sde-dpmpp-2m-sde")
    assert options == {"eta": 0.5, "schedule": "karras"}
    assert sampler_options(sample, sde.name, "ode-dpmpp-2m") == {} == sampler_options(sample, sde.name, "pc")
    gen = lambda: per_sample_generators(seed=1, start=0, count=8)  # noqa: E731
    drawn = run_sampler(score, sde, (8, 2), "sde-dpmpp-2m-sde", 4, [True, False], snr=0.16, options=options,
                        generator=gen())
    for denoise in (True, False):
        want = sde_sample(score, sde, (8, 2), "dpmpp-2m-sde", 4, denoise=denoise, generator=gen(), **options)
        assert torch.equal(drawn[denoise][0], want[0]) and drawn[denoise][1] == want[1] == 4 + denoise
