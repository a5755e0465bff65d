"""Probability-flow ODE sampling against k-diffusion's Euler / Heun samplers and raw torchdiffeq dopri5.

Three measurements, one run, VE SDE (k-diffusion's samplers integrate dx/dsigma = (x - D(x, sigma)) /
sigma, the VE probability-flow ODE, with the denoiser D = x + sigma^2 score):

1. accuracy against NFE on a 2-D Gaussian mixture with its exact score (float64; the error is the RMS
   distance to a dopri5 solution at rtol = atol = 1e-10 from the same prior draws), standing in for
   "the same FID": a trained network approximates this score;
2. wall time per network evaluation of each implementation on the default U-Net (8x8, 32 channels)
   at equal NFE, timed in alternation: the implementation's own overhead;
3. time at equal accuracy: the NFE each method needs to reach an error target (from 1) times its
   wall time per evaluation (from 2).

    python benchmarks/bench_ode.py [--quick] [--threads 1]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from benchlib import (
    Check,
    Report,
    Table,
    cli_main,
    default_unet,
    k_diffusion_sampling,
    optional,
    paired_ratio,
    race,
)

from scoresde import VESDE, get_score_fn, ode_sample

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from exact import narrow_mixture  # noqa: E402


def t_of_sigma(sde: VESDE, sigma):
    return torch.log(sigma / sde.sigma_min) / sde.log_ratio


SEED = 0
WHY_GRID = ("the parametrisation, not the code: our ode-euler / ode-heun step in t on the probability-flow "
            "ODE (eq. 13); k-diffusion steps in sigma (dx/dsigma = (x - D) / sigma), which for VE is 3-6x "
            "more accurate per NFE (our heun-sigma / euler-sigma do the same); at tight targets RK45 wins")
WHY_TWIN = ("the same method at the same NFE (dopri5 vs dopri5, or sigma-stepped Heun / Euler on the same "
            "grid): the ratio is the per-NFE ratio of the U-Net table; compare the excess with the noise "
            "column")
WHY_BARE = {"rk45": "ode_sample passes step_t (the last step lands on eps: no score evaluation outside "
            "[eps, T]) and draws the prior / checks finiteness itself: a few us per NFE, under 0.1% of "
            "one U-Net evaluation"}


def start(sde, shape, dtype=None):
    """The prior draw every implementation starts from (``ode_sample`` makes the same draw itself)."""
    return sde.prior_sampling(shape, torch.Generator().manual_seed(SEED), dtype=dtype)


def ours(method, score_fn, sde, x0, n):
    """``ode_sample`` from ``start``'s draw; ``n`` is steps (euler / heun) or the tolerance (rk45)."""
    kw = dict(rtol=n, atol=n) if method == "rk45" else dict(steps=n)
    return ode_sample(score_fn, sde, x0.shape, method=method, dtype=x0.dtype,
                      generator=torch.Generator().manual_seed(SEED), **kw)


def kd(method, score_fn, sde, x0, n, schedule):
    """k-diffusion ``sample_euler`` / ``sample_heun`` over ``n`` steps from sigma_max to sigma(eps)."""
    ks = k_diffusion_sampling()
    sig_max, sig_end = sde.sigma_max, sde.sigma(torch.tensor(sde.sampling_eps, dtype=torch.float64)).item()
    if schedule == "karras":
        sigmas = ks.get_sigmas_karras(n + 1, sig_end, sig_max, rho=7.0)[:-1]  # drop the appended 0
    else:  # the grid ode_sample uses: uniform in t, i.e. geometric in sigma
        t = torch.linspace(sde.T, sde.sampling_eps, n + 1, dtype=torch.float64)
        sigmas = sde.sigma(t)
    sigmas = sigmas.to(x0.dtype)
    count = [0]

    def denoiser(x, sigma):
        count[0] += 1
        return x + (sigma**2)[:, None].view(-1, *[1] * (x.ndim - 1)) * score_fn(x, t_of_sigma(sde, sigma))

    sampler = ks.sample_heun if method == "heun" else ks.sample_euler
    return sampler(denoiser, x0.clone(), sigmas, disable=True), count[0]


def tde(score_fn, sde, x0, tol):
    """Raw torchdiffeq: odeint(dopri5) on the probability-flow drift, no step_t, as a user would call it."""
    from torchdiffeq import odeint

    rsde = sde.reverse(score_fn, probability_flow=True)
    count = [0]
    B = x0.shape[0]

    def func(t, y):
        count[0] += 1
        return rsde.sde(y, t.expand(B))[0]

    span = torch.tensor([sde.T, sde.sampling_eps], dtype=x0.dtype)
    return odeint(func, x0, span, rtol=tol, atol=tol, method="dopri5")[-1], count[0]


