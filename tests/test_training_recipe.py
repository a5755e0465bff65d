"""Training recipes, against exact answers in float64: the paper's and EDM's parameterisations give
the exact score of Gaussian data at their optimum for VE, VP and sub-VP; each loss weighting equals
its stated formula and its equivalent forms; the log-normal noise levels have the requested
distribution; likelihoods do not depend on the parameterisation; a tiny run trains with EDM's
preconditioning, log-normal noise levels and Min-SNR weighting, and samples from its checkpoint."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import PAPER_SDES
from stage_runs import run

from scoresde import VESDE, dsm_loss, get_score_fn, log_likelihood
from scoresde.losses import (
    edm_coefficients,
    edm_denoiser,
    loss_weight,
    noise_level,
    sample_times,
)
from scoresde.sampling import log_snr_inverse

MU, VAR0, DIM = 0.3, 0.2, 3  # data x(0) ~ N(MU 1, VAR0 I) in DIM dimensions
SIGMA_DATA = 0.5
F64 = torch.float64


def exact_score(sde, x, t):
    """x(t) ~ N(a MU, (a^2 VAR0 + s^2) I): score -(x - a MU) / (a^2 VAR0 + s^2)."""
    a, s = sde.mean_coeff(t)[:, None], sde.std(t)[:, None]
    return -(x - a * MU) / (a**2 * VAR0 + s**2)


def optimal_denoiser(x_hat, sigma):
    """E[x(0) | x(0) + sigma n = x_hat] for Gaussian x(0): MU + VAR0 / (VAR0 + sigma^2) (x_hat - MU)."""
    return MU + VAR0 / (VAR0 + sigma**2) * (x_hat - MU)


class OptimalPaperNet(torch.nn.Module):
    """F of the paper's parameterisation built from the exact score: VE F = s score, VP / sub-VP
    F = -s score (the noise z), with t read back from the condition (log sigma or 999 t)."""

    def __init__(self, sde):
        super().__init__()
        self.sde = sde

    def forward(self, x, cond):
        sde = self.sde
        t = (cond - math.log(sde.sigma_min)) / sde.log_ratio if isinstance(sde, VESDE) else cond / 999
        sign = 1.0 if isinstance(sde, VESDE) else -1.0
        return sign * sde.std(t)[:, None] * exact_score(sde, x, t)


class OptimalEDMNet(torch.nn.Module):
    """F of EDM's parameterisation from the optimal denoiser of x_hat = x(0) + sigma n:
    F = (D*(x_hat; sigma) - c_skip x_hat) / c_out, with sigma = exp(4 c_noise) and x_hat = y / c_in.
    Nothing here uses the SDE: the score must come out of the x(t) = a (x(0) + sigma n) algebra."""

    def forward(self, y, c_noise):
        sigma = torch.exp(4 * c_noise)
        c_skip, c_out, c_in, _ = (c[:, None] for c in edm_coefficients(sigma, SIGMA_DATA))
        x_hat = y / c_in
        return (optimal_denoiser(x_hat, sigma[:, None]) - c_skip * x_hat) / c_out


def optimal_net(sde, parameterization):
    return OptimalPaperNet(sde) if parameterization == "paper" else OptimalEDMNet()


def points(n=64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    t = torch.rand(n, generator=gen, dtype=F64) * (1 - 1e-3) + 1e-3
    return torch.randn(n, DIM, generator=gen, dtype=F64) * 2.0, t


@pytest.mark.parametrize("parameterization", ["paper", "edm"])
def test_the_optimal_network_gives_the_exact_score(sde, parameterization):
    x, t = points()
    got = get_score_fn(sde, optimal_net(sde, parameterization), parameterization, SIGMA_DATA)(x, t)
    torch.testing.assert_close(got, exact_score(sde, x, t), rtol=1e-10, atol=1e-10)


def test_edm_denoiser_is_tweedies_mean(sde):
    """D(x / a; sigma) = (x + s^2 score) / a = E[x(0) | x(t)] (Tweedie) at the optimum."""
    x, t = points()
    a, s = sde.mean_coeff(t)[:, None], sde.std(t)[:, None]
    got = edm_denoiser(sde, OptimalEDMNet(), SIGMA_DATA)(x, t)
    torch.testing.assert_close(got, (x + s**2 * exact_score(sde, x, t)) / a, rtol=1e-10, atol=1e-10)


def test_noise_level_and_its_inverse(sde):
    t = torch.linspace(1e-3, 1.0, 50, dtype=F64)
    sigma = noise_level(sde, t)
    torch.testing.assert_close(sigma, sde.std(t) / sde.mean_coeff(t), rtol=1e-12, atol=0)
    torch.testing.assert_close(log_snr_inverse(sde, -sigma.log()), t, rtol=1e-9, atol=1e-12)


class Linear(torch.nn.Module):
    """A fixed, non-optimal network: F(x, c) = W x + c (so every weighting sees a residual)."""

    def __init__(self):
        super().__init__()
        self.W = torch.nn.Parameter(torch.tensor([[0.9, 0.1, 0.0], [0.0, 1.1, -0.2], [0.3, 0.0, 0.7]],
                                                 dtype=F64))

    def forward(self, x, cond):
        return x @ self.W.T + cond[:, None]


def batch(sde, n=16):
    gen = torch.Generator().manual_seed(5)
    x0 = torch.randn(n, DIM, generator=gen, dtype=F64) * math.sqrt(VAR0) + MU
    t = torch.rand(n, generator=gen, dtype=F64) * 0.9 + 0.05
    z = torch.randn(n, DIM, generator=gen, dtype=F64)
    return x0, t, z


@pytest.mark.parametrize("parameterization", ["paper", "edm"])
@pytest.mark.parametrize("weighting", ["paper", "likelihood", "edm", "min-snr"])
def test_each_weighting_is_its_stated_formula(sde, parameterization, weighting):
    """paper: s^2 |S + z / s|^2; likelihood: g^2 |S + z / s|^2; edm: (sigma^2 + sd^2) / (sigma sd)^2
    |D - x0|^2; min-snr: min(SNR, gamma) / SNR |eps_hat - z|^2 = min(SNR, gamma) |D - x0|^2."""
    net, gamma = Linear(), 2.5
    x0, t, z = batch(sde)
    a, s = sde.mean_coeff(t)[:, None], sde.std(t)[:, None]
    xt = a * x0 + s * z
    S = get_score_fn(sde, net, parameterization, SIGMA_DATA)(xt, t)
    sigma2 = (s / a) ** 2
    D, eps_hat = (xt + s**2 * S) / a, -s * S
    g2 = sde.sde(xt, t)[1][:, None] ** 2
    score_loss, denoiser_loss = (S + z / s) ** 2, (D - x0) ** 2
    expected = {
        "paper": s**2 * score_loss,
        "likelihood": g2 * score_loss,
        "edm": (sigma2 + SIGMA_DATA**2) / (sigma2 * SIGMA_DATA**2) * denoiser_loss,
        "min-snr": torch.clamp(1 / sigma2, max=gamma) * sigma2 * (eps_hat - z) ** 2,
    }[weighting]
    got = dsm_loss(net, sde, x0, t=t, z=z, weighting=weighting, parameterization=parameterization,
                   sigma_data=SIGMA_DATA, min_snr_gamma=gamma)
    assert got.item() == pytest.approx(expected.mean().item(), rel=1e-10)
    if weighting == "min-snr":  # Hang et al.'s form on the denoiser loss
        other = torch.clamp(1 / sigma2, max=gamma) * denoiser_loss
        assert got.item() == pytest.approx(other.mean().item(), rel=1e-10)
    total = dsm_loss(net, sde, x0, t=t, z=z, weighting=weighting, parameterization=parameterization,
                     sigma_data=SIGMA_DATA, min_snr_gamma=gamma, reduce="sum")
    assert total.item() == pytest.approx(DIM * got.item(), rel=1e-12)


def test_edm_weighting_is_the_unweighted_loss_on_the_networks_target(sde):
    """EDM's lambda = 1 / c_out^2: with its parameterisation the loss is |F - F_target|^2 with
    F_target = (x0 - c_skip x_hat) / c_out (Karras et al. 2022, section 5)."""
    net = Linear()
    x0, t, z = batch(sde)
    sigma = noise_level(sde, t)
    c_skip, c_out, c_in, c_noise = (c[:, None] for c in edm_coefficients(sigma, SIGMA_DATA))
    x_hat = x0 + sigma[:, None] * z
    target = (x0 - c_skip * x_hat) / c_out
    expected = ((net(c_in * x_hat, c_noise[:, 0]) - target) ** 2).mean()
    got = dsm_loss(net, sde, x0, t=t, z=z, weighting="edm", parameterization="edm", sigma_data=SIGMA_DATA)
    assert got.item() == pytest.approx(expected.item(), rel=1e-10)


def test_paper_recipe_is_the_unweighted_noise_loss_for_vp():
    """VP with the paper's parameterisation and weighting: |F - z|^2, F predicting the noise."""
    sde, net = PAPER_SDES["vp"](), Linear()
    x0, t, z = batch(sde)
    xt = sde.mean_coeff(t)[:, None] * x0 + sde.std(t)[:, None] * z
    expected = ((net(xt, 999 * t) - z) ** 2).mean()
    assert dsm_loss(net, sde, x0, t=t, z=z).item() == pytest.approx(expected.item(), rel=1e-10)
    assert loss_weight(sde, t, "paper") is None


