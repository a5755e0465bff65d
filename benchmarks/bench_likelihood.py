"""Probability-flow likelihood: our torch RK45 against the official scipy approach and raw torchdiffeq.

Same network (the default U-Net, VP, after 100 DSM steps on digits), same dequantised digits, same
Rademacher probe, same tolerances. The candidates:

- ours: ``log_likelihood`` (torchdiffeq dopri5 on the tensors, drift and divergence from one forward
  and one vector-Jacobian product, the last step landing on T);
- scipy (official): ``scipy.integrate.solve_ivp(method="RK45")`` on one flattened float64 numpy state,
  converting numpy -> torch -> numpy at every evaluation, with the drift and the divergence computed
  separately (two forwards and one backward per evaluation), as ``likelihood.py`` of score_sde_pytorch;
- scipy (fused): the same, with our fused drift + divergence (isolates the solver and the copies);
- torchdiffeq dopri5: ``odeint`` called directly on the fused function.

Then Hutchinson probes 1 / 4 / 16 per evaluation (vectorised: the batch is replicated K times for one
forward and one VJP) against a Python loop of K single-probe solves, and the estimators against the
exact log-density of a 2-D Gaussian mixture (exact divergence for low dimension).

    python benchmarks/bench_likelihood.py [--quick] [--threads 1]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from benchlib import Check, Report, Table, cli_main, optional, paired_ratio, race, trained_unet

from scoresde import VESDE, VPSDE, bits_per_dim, get_score_fn, log_likelihood, uniform_dequantize
from scoresde.likelihood import _probes, divergence_fn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from exact import narrow_mixture  # noqa: E402

LEVELS, SCALE = 17, 2.0  # digits: 17 levels, model space [-1, 1]
WHY = {"torchdiffeq dopri5 (raw)": "the same solver on the same function; ours adds only step_t (the last "
       "step lands on T instead of evaluating the score past T), which can change the accepted steps"}


def digits_batch(batch: int) -> torch.Tensor:
    """Dequantised 8x8 digits in [-1, 1] (scikit-learn's, no download)."""
    from scoresde.data import load_dataset

    k = load_dataset("digits", "test", n=batch).x
    return 2 * uniform_dequantize(k, LEVELS, torch.Generator().manual_seed(0)) - 1


def probe(x, seed):
    """The probe ``log_likelihood`` draws from ``Generator().manual_seed(seed)``, shape (B, ...)."""
    return _probes(x, "rademacher", 1, torch.Generator().manual_seed(seed))[0]


def ours(score_fn, sde, x, tol, seed, n_probes=1):
    return log_likelihood(score_fn, sde, x, rtol=tol, atol=tol, eps=1e-5, n_probes=n_probes,
                          generator=torch.Generator().manual_seed(seed))


def scipy_official(score_fn, sde, x, tol, seed, fused=False):
    """score_sde_pytorch's ``likelihood_fn``: solve_ivp(RK45) on flattened numpy, float32 network."""
    from scipy import integrate

    shape, B = x.shape, x.shape[0]
    eps_probe = probe(x, seed)
    rsde = sde.reverse(score_fn, probability_flow=True)
    drift_fn = lambda y, t: rsde.sde(y, t)[0]  # noqa: E731
    fused_div = divergence_fn(drift_fn, "rademacher")
    count = [0]

    def div_fn(y, t):  # the official get_div_fn: grad of <drift, eps> . eps
        with torch.enable_grad():
            y = y.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(torch.sum(drift_fn(y, t) * eps_probe), y)
        return torch.sum(grad * eps_probe, dim=tuple(range(1, y.ndim)))

    def ode_func(t, state):
        count[0] += 1
        sample = torch.from_numpy(state[:-B]).reshape(shape).type(torch.float32)
        vec_t = torch.ones(B) * t
        if fused:
            drift, div = fused_div(sample, vec_t, eps_probe[None])
        else:
            drift, div = drift_fn(sample, vec_t), div_fn(sample, vec_t)
        return np.concatenate([drift.detach().cpu().numpy().reshape(-1), div.detach().cpu().numpy()])

    init = np.concatenate([x.cpu().numpy().reshape(-1), np.zeros(B)])
    sol = integrate.solve_ivp(ode_func, (1e-5, sde.T), init, rtol=tol, atol=tol, method="RK45")
    zp = sol.y[:, -1]
    z = torch.from_numpy(zp[:-B]).reshape(shape).type(torch.float32)
    delta = torch.from_numpy(zp[-B:]).type(torch.float32)
    return sde.prior_logp(z) + delta, count[0]


def torchdiffeq_raw(score_fn, sde, x, tol, seed):
    """odeint(dopri5) on the fused function, as a user would call it (no step_t)."""
    from torchdiffeq import odeint

    rsde = sde.reverse(score_fn, probability_flow=True)
    div = divergence_fn(lambda y, t: rsde.sde(y, t)[0], "rademacher")
    probes, B, count = probe(x, seed)[None], x.shape[0], [0]

    def func(t, state):
        count[0] += 1
        return div(state[0], t.expand(B), probes)

    span = torch.tensor([1e-5, sde.T])
    z, delta = (s[-1] for s in odeint(func, (x, torch.zeros(B)), span, rtol=tol, atol=tol, method="dopri5"))
    return sde.prior_logp(z) + delta, count[0]


def bpd(logp):
    return bits_per_dim(logp, 64, LEVELS, SCALE)


def solver_table(report, score_fn, sde, x, tol, repeats, have_scipy, check: bool):
    seed = 3
    cands = {"ours (torch RK45)": lambda: ours(score_fn, sde, x, tol, seed),
             "torchdiffeq dopri5 (raw)": lambda: torchdiffeq_raw(score_fn, sde, x, tol, seed)}
    if have_scipy:
        cands["scipy RK45, official (2 forwards)"] = lambda: scipy_official(score_fn, sde, x, tol, seed)
        cands["scipy RK45, fused divergence"] = lambda: scipy_official(score_fn, sde, x, tol, seed, True)
    answers, rounds = {}, {}
    if check:  # ours against itself: the noise floor of the ratios
        cands["A/A"] = cands["ours (torch RK45)"]
    best = race(cands, repeats=repeats, warmup=0, keep=answers, rounds=rounds)
    noise = abs(paired_ratio(rounds, "ours (torch RK45)", "A/A") - 1) if check else 0.0
    cands.pop("A/A", None)
    ref_bpd = bpd(answers["ours (torch RK45)"][0])
    table = Table(f"Likelihood (VP, U-Net trained briefly, {x.shape[0]} digits, rtol = atol = {tol:g}, "
                  f"best of {repeats}, alternating)",
                  ["solver", "NFE", "wall s", "mean bits/dim", "max abs bpd diff vs ours", "ratio ours/this"])
    for name in cands:
        logp, nfe = answers[name]
        b = bpd(logp)
        diff = (b - ref_bpd).abs().max().item()
        ratio = paired_ratio(rounds, "ours (torch RK45)", name)
        table.rows.append([name, nfe, best[name], b.mean().item(), diff, ratio])
        if check and not name.startswith("ours"):
            agree = diff <= 0.01
            report.checks.append(Check(f"likelihood ours vs {name} (tol {tol:g})", ratio, 1.0,
                                       f"bits/dim {'agree' if agree else 'DISAGREE'}: max diff {diff:.1e} "
                                       "(target 0.01)", agree, if_missed=WHY.get(name, ""), noise=noise))
    report.tables.append(table)


def probes_table(report, score_fn, sde, x, tol, counts, repeats):
    B = x.shape[0]
    runs = {k: (lambda k=k: ours(score_fn, sde, x, tol, 5, n_probes=k)) for k in counts}
    loop_k = counts[1]
    runs[f"loop {loop_k}"] = lambda: [ours(score_fn, sde, x, tol, 5 + i) for i in range(loop_k)]
    nfes = {k: runs[k]()[1] for k in counts}
    nfes[f"loop {loop_k}"] = sum(r[1] for r in runs[f"loop {loop_k}"]())
    rounds = {}
    best = race(runs, repeats=repeats, warmup=0, rounds=rounds)
    table = Table(f"Hutchinson probes per evaluation (batch {B}, rtol = atol = {tol:g}, best of {repeats})",
                  ["probes", "how", "NFE", "wall s", "time / time(1 probe)", "time per probe-solve"],
                  notes=["vectorised: the batch is replicated K times, one forward + one VJP per evaluation; "
                         f"'loop {loop_k}' is {loop_k} separate single-probe solves (a Python loop)"])
    for k in runs:
        vec = isinstance(k, int)
        n = k if vec else loop_k
        table.rows.append([n, "vectorised" if vec else "python loop", nfes[k], best[k], best[k] / best[1],
                           best[k] / n])
    ratio = paired_ratio(rounds, loop_k, f"loop {loop_k}")
    report.checks.append(Check(f"likelihood {loop_k} probes vectorised vs python loop", ratio, 1.0))
    report.tables.append(table)


def exactness_table(report, n, counts, tol=1e-5):
    sde, mix = VESDE(), narrow_mixture()
    x = mix.sample(n, torch.Generator().manual_seed(0))[0]
    truth = mix.log_prob_t(sde, x, torch.full((n,), 1e-5, dtype=torch.float64))
    table = Table(f"Estimators against the exact log-density (2-D Gaussian mixture, VE, n = {n}, float64, "
                  f"rtol = atol = {tol:g})",
                  ["divergence", "probes", "NFE", "mean abs error (nats)", "mean error (nats)"],
                  notes=["the exact divergence uses the D basis probes in the same vectorised pass"])
    for div, ks in (("exact", [1]), ("rademacher", counts), ("gaussian", counts[:1])):
        for k in ks:
            logp, nfe = log_likelihood(mix.score_fn(sde), sde, x, rtol=tol, atol=tol, divergence=div,
                                       n_probes=k, generator=torch.Generator().manual_seed(1))
            err = logp - truth
            table.rows.append([div, "D" if div == "exact" else k, nfe, err.abs().mean().item(),
                               err.mean().item()])
    report.tables.append(table)


def run(quick: bool = False) -> Report:
    have_scipy = optional("scipy") is not None
    report = Report("likelihood")
    batch, repeats, train_steps, channels = (2, 1, 5, 8) if quick else (4, 2, 100, 32)
    tols = [1e-1] if quick else [1e-5, 1e-3]
    counts = [1, 2] if quick else [1, 4, 16]
    sde = VPSDE()
    score_fn = get_score_fn(sde, trained_unet(sde, train_steps, channels=channels))
    x = digits_batch(batch)
    for tol in tols:
        # the paper's tolerance carries the targets; looser ones are shown for the NFE trend
        solver_table(report, score_fn, sde, x, tol, repeats, have_scipy, check=tol == tols[0])
    probes_table(report, score_fn, sde, x, tols[-1], counts, repeats)
    exactness_table(report, 32 if quick else 256, counts, 1e-2 if quick else 1e-5)
    return report


if __name__ == "__main__":
    cli_main(run, __doc__)
