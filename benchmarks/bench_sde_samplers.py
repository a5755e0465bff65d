"""Reverse-SDE sampling against the references: PC vs diffusers' ScoreSdeVeScheduler loop (VE), and
Euler-Maruyama vs torchsde's sdeint (same steps), on the same score network and the same noise.

Time per sample on the pipeline's default U-Net (8x8, 32 channels), and agreement two ways: the
samples themselves (both draw their noise from one torch.Generator seeded alike, so they match up
to the samplers' time grids), and the first two moments on a Gaussian mixture with its exact score.

    python benchmarks/bench_sde_samplers.py [--quick] [--threads 1]
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch
from benchlib import Check, Report, Table, cli_main, default_unet, optional, paired_ratio, race

from scoresde import VESDE, VPSDE, get_score_fn, pc_sample

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from exact import narrow_mixture  # noqa: E402


# --- diffusers: the ScoreSdeVePipeline loop -------------------------------------------------------
def diffusers_pc(score_fn, sde: VESDE, shape, steps, snr, generator, corrector_steps=1):
    """ScoreSdeVePipeline.__call__ without the final clamp to [0, 1], on a score ``model(x, sigma)``.

    The pipeline feeds the network sigma and takes its output as the score; here the network is ours
    behind ``t(sigma)``, so both loops evaluate the same function.
    """
    from diffusers import ScoreSdeVeScheduler

    sched = ScoreSdeVeScheduler(num_train_timesteps=sde.N, snr=snr, sigma_min=sde.sigma_min,
                                sigma_max=sde.sigma_max, sampling_eps=sde.sampling_eps)
    sched.set_timesteps(steps)
    sched.set_sigmas(steps)

    def model(x, sigma):
        return score_fn(x, torch.log(sigma / sde.sigma_min) / sde.log_ratio)

    sample = torch.randn(shape, generator=generator) * sched.init_noise_sigma
    sample_mean = sample
    for i, t in enumerate(sched.timesteps):
        sigma_t = sched.sigmas[i] * torch.ones(shape[0])
        for _ in range(corrector_steps):
            sample = sched.step_correct(model(sample, sigma_t), sample, generator=generator).prev_sample
        out = sched.step_pred(model(sample, sigma_t), t, sample, generator=generator)
        sample, sample_mean = out.prev_sample, out.prev_sample_mean
    return sample_mean


# --- torchsde: sdeint on the reverse SDE in reversed time s = T - t -------------------------------
class _SharedNoise:
    """A torchsde Brownian motion whose increments are sqrt(dt) z, z drawn from our generator in
    call order: Euler-Maruyama then uses exactly the noise that ``pc_sample`` draws."""

    def __init__(self, shape, generator, dtype):
        self.shape, self.generator, self.dtype, self.device = shape, generator, dtype, torch.device("cpu")
        self.levy_area_approximation = "none"

    def __call__(self, ta, tb=None, return_U=False, return_A=False):
        z = torch.randn(self.shape, generator=self.generator, dtype=self.dtype)
        return z * math.sqrt(float(tb - ta))


def pc_official_grid(score_fn, sde, shape, steps, snr, generator):
    """``pc_sample`` on the official / diffusers grid: ``steps`` uniform times T .. eps, each with a
    corrector step; the official last predictor step (from eps to t <= 0) has the mean of one Tweedie
    step at eps. Composed of our pieces: pc_sample on that grid, one Langevin step at eps, Tweedie."""
    from scoresde.sampling import langevin, tweedie_denoise

    grid = torch.linspace(sde.T, sde.sampling_eps, steps)
    x, _ = pc_sample(score_fn, sde, shape, schedule=grid, snr=snr, denoise=False, generator=generator)
    t = grid[-1].expand(shape[0])
    x, _ = langevin(score_fn, sde, x, t, t - (grid[-2] - grid[-1]), snr, generator)
    torch.randn(shape, generator=generator)  # the official last predictor step's noise, not in its mean
    return tweedie_denoise(score_fn, sde, x, t)


def torchsde_em(score_fn, sde, shape, steps, generator):
    """torchsde.sdeint(method="euler") from T down to eps with the grid of ``pc_sample``."""
    import torchsde

    eps = sde.sampling_eps
    dt = (sde.T - eps) / steps
    rsde = sde.reverse(score_fn)
    B, D = shape[0], math.prod(shape[1:])

    class Reverse(torch.nn.Module):
        noise_type, sde_type = "diagonal", "ito"

        def f(self, s, y):
            t = (sde.T - s).to(y.dtype).expand(B)
            return -rsde.sde(y.view(shape), t)[0].view(B, D)

        def g(self, s, y):
            g = sde.sde(y, (sde.T - s).to(y.dtype).expand(B))[1]
            return g[:, None].expand(B, D)

    x0 = sde.prior_sampling(shape, generator).view(B, D)
    bm = _SharedNoise((B, D), generator, x0.dtype)
    # dt a hair above the grid step: float round-off cannot add a spurious extra step at the end
    ts = torch.tensor([0.0, sde.T - eps], dtype=torch.float64)
    ys = torchsde.sdeint(Reverse(), x0, ts, bm=bm, method="euler", dt=dt * (1 + 1e-6))
    return ys[-1].view(shape)


def _cheap_score(sde):
    """The exact score of N(0, (s(t)^2 + 1) I)-ish data: costs a few elementwise ops."""
    return lambda x, t: -x / (sde.std(t).view(-1, *[1] * (x.ndim - 1)) ** 2 + 1)


WHY = ("not the sampler's own cost, which the no-network table shows at about 2/3 of the reference's "
       "per step; on the U-Net that difference is ~1% of a step, inside the timing noise")


# --- the benchmark --------------------------------------------------------------------------------
def moments_error(x, mix):
    x = x.double().flatten(1)
    mean_err = (x.mean(0) - mix.mean()).norm().item()
    cov_err = (torch.cov(x.T) - mix.cov()).norm().item()
    return mean_err, cov_err


def _cases(steps, timing: Table):
    """(sde, our sampler, reference name, pc_sample kwargs, reference(score_fn, sde, shape, steps, gen))."""
    ve, cases = VESDE(), []
    if optional("diffusers") is not None:
        cases.append((ve, "pc: reverse_diffusion + langevin", "diffusers ScoreSdeVeScheduler",
                      dict(official_grid=True, snr=0.16),
                      lambda sf, sde, sh, n, g: diffusers_pc(sf, sde, sh, n, 0.16, g)))
    else:
        timing.notes.append("diffusers not installed: PC comparison skipped")
    if optional("torchsde") is not None:
        for sde in (ve, VPSDE()):
            cases.append((sde, "p: euler_maruyama", "torchsde sdeint euler",
                          dict(predictor="euler_maruyama", corrector="none", denoise=False), torchsde_em))
    else:
        timing.notes.append("torchsde not installed: Euler-Maruyama comparison skipped")
    return cases


def _pair(score_fn, sde, kw, ref, shape, steps, seed):
    """Our sampler and the reference as two thunks drawing from generators seeded alike."""
    def ours():
        if kw.get("official_grid"):  # the reference's own grid and final step (pc_official_grid)
            gen = torch.Generator().manual_seed(seed)
            return pc_official_grid(score_fn, sde, shape, steps, kw["snr"], gen)
        return pc_sample(score_fn, sde, shape, steps=steps, generator=torch.Generator().manual_seed(seed),
                         **kw)[0]

    def theirs():
        return ref(score_fn, sde, shape, steps, torch.Generator().manual_seed(seed))

    return ours, theirs


def run(quick: bool = False) -> Report:
    batch, steps, repeats = (4, 5, 1) if quick else (16, 50, 5)
    n_gmm, gmm_steps, n_bare = (100, 10, 20) if quick else (4000, 500, 200)
    shape = (batch, 1, 8, 8)
    report = Report("sde_samplers")
    timing = Table("Reverse-SDE sampling: time per sample on the default U-Net (same network, same noise)",
                   ["sde", "ours", "reference", "steps", "NFE", "ours ms/sample", "ref ms/sample",
                    "ratio ours/ref", "max abs diff / std"],
                   notes=[f"batch {batch}; times: best of {repeats}, timed in alternation (with an A/A copy "
                          "of ours for the noise floor); ratio: median over rounds of the back-to-back "
                          "ratio; 'max abs diff / std' "
                          "compares the two samplers' outputs from the same seed",
                          "torchsde's sdeint calls the drift once more than the steps (a shape check "
                          "before integrating): part of its cost as users meet it"])
    bare = Table("Per-step cost without the network: the same loops on a near-free score "
                 f"(x -> -x / (s(t)^2 + 1)), {n_bare} steps",
                 ["sde", "ours", "reference", "ours us/step", "ref us/step", "ratio ours/ref"],
                 notes=["what each implementation adds around the network call; on the U-Net this is "
                        "about 1% of a step, below the noise of the timing table"])
    moments = Table("Agreement on a 2-D Gaussian mixture with its exact score (first two moments)",
                    ["sde", "sampler", "steps", "mean error (L2)", "cov error (Frobenius)"],
                    notes=[f"{n_gmm} samples; errors against the mixture's exact mean and covariance, "
                           "sampling error alone is about 1/sqrt(n) of the scale"])
    report.tables += [timing, bare, moments]
    with torch.inference_mode():
        for sde, ours_name, ref_name, kw, ref in _cases(steps, timing):
            name = f"{sde.name} {ours_name} vs {ref_name}"
            # 1. the U-Net: time and same-noise agreement
            ours, theirs = _pair(get_score_fn(sde, default_unet(sde.name)), sde, kw, ref, shape, steps, 1)
            x_ours = ours()
            diff = ((x_ours - theirs()).abs().max() / x_ours.std()).item()
            rounds = {}
            best = race({"ours": ours, "ref": theirs, "A/A": ours}, repeats=repeats, rounds=rounds)
            ratio = paired_ratio(rounds, "ours", "ref")
            noise = abs(paired_ratio(rounds, "ours", "A/A") - 1)
            nfe = steps * (2 if kw.get("corrector", "langevin") != "none" else 1)
            timing.rows.append([sde.name, ours_name, ref_name, steps, nfe, best["ours"] / batch * 1e3,
                                best["ref"] / batch * 1e3, ratio, diff])
            report.checks.append(Check(name, ratio, 1.0, f"samples agree to {diff:.1e} of their std",
                                       noise=noise, if_missed=WHY))
            # 2. no network: the implementations' own cost per step
            ours, theirs = _pair(_cheap_score(sde), sde, kw, ref, shape, n_bare, 1)
            rounds = {}
            best = race({"ours": ours, "ref": theirs}, repeats=repeats + 2, rounds=rounds)
            ratio = paired_ratio(rounds, "ours", "ref")
            bare.rows.append([sde.name, ours_name, ref_name, best["ours"] / n_bare * 1e6,
                              best["ref"] / n_bare * 1e6, ratio])
            report.checks.append(Check(f"{name}: per-step cost without the network", ratio, 1.0))
            # 3. the exact score of a mixture: moments
            mix = narrow_mixture()
            ours, theirs = _pair(mix.score_fn(sde), sde, kw, ref, (n_gmm, 2), gmm_steps, 2)
            for label, x in ((f"ours: {ours_name}", ours()), (ref_name, theirs())):
                moments.rows.append([sde.name, label, gmm_steps, *moments_error(x, mix)])
    return report


if __name__ == "__main__":
    cli_main(run, __doc__)