def methods(kd_ok: bool, tde_ok: bool):
    """name -> (family, runner(score_fn, sde, x0, n)); the family pairs ours with its reference."""
    m = {
        "ours euler": ("euler", lambda sf, sde, x0, n: ours("euler", sf, sde, x0, n)),
        "ours heun": ("heun", lambda sf, sde, x0, n: ours("heun", sf, sde, x0, n)),
        "ours rk45": ("rk45", lambda sf, sde, x0, n: ours("rk45", sf, sde, x0, n)),
        "ours euler-sigma": ("euler-sigma", lambda sf, sde, x0, n: ours("euler-sigma", sf, sde, x0, n)),
        "ours heun-sigma": ("heun-sigma", lambda sf, sde, x0, n: ours("heun-sigma", sf, sde, x0, n)),
    }
    if kd_ok:
        m["k-diffusion euler (same grid)"] = (
            "euler", lambda sf, sde, x0, n: kd("euler", sf, sde, x0, n, "t"))
        m["k-diffusion heun (same grid)"] = (
            "heun", lambda sf, sde, x0, n: kd("heun", sf, sde, x0, n, "t"))
        m["k-diffusion heun (karras rho=7)"] = (
            "heun-karras", lambda sf, sde, x0, n: kd("heun", sf, sde, x0, n, "karras"))
    if tde_ok:
        m["torchdiffeq dopri5"] = ("rk45", lambda sf, sde, x0, n: tde(sf, sde, x0, n))
    return m


def _ours_for(name: str, fam: str) -> str | None:
    """Our method a reference is compared with (None for ours and for references without a twin)."""
    return None if name.startswith("ours") or fam not in ("euler", "heun", "rk45") else f"ours {fam}"


def accuracy(meths, steps_sweep, tol_sweep, n, ref_tol):
    """Table 1 and the (NFE, RMS error) curve of every method on the exact mixture score."""
    sde, mix = VESDE(), narrow_mixture()
    gscore = mix.score_fn(sde)
    x0 = start(sde, (n, 2), torch.float64)
    ref, _ = tde(gscore, sde, x0, ref_tol)
    table = Table("ODE accuracy against NFE (2-D Gaussian mixture, exact score, float64)",
                  ["method", "steps / tol", "NFE", "RMS error"],
                  notes=[f"reference: dopri5 at rtol = atol = {ref_tol:g} from the same prior draws"])
    curves = {}
    for name, (_, fn) in meths.items():
        for setting in tol_sweep if name.endswith(("rk45", "dopri5")) else steps_sweep:
            x, nfe = fn(gscore, sde, x0, setting)
            err = (x - ref).pow(2).mean().sqrt().item()
            curves.setdefault(name, []).append((nfe, err))
            table.rows.append([name, setting, nfe, err])
    return table, curves


def per_nfe_cost(report, meths, score_fn, settings, batch, repeats, bare: bool):
    """Wall time per evaluation of each implementation at equal settings, timed in alternation."""
    sde = VESDE()
    x0 = start(sde, (batch, 1, 8, 8))
    runs = {name: (lambda fn=fn, n=settings[name]: fn(score_fn, sde, x0, n)) for name, (_, fn)
            in meths.items()}
    nfes = {name: r()[1] for name, r in runs.items()}
    runs["A/A"] = runs["ours heun"]  # ours against itself: the noise floor of the ratios
    rounds = {}
    best = race(runs, repeats=repeats, rounds=rounds)
    aa = paired_ratio(rounds, "ours heun", "A/A")
    best.pop("A/A")
    per = {name: best[name] / nfes[name] for name in meths}
    if bare:
        table = Table("ODE per-evaluation cost without the network (near-free score x -> -x / (s^2 + 1), "
                      "same settings)", ["method", "NFE", "us per NFE", "ratio ours/ref"])
    else:
        table = Table(f"ODE sampling wall time on the default U-Net (batch {batch}, best of {repeats}, "
                      "alternating)", ["method", "steps / tol", "NFE", "ms/sample", "ms per NFE",
                                       "ratio ours/ref per NFE"])
    table.notes.append(f"A/A check, ours heun timed against itself in the same race: ratio {aa:.3f} "
                       "(the noise floor of this table's ratios); ratios are medians over rounds of the "
                       "back-to-back per-NFE ratio, times are best-ofs")
    for name, (fam, _) in meths.items():
        mine = _ours_for(name, fam)
        ratio = paired_ratio(rounds, mine, name, nfes[name] / nfes[mine]) if mine else float("nan")
        if bare:
            table.rows.append([name, nfes[name], per[name] * 1e6, ratio])
        else:
            table.rows.append([name, settings[name], nfes[name], best[name] / batch * 1e3, per[name] * 1e3,
                               ratio])
        if mine:
            what = "per-NFE cost without the network" if bare else "time per NFE on the U-Net"
            why = WHY_BARE.get(fam, "") if bare else (
                "per step both do the same network call and a few elementwise ops (see the no-network "
                "table); compare the excess with the noise column")
            report.checks.append(Check(f"ODE {mine} vs {name}: {what}", ratio, 1.0, if_missed=why,
                                       noise=abs(aa - 1)))
    report.tables.append(table)

    def pair(a, b):  # back-to-back per-NFE ratio a / b
        return paired_ratio(rounds, a, b, nfes[b] / nfes[a])

    return per, abs(aa - 1), pair