def test_the_exact_score_minimises_every_weighting(sde):
    """At the exact optimum every weighting's loss is the irreducible one: the exact score beats a
    perturbed one for each weighting (same draws)."""
    x0 = torch.randn(20000, DIM, generator=torch.Generator().manual_seed(1), dtype=F64) * math.sqrt(VAR0) + MU

    class Scaled(torch.nn.Module):
        def __init__(self, k):
            super().__init__()
            self.k, self.inner = k, OptimalEDMNet()

        def forward(self, y, c):
            return self.k * self.inner(y, c)

    for weighting in ("paper", "edm", "min-snr"):
        losses = [dsm_loss(Scaled(k), sde, x0, generator=torch.Generator().manual_seed(2), eps=1e-3,
                           weighting=weighting, parameterization="edm", sigma_data=SIGMA_DATA,
                           noise_distribution="lognormal").item() for k in (1.0, 0.8, 1.2)]
        assert losses[0] < min(losses[1:]), (weighting, losses)


def test_uniform_times_are_the_papers_draw(sde):
    t = sample_times(sde, 1000, torch.Generator().manual_seed(3), 1e-5, dtype=F64)
    u = torch.rand(1000, generator=torch.Generator().manual_seed(3), dtype=F64)
    torch.testing.assert_close(t, u * (1 - 1e-5) + 1e-5, rtol=0, atol=0)


