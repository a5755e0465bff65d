"""Probability-flow likelihoods against closed-form densities, and the bits/dim conversion."""

import math

import pytest
import torch
from conftest import PAPER_SDES
from exact import gaussian, narrow_mixture, two_mode_mixture

from scoresde import VESDE, VPSDE, SubVPSDE, bits_per_dim, log_likelihood, uniform_dequantize
from scoresde.likelihood import divergence_fn
from scoresde.utils import per_sample_generators


def exact_logp(model, sde, x, eps=1e-5):
    return model.log_prob_t(sde, x, torch.full((x.shape[0],), eps, dtype=torch.float64))


def test_exact_divergence_matches_closed_form_density(sde):
    """Within 0.02 nats per 2-D sample for every SDE (paper settings, eps = 1e-5, rtol = atol = 1e-5)."""
    gmm = narrow_mixture()
    x, _ = gmm.sample(64, torch.Generator().manual_seed(0))
    logp, nfe = log_likelihood(gmm.score_fn(sde), sde, x, divergence="exact")
    assert logp.shape == (64,) and nfe > 10
    assert (logp - exact_logp(gmm, sde, x)).abs().max() < 0.02


def test_wide_data_error_is_the_ve_prior_mismatch(sde):
    """Data at |x| ~ 2: VP / sub-VP stay within 0.02 nats; VE's error, |x| / sigma_max, averages out."""
    gmm = two_mode_mixture()
    x, _ = gmm.sample(64, torch.Generator().manual_seed(0))
    err = log_likelihood(gmm.score_fn(sde), sde, x, divergence="exact")[0] - exact_logp(gmm, sde, x)
    if sde.name == "ve":
        assert err.abs().max() < 0.06 and err.mean().abs() < 0.01
    else:
        assert err.abs().max() < 0.02


def test_image_shaped_data(sde):
    # near-zero mean: VE's prior mismatch grows like |z| |mean| / sigma_max^2 with |z| ~ sigma_max sqrt(D)
    mean = torch.tensor([0.05, -0.05, 0.02, 0.0], dtype=torch.float64)
    cov = torch.diag(torch.tensor([0.02, 0.05, 0.03, 0.01], dtype=torch.float64)) + 0.005
    g = gaussian(mean, cov)
    x = g.sample(16, torch.Generator().manual_seed(1))[0].reshape(16, 1, 2, 2)
    logp, _ = log_likelihood(g.score_fn(sde), sde, x, divergence="exact")
    assert (logp - exact_logp(g, sde, x)).abs().max() < 0.02


