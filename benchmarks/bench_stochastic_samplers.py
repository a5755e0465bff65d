"""Fast reverse-SDE samplers against k-diffusion and diffusers: same network, grid and noise.

Pairs (ours | reference), each on the default U-Net (8x8, 16 channels, untrained weights with a
non-zero output layer: timing and agreement only), from the same prior draw x_T on the same grid,
with the same Gaussian increments injected into both:

- ``sde_sample("dpmpp-2m-sde", eta=1)`` | k-diffusion ``sample_dpmpp_2m_sde`` (VE and VP;
  log-SNR-uniform grid in sigma = s / a; k-diffusion on x / a with the denoiser
  D(x, sigma) = (x + s^2 score) / a and a ``noise_sampler`` returning our increments);
- ``sde_sample("edm", S_churn=...)`` | k-diffusion ``sample_heun`` with ``s_churn`` (VE and VP;
  Karras grid, rho = 7; churn on every step after the first, ``torch.randn_like`` replaced during
  the call by our increments, zeros where no churn is drawn);
- ``sde_sample("dpmpp-2m-sde")`` | diffusers ``DPMSolverMultistepScheduler(algorithm_type=
  "sde-dpmsolver++")`` (VP, its own discrete DDPM timesteps mapped to our t; its ``variance_noise``
  gets our increments).

Printed: max |ours - theirs| of the samples (float32, and float64 on 4 samples) and the wall-time
ratio ours / theirs (median of back-to-back rounds, alternating order) beside the A/A ratio of ours
against a second run of ours in the same race (the noise floor a ratio must clear).

    python benchmarks/bench_stochastic_samplers.py [--quick] [--threads 1]
"""

from __future__ import annotations

import contextlib

import torch
from benchlib import (
    Report,
    cli_main,
    k_diffusion_sampling,
    same_samples_race,
)

from scoresde import VPSDE, sde_sample
from scoresde.sampling import karras, log_snr, log_snr_inverse, logsnr_uniform

WHY = ("both run the same network NFE times and a few elementwise ops per step (ours takes a, s and "
       "lambda of the whole grid once); compare the excess with the A/A noise of the same race")
SEED = 3


def _sigma(sde, t):
    return torch.exp(-log_snr(sde, t))


def _noises(shape, count, dtype):
    g = torch.Generator().manual_seed(SEED)
    return [torch.randn(shape, generator=g, dtype=dtype) for _ in range(count)]


@contextlib.contextmanager
def _replaced_randn_like(noises):
    """``torch.randn_like`` returning ``noises`` in turn (k-diffusion's sample_heun draws its churn
    noise with it and offers no noise_sampler)."""
    original, queue = torch.randn_like, list(noises)
    torch.randn_like = lambda x, *a, **k: queue.pop(0).to(x)
    try:
        yield
    finally:
        torch.randn_like = original


def k_diffusion_pair(sde, score, x_T, grid, solver):
    """(ours, theirs) callables for k-diffusion's ``solver`` on the grid (in t) from x_T, the same
    increments injected into both."""
    ks = k_diffusion_sampling()
    sigmas = _sigma(sde, grid.double()).to(x_T.dtype)
    B, steps = x_T.shape[0], len(grid) - 1

    def denoiser(x_hat, sigma):
        t = log_snr_inverse(sde, -torch.log(sigma.double())).to(x_T.dtype)
        a, s = sde.mean_coeff(t).view(-1, 1, 1, 1), sde.std(t).view(-1, 1, 1, 1)
        return (a * x_hat + s**2 * score(a * x_hat, t)) / a

    a_T, a_end = (sde.mean_coeff(grid[i].expand(B)).view(-1, 1, 1, 1) for i in (0, -1))
    if solver == "sample_dpmpp_2m_sde":
        def ours():
            return sde_sample(score, sde, x_T.shape, "dpmpp-2m-sde", steps, schedule=grid, x_T=x_T,
                              denoise=False, generator=torch.Generator().manual_seed(SEED), eta=1.0)[0]

        def theirs():
            queue = _noises(x_T.shape, steps, x_T.dtype)
            return a_end * ks.sample_dpmpp_2m_sde(denoiser, x_T / a_T, sigmas, disable=True, eta=1.0,
                                                  noise_sampler=lambda s, s_next: queue.pop(0))
        return ours, theirs, steps

    # gamma = sqrt(2) - 1 on every step but the first (S_tmax between sigma_1 and sigma_0: no tie)
    churn = {"S_churn": 2.0 * steps, "S_tmin": 0.0, "S_tmax": (sigmas[0] * sigmas[1]).sqrt().item()}

    def ours():
        return sde_sample(score, sde, x_T.shape, "edm", steps, schedule=grid, x_T=x_T, denoise=False,
                          generator=torch.Generator().manual_seed(SEED), **churn)[0]

    def theirs():
        drawn = _noises(x_T.shape, steps - 1, x_T.dtype)
        with _replaced_randn_like([torch.zeros_like(x_T)] + drawn):
            x = ks.sample_heun(denoiser, x_T / a_T, sigmas, disable=True, s_churn=churn["S_churn"],
                               s_tmin=churn["S_tmin"], s_tmax=churn["S_tmax"])
        return a_end * x
    return ours, theirs, 2 * steps