def test_lognormal_times_give_the_requested_noise_levels(sde):
    """log sigma(t) ~ N(P_mean, P_std^2): quantiles 5%..95% and the mean, 200k draws, fixed seed."""
    p_mean, p_std, n = -1.2, 1.2, 200_000
    t = sample_times(sde, n, torch.Generator().manual_seed(4), 1e-5, "lognormal", p_mean, p_std, dtype=F64)
    assert float(t.min()) >= 1e-5 and float(t.max()) <= sde.T
    log_sigma = noise_level(sde, t).log()
    q = torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95], dtype=F64)
    normal = p_mean + p_std * math.sqrt(2) * torch.erfinv(2 * q - 1)
    torch.testing.assert_close(torch.quantile(log_sigma, q), normal, rtol=0, atol=0.02)
    assert float(log_sigma.mean()) == pytest.approx(p_mean, abs=0.02)  # clamped tails: < 0.3% of draws


def test_lognormal_times_are_clamped_to_eps_and_T(sde):
    gen = torch.Generator().manual_seed(0)
    low = sample_times(sde, 100, gen, 1e-3, "lognormal", p_mean=-40.0, p_std=0.1, dtype=F64)
    high = sample_times(sde, 100, gen, 1e-3, "lognormal", p_mean=40.0, p_std=0.1, dtype=F64)
    assert torch.all(low == 1e-3) and torch.all(high == sde.T)


def test_likelihood_does_not_depend_on_the_parameterisation(sde):
    """log-likelihood by the probability-flow ODE (exact divergence): the same exact score written
    both ways gives the same value, and the exact log p_eps(x) (with the exact p_T as the prior)."""
    x = torch.randn(4, DIM, generator=torch.Generator().manual_seed(6), dtype=F64) * math.sqrt(VAR0) + MU

    def marginal(t):
        a, s = sde.mean_coeff(torch.tensor([t], dtype=F64)), sde.std(torch.tensor([t], dtype=F64))
        return torch.distributions.Normal(a * MU, torch.sqrt(a**2 * VAR0 + s**2))

    sde.prior_logp = lambda z: marginal(sde.T).log_prob(z).sum(1)
    found = [log_likelihood(get_score_fn(sde, optimal_net(sde, p), p, SIGMA_DATA), sde, x, rtol=1e-8,
                            atol=1e-8, eps=1e-5, divergence="exact")[0] for p in ("paper", "edm")]
    torch.testing.assert_close(found[0], found[1], rtol=0, atol=1e-6)
    torch.testing.assert_close(found[0], marginal(1e-5).log_prob(x).sum(1), rtol=0, atol=1e-5)