@pytest.mark.parametrize("kind", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased(sde, kind):
    """The mean of many probes equals the exact divergence of the probability-flow drift."""
    gmm = two_mode_mixture()
    rsde = sde.reverse(gmm.score_fn(sde), probability_flow=True)
    x = gmm.sample(4, torch.Generator().manual_seed(2))[0]
    t = torch.full((4,), 0.05, dtype=torch.float64)
    drift = lambda y, s: rsde.sde(y, s)[0]  # noqa: E731
    basis = torch.eye(2, dtype=torch.float64)[:, None].expand(2, 4, 2)
    _, exact = divergence_fn(drift, "exact")(x, t, basis)
    probes = (torch.randint(0, 2, (20000, 4, 2), generator=torch.Generator().manual_seed(3)) * 2 - 1).double()
    if kind == "gaussian":
        probes = torch.randn(20000, 4, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    _, est = divergence_fn(drift, kind)(x, t, probes)
    assert torch.allclose(est, exact, rtol=0.02, atol=0.02 * exact.abs().max().item())


def test_hutchinson_log_likelihood_is_unbiased_and_probes_reduce_variance():
    sde, gmm = PAPER_SDES["vp"](), two_mode_mixture()
    x = gmm.sample(8, torch.Generator().manual_seed(4))[0]
    exact, _ = log_likelihood(gmm.score_fn(sde), sde, x, divergence="exact")
    one = torch.stack(
        [
            log_likelihood(gmm.score_fn(sde), sde, x, generator=torch.Generator().manual_seed(s))[0]
            for s in range(24)
        ]
    )
    many = torch.stack(
        [
            log_likelihood(
                gmm.score_fn(sde), sde, x, n_probes=16, generator=torch.Generator().manual_seed(s)
            )[0]
            for s in range(6)
        ]
    )
    se = one.std(0) / math.sqrt(one.shape[0])
    assert ((one.mean(0) - exact).abs() < 4 * se + 0.02).all()
    assert many.std(0).mean() < 0.6 * one.std(0).mean()


def test_per_sample_probe_generators():
    sde, gmm = PAPER_SDES["ve"](), two_mode_mixture()
    x = gmm.sample(4, torch.Generator().manual_seed(5))[0]
    a, _ = log_likelihood(
        gmm.score_fn(sde), sde, x, generator=per_sample_generators(0, 0, 4), rtol=1e-3, atol=1e-3
    )
    b, _ = log_likelihood(
        gmm.score_fn(sde), sde, x, generator=per_sample_generators(0, 0, 4), rtol=1e-3, atol=1e-3
    )
    assert torch.equal(a, b)


def test_uniform_dequantize():
    k = torch.tensor([[0, 5, 16]])
    y = uniform_dequantize(k, 17, torch.Generator().manual_seed(0))
    assert torch.all(y >= k / 17) and torch.all(y < (k + 1) / 17)


def test_bits_per_dim_offsets():
    """A model with unit density on [0, 1)^D scores exactly log2(L) bits/dim; [-1, 1] halves the density."""
    D = 3 * 32 * 32
    zero = torch.zeros(1)
    assert bits_per_dim(zero, D, levels=256).item() == pytest.approx(8.0)  # paper: +8 for [0, 1]
    # the same density on [-1, 1] is 2^-D: logp = -D ln 2 -> 1 + 8 - 1 = 8 bits/dim again
    assert bits_per_dim(zero - D * math.log(2), D, levels=256, scale=2.0).item() == pytest.approx(8.0)
    assert bits_per_dim(zero, D, levels=256, scale=2.0).item() == pytest.approx(7.0)  # paper: +7
    assert bits_per_dim(zero, 64, levels=17).item() == pytest.approx(math.log2(17))


def test_bits_per_dim_bound_on_a_discrete_distribution():
    """Dequantised likelihood of a known discrete law upper-bounds its entropy in bits/dim."""
    L, D, n = 4, 1, 20000
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4])
    k = torch.multinomial(probs, n, replacement=True, generator=torch.Generator().manual_seed(0))[:, None]
    y = uniform_dequantize(k, L, torch.Generator().manual_seed(1))
    # the best continuous model of y is piecewise constant: density L * P(k) on each cell
    logp = torch.log(L * probs[(y[:, 0] * L).long()])
    bpd = bits_per_dim(logp, D, levels=L).mean().item()
    entropy_bits = -(probs * probs.log2()).sum().item()
    assert bpd == pytest.approx(entropy_bits, abs=0.02)


def test_bad_divergence_name():
    sde, gmm = PAPER_SDES["ve"](), two_mode_mixture()
    with pytest.raises(ValueError, match="unknown divergence 'hutch'.*exact, rademacher, gaussian"):
        log_likelihood(gmm.score_fn(sde), sde, torch.zeros(2, 2, dtype=torch.float64), divergence="hutch")
    with pytest.raises(ValueError, match="n_probes"):
        log_likelihood(gmm.score_fn(sde), sde, torch.zeros(2, 2, dtype=torch.float64), n_probes=0)


def test_non_finite_scores_are_reported():
    def bad(x, t):
        return torch.full_like(x, float("nan"))

    with pytest.raises(FloatingPointError, match="log_likelihood: the adaptive ODE step size"):
        log_likelihood(bad, PAPER_SDES["vp"](), torch.randn(3, 2))


# ---------------------------------------------------------------- the likelihood stage, exactly

STAGE_SDES = {  # the digits default's model spaces: VE on [0, 1], VP / sub-VP on [-1, 1]
    "ve": (lambda: VESDE(sigma_min=0.01, sigma_max=50.0, N=1000), False),
    "vp": (lambda: VPSDE(beta_min=0.1, beta_max=20.0, N=1000), True),
    "subvp": (lambda: SubVPSDE(beta_min=0.1, beta_max=20.0, N=1000), True),
}