def diffusers_pair(sde, score, x_T, steps):
    """(ours, theirs, NFE) for diffusers' DPMSolverMultistepScheduler (sde-dpmsolver++, 2M, VP)."""
    from diffusers import DPMSolverMultistepScheduler

    def scheduler():
        sch = DPMSolverMultistepScheduler(
            num_train_timesteps=1000, beta_start=sde.beta_min / 1000, beta_end=sde.beta_max / 1000,
            beta_schedule="linear", algorithm_type="sde-dpmsolver++", solver_order=2,
            lower_order_final=False, final_sigmas_type="sigma_min", timestep_spacing="linspace",
            prediction_type="epsilon")
        sch.set_timesteps(steps)
        return sch

    sigmas = scheduler().sigmas.double()  # s / a at its timesteps, then its final sigma_min
    grid = log_snr_inverse(sde, -torch.log(sigmas)).to(x_T.dtype)
    B = x_T.shape[0]

    def ours():
        return sde_sample(score, sde, x_T.shape, "dpmpp-2m-sde", steps, schedule=grid, x_T=x_T,
                          denoise=False, generator=torch.Generator().manual_seed(SEED), eta=1.0)[0]

    def theirs():
        sch, x, queue = scheduler(), x_T, _noises(x_T.shape, steps, x_T.dtype)
        for i, k in enumerate(sch.timesteps):
            t = grid[i].expand(B)
            eps = -sde.std(t).view(-1, 1, 1, 1) * score(x, t)
            x = sch.step(eps, k, x, variance_noise=queue.pop(0)).prev_sample
        return x

    return ours, theirs, steps


def _pairs(sde, score, x_T, steps, kd, have_diffusers):
    pairs = []
    if kd:
        eps = sde.sampling_eps
        pairs += [("dpmpp-2m-sde", "k-diffusion sample_dpmpp_2m_sde", *k_diffusion_pair(
            sde, score, x_T, logsnr_uniform(sde, steps, eps, dtype=x_T.dtype), "sample_dpmpp_2m_sde")),
            ("edm", "k-diffusion sample_heun (s_churn)", *k_diffusion_pair(
                sde, score, x_T, karras(sde, steps // 2, eps, dtype=x_T.dtype), "sample_heun"))]
    if have_diffusers and isinstance(sde, VPSDE):
        pairs.append(("dpmpp-2m-sde", "diffusers DPMSolverMultistepScheduler (sde-dpmsolver++)",
                      *diffusers_pair(sde, score, x_T, steps)))
    return pairs


TITLE = ("Fast SDE samplers vs references: default U-Net, batch {batch}, {steps} steps, same x_T, grid "
         "and noise")
NOTE = ("the references step in x / a(t) and sigma, ours in x and lambda: the same method in "
        "exact arithmetic, fed the same Gaussian increments; the float64 column (network and samplers "
        "in float64, 4 samples) shows the agreement without float32 rounding")


def run(quick: bool = False) -> Report:
    return same_samples_race("stochastic_samplers", TITLE, _pairs, WHY, NOTE, quick)


if __name__ == "__main__":
    cli_main(run, __doc__)