TINY = """
data: {n_test: 6, n_reference: 64}
model: {channels: 8, channel_mult: [1, 2]}
train: {n_iters: 4, snapshot_every: 4, batch_size: 16, log_every: 2, warmup: 2,
        parameterization: edm, noise_distribution: lognormal, weighting: min-snr}
sample: {n_samples: 6, batch_size: 6}
"""


def test_a_preconditioned_run_trains_and_samples(tmp_path):
    """EDM's preconditioning + log-normal noise levels + Min-SNR: train a few steps through the CLI,
    sample from the checkpoint, which records the parameterisation; a checkpoint without the key
    (an older run) is read with the paper's."""
    from scoresde.checkpoint import load_checkpoint, save_checkpoint
    from scoresde.stages.common import checkpoint_score_fn, load_score_model

    (tmp_path / "params.yaml").write_text(TINY)
    data, ck = tmp_path / "data", tmp_path / "ck"
    assert run("prepare-data", "--params", tmp_path / "params.yaml", "--train-out", data / "train.pt",
               "--test-out", data / "test.pt", "--reference-out", data / "reference.pt",
               "--config-out", data / "config.json") == 0
    assert run("train", "--params", tmp_path / "params.yaml", "--data", data / "train.pt", "--sde", "vp",
               "--out-dir", ck, "--log-csv", ck / "train_log.csv", "--config-out", ck / "config.json",
               "--threads", "1", "--device", "cpu") == 0
    state, config = load_checkpoint(ck / "step_4.pt")
    assert config["parameterization"] == {"name": "edm", "sigma_data": 0.5}
    assert run("sample", "--params", tmp_path / "params.yaml", "--checkpoint", ck / "step_4.pt", "--sde",
               "vp", "--sampler", "ode-heun", "--steps", "3", "--denoise", "tweedie",
               "--out", tmp_path / "s.pt", "--meta", tmp_path / "s.json", "--device", "cpu") == 0
    images = torch.load(tmp_path / "s.pt", weights_only=True)["images"]
    assert images.dtype == torch.uint8 and images.shape == (6, 1, 8, 8)
    assert json.loads((tmp_path / "s.json").read_text())["nfe"] > 0

    model, sde, meta = load_score_model(ck / "step_4.pt", torch.device("cpu"))
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([0.3, 0.7])
    with torch.no_grad():
        torch.testing.assert_close(checkpoint_score_fn(sde, model, meta)(x, t),
                                   get_score_fn(sde, model, "edm", 0.5)(x, t))
        del config["parameterization"]
        save_checkpoint(tmp_path / "old.pt", state, config)
        model, sde, meta = load_score_model(tmp_path / "old.pt", torch.device("cpu"))
        paper = get_score_fn(sde, model)(x, t)
        torch.testing.assert_close(checkpoint_score_fn(sde, model, meta)(x, t), paper)


@pytest.mark.parametrize("distribution", ["uniform", "lognormal"])
def test_distributed_draw_is_the_losss_draw(distribution):
    """The global draw of distributed training (t, then z) is what dsm_loss draws itself."""
    from scoresde.stages.train.distributed import dsm_noise

    sde, net = PAPER_SDES["subvp"](), Linear()
    x0 = batch(sde)[0]
    kwargs = {"eps": 1e-5, "parameterization": "edm", "sigma_data": SIGMA_DATA,
              "noise_distribution": distribution, "p_mean": -1.2, "p_std": 1.2, "weighting": "min-snr",
              "min_snr_gamma": 5.0}
    t, z = dsm_noise(sde, x0, torch.Generator().manual_seed(7), **kwargs)
    drawn = dsm_loss(net, sde, x0, generator=torch.Generator().manual_seed(7), **kwargs)
    assert drawn.item() == dsm_loss(net, sde, x0, t=t, z=z, **kwargs).item()