def equal_accuracy(report, meths, curves, per_nfe, targets, batch, noise, pair):
    """Table 3: time at equal accuracy = NFE needed (exact score) x wall time per NFE (U-Net)."""
    table = Table("ODE sampling at equal accuracy: NFE needed for an RMS error target, x measured ms per NFE",
                  ["RMS error target"] + list(meths),
                  notes=["cells: NFE needed (estimated ms per sample on the U-Net); "
                         "'-' = not reached in the sweep",
                         "ours heun / euler step uniformly in t (geometric in sigma for VE, the paper's "
                         "grid); ours heun-sigma / euler-sigma take the same grid but step in sigma, "
                         "like k-diffusion; k-diffusion's Karras rho=7 schedule spends more steps at "
                         "small sigma"])
    for target in targets:
        row = [target]
        for name in meths:
            nfe = min((n for n, e in curves[name] if e <= target), default=None)
            row.append("-" if nfe is None else f"{nfe} ({nfe * per_nfe[name] / batch * 1e3:.1f} ms)")
        table.rows.append(row)
        best_ours = _best_at(curves, per_nfe, target, lambda n: n.startswith("ours"))
        best_ref = _best_at(curves, per_nfe, target, lambda n: not n.startswith("ours"))
        if best_ours and best_ref:
            twin = best_ref[0] == "torchdiffeq dopri5" or (
                best_ours[0].endswith("-sigma") and best_ref[0].endswith("(same grid)"))
            nfe_ratio = _nfe_at(curves[best_ours[0]], target) / _nfe_at(curves[best_ref[0]], target)
            report.checks.append(Check(
                f"ODE at RMS error {target:g}: fastest ours vs fastest reference",
                nfe_ratio * pair(best_ours[0], best_ref[0]),
                1.0, f"{best_ours[0]} vs {best_ref[0]} (time at equal accuracy)", noise=noise,
                if_missed=WHY_TWIN if twin else WHY_GRID))
    report.tables.append(table)


def run(quick: bool = False) -> Report:
    kd_ok = k_diffusion_sampling() is not None
    steps_sweep = [4, 8] if quick else [4, 8, 16, 32, 64, 128, 256]
    tol_sweep = [1e-2, 1e-3] if quick else [1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6]
    targets = [3e-2] if quick else [3e-2, 1e-2, 3e-3, 1e-3]
    n_gmm, batch, repeats, time_steps = (64, 4, 1, 4) if quick else (512, 16, 5, 20)
    report = Report("ode")
    meths = methods(kd_ok, optional("torchdiffeq") is not None)
    settings = {name: (1e-3 if name.endswith(("rk45", "dopri5")) else time_steps) for name in meths}
    sde = VESDE()
    with torch.inference_mode():
        acc, curves = accuracy(meths, steps_sweep, tol_sweep, n_gmm, 1e-6 if quick else 1e-10)
        if not kd_ok:
            acc.notes.append("k-diffusion not installed: its rows are skipped")
        report.tables.append(acc)
        unet = get_score_fn(sde, default_unet("ve"))
        per_nfe, noise, pair = per_nfe_cost(report, meths, unet, settings, batch, repeats, bare=False)
        cheap = lambda x, t: -x / (sde.std(t).view(-1, *[1] * (x.ndim - 1)) ** 2 + 1)  # noqa: E731
        per_nfe_cost(report, meths, cheap, settings, batch, repeats + 2, bare=True)
    equal_accuracy(report, meths, curves, per_nfe, targets, batch, noise, pair)
    return report


def _nfe_at(curve, target):
    return min(n for n, e in curve if e <= target)


def _best_at(curves, per_nfe, target, keep):
    cands = [(name, min(n for n, e in c if e <= target) * per_nfe[name]) for name, c in curves.items()
             if keep(name) and any(e <= target for _, e in c)]
    return min(cands, key=lambda c: c[1], default=None)


if __name__ == "__main__":
    cli_main(run, __doc__)