@pytest.mark.parametrize("levels", [17, 256])
@pytest.mark.parametrize("name", list(STAGE_SDES))
def test_stage_bits_per_dim_equal_the_gaussian_density_in_level_units(name, levels):
    """The likelihood stage (dequantise -> model space -> ODE -> bits/dim) on a model whose
    density is closed form: a Gaussian in level units u = L y (the dequantised pixel value).

    The score model is N(m, C) in level units, i.e. N(scale m / L + shift, (scale / L)^2 C) in
    model space; its marginal at the ODE's start t = eps is N(a m_x, a^2 C_x + s^2 I), mapped back
    to level units by u = L (x - shift) / scale. In level units each integer image k owns a unit
    cell, so its bits/dim is -log2 p_u(k + u) / D, computed here from the Gaussian density with no
    log2(L) or log2(scale) term. Dropping the stage's `- log2(scale)` is +1 bit/dim for VP and
    sub-VP; dropping `+ log2(L)` is -log2(L) for all.
    """
    from scoresde.stages.likelihood import images_bits_per_dim
    from scoresde.utils import per_sample_generators, rand

    make_sde, centered = STAGE_SDES[name]
    sde = make_sde()
    scale, shift = (2.0, -1.0) if centered else (1.0, 0.0)
    shape, D, n = (1, 2, 2), 4, 6
    # level units: a correlated Gaussian well inside [0, L)
    m = torch.tensor([0.45, 0.55, 0.5, 0.4], dtype=torch.float64) * levels
    sd = torch.tensor([0.08, 0.1, 0.06, 0.09], dtype=torch.float64) * levels
    corr = 0.3 * torch.ones(D, D, dtype=torch.float64) + 0.7 * torch.eye(D, dtype=torch.float64)
    C = sd[:, None] * corr * sd[None]
    z = torch.randn(n, D, generator=torch.Generator().manual_seed(levels), dtype=torch.float64)
    u = m + z @ torch.linalg.cholesky(C).T
    k = u.floor().clamp(0, levels - 1).to(torch.uint8 if levels <= 256 else torch.long)
    k = k.reshape(n, *shape)
    model = gaussian(scale * m / levels + shift, (scale / levels) ** 2 * C)  # model space
    # the exact p_T as the prior, so that the only error left is the ODE's (VE's N(0, sigma_max^2)
    # differs from p_T by ~ |m_x| / sigma_max nats: test_wide_data_error_is_the_ve_prior_mismatch)
    T = torch.full((1,), sde.T, dtype=torch.float64)
    sde.prior_logp = lambda z: model.log_prob_t(sde, z, T.expand(len(z))).to(z.dtype)

    lk = {"batch_size": 4, "rtol": 1e-5, "atol": 1e-5, "eps": 1e-5, "divergence": "exact",
          "n_probes": 1, "seed": 3}
    bpd, nfes = images_bits_per_dim(model.score_fn(sde), sde, k, levels, centered, lk, "cpu")
    assert bpd.shape == (n,) and len(nfes) == 2 and min(nfes) > 10

    # the same dequantisation noise as the stage: image i's stream (seed, "likelihood", i)
    noise = rand((n, *shape), per_sample_generators(3, 0, n, purpose="likelihood"), dtype=torch.float32)
    u_deq = k.double().reshape(n, D) + noise.double().reshape(n, D)
    t = torch.tensor([1e-5], dtype=torch.float64)
    a, s = sde.mean_coeff(t).item(), sde.std(t).item()
    mean_u = (a * (scale * m / levels + shift) - shift) * levels / scale
    cov_u = a**2 * C + (s * levels / scale) ** 2 * torch.eye(D, dtype=torch.float64)
    expected = -torch.distributions.MultivariateNormal(mean_u, cov_u).log_prob(u_deq) / (D * math.log(2))
    # within the ODE's tolerance (rtol = atol = 1e-5, float32 data): measured <= 5e-5 bits/dim
    assert (bpd - expected).abs().max() < 1e-3, bpd - expected
