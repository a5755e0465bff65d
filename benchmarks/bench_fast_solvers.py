"""Fast probability-flow ODE solvers against k-diffusion and diffusers: same network, grid and noise.

Pairs (ours | reference), each on the default U-Net (8x8, 16 channels, untrained weights with a
non-zero output layer: timing and agreement only), from the same prior draw x_T on the same grid:

- ``dpmpp-2m`` | k-diffusion ``sample_dpmpp_2m`` (VE and VP; log-SNR-uniform grid in sigma = s / a,
  k-diffusion on x / a with the denoiser D(x, sigma) = (x + s^2 score) / a);
- ``edm-heun`` | k-diffusion ``sample_heun`` (VE and VP; Karras grid, rho = 7);
- ``dpmpp-2m`` | diffusers ``DPMSolverMultistepScheduler`` (dpmsolver++, order 2, VP, its own
  discrete DDPM timesteps: our grid is t = lambda^-1(log-SNR of each of its timesteps), its model
  gets our noise prediction at that t).

Printed: max |ours - theirs| of the samples (float32) and the wall-time ratio ours / theirs
(median of back-to-back rounds, alternating order), and the same ratio of ours against a second
run of ours in the same race (A/A: the noise floor a ratio must clear).

    python benchmarks/bench_fast_solvers.py [--quick] [--threads 1]
"""

from __future__ import annotations

import torch
from benchlib import (
    Report,
    cli_main,
    k_diffusion_sampling,
    same_samples_race,
)

from scoresde import VPSDE, ode_sample
from scoresde.sampling import karras, log_snr, log_snr_inverse, logsnr_uniform

WHY = ("both run the same network NFE times and a few elementwise ops per step (ours takes a, s and "
       "lambda of the whole grid once); compare the excess with the A/A noise of the same race")


def _sigma(sde, t):
    return torch.exp(-log_snr(sde, t))


def k_diffusion_pair(sde, score, x_T, grid, solver):
    """(ours, theirs) callables for k-diffusion's ``solver`` on the grid (in t) from x_T."""
    ks = k_diffusion_sampling()
    method = {"sample_dpmpp_2m": "dpmpp-2m", "sample_heun": "edm-heun"}[solver]
    sigmas = _sigma(sde, grid.double()).to(x_T.dtype)
    B = x_T.shape[0]

    def denoiser(x_hat, sigma):
        t = log_snr_inverse(sde, -torch.log(sigma.double())).to(x_T.dtype)
        a, s = sde.mean_coeff(t).view(-1, 1, 1, 1), sde.std(t).view(-1, 1, 1, 1)
        return (a * x_hat + s**2 * score(a * x_hat, t)) / a

    a_T, a_eps = (sde.mean_coeff(grid[i].expand(B)).view(-1, 1, 1, 1) for i in (0, -1))

    def ours():
        return ode_sample(score, sde, x_T.shape, method=method, steps=len(grid) - 1, schedule=grid,
                          x_T=x_T)[0]

    def theirs():
        return a_eps * getattr(ks, solver)(denoiser, x_T / a_T, sigmas, disable=True)

    return ours, theirs


def diffusers_pair(sde, score, x_T, steps):
    """(ours, theirs, grid) for diffusers' DPMSolverMultistepScheduler (dpmsolver++, 2M)."""
    from diffusers import DPMSolverMultistepScheduler

    def scheduler():
        sch = DPMSolverMultistepScheduler(
            num_train_timesteps=1000, beta_start=sde.beta_min / 1000, beta_end=sde.beta_max / 1000,
            beta_schedule="linear", algorithm_type="dpmsolver++", solver_order=2, lower_order_final=False,
            final_sigmas_type="sigma_min", timestep_spacing="linspace", prediction_type="epsilon")
        sch.set_timesteps(steps)
        return sch

    sigmas = scheduler().sigmas.double()  # s / a at its timesteps, then its final sigma_min
    grid = log_snr_inverse(sde, -torch.log(sigmas)).to(x_T.dtype)
    B = x_T.shape[0]

    def ours():
        return ode_sample(score, sde, x_T.shape, method="dpmpp-2m", steps=steps, schedule=grid, x_T=x_T)[0]

    def theirs():
        sch, x = scheduler(), x_T
        for i, k in enumerate(sch.timesteps):
            t = grid[i].expand(B)
            eps = -sde.std(t).view(-1, 1, 1, 1) * score(x, t)
            x = sch.step(eps, k, x).prev_sample
        return x

    return ours, theirs, grid


def _pairs(sde, score, x_T, steps, kd, have_diffusers):
    pairs = []
    if kd:
        eps = sde.sampling_eps
        pairs += [("dpmpp-2m", "k-diffusion sample_dpmpp_2m", *k_diffusion_pair(
            sde, score, x_T, logsnr_uniform(sde, steps, eps, dtype=x_T.dtype), "sample_dpmpp_2m"), steps),
            ("edm-heun", "k-diffusion sample_heun", *k_diffusion_pair(
                sde, score, x_T, karras(sde, steps // 2, eps, dtype=x_T.dtype), "sample_heun"),
             steps // 2 * 2)]
    if have_diffusers and isinstance(sde, VPSDE):
        ours, theirs, _ = diffusers_pair(sde, score, x_T, steps)
        pairs.append(("dpmpp-2m", "diffusers DPMSolverMultistepScheduler", ours, theirs, steps))
    return pairs


TITLE = ("Fast ODE solvers vs references: default U-Net, batch {batch}, {steps} NFE, same x_T and grid")
NOTE = ("the references step in x / a(t) and sigma, ours in x and lambda: the same method in "
        "exact arithmetic; the float64 column (network and solvers in float64, 4 samples) shows it: "
        "k-diffusion agrees to rounding, diffusers to ~1e-5 because it keeps its noise schedule in float32")


def run(quick: bool = False) -> Report:
    return same_samples_race("fast_solvers", TITLE, _pairs, WHY, NOTE, quick)


if __name__ == "__main__":
    cli_main(run, __doc__)
