"""sample, sample-cases: draw cases of the sweep from the selected checkpoint's EMA weights.

A case is ``{sampler}_{steps}_{denoise}`` (:mod:`scoresde.stages.cases`). Each case writes
``{case}.pt`` = ``{"images": uint8 (N, C, H, W) 0..255, "case": {dataset, sde, sampler, steps,
denoise, seed_index}}`` (samples mapped back from model space onto the dataset's level grid) and
the sidecar ``{case}.json`` with the case's fields (dataset, sde, sampler, predictor, corrector,
steps, denoise, nfe, seconds, n_samples) and the resolved parameters. The cases of one
trajectory (sampler, steps) -- Tweedie on and off -- come from one run, and ``seconds`` is that
run's wall time. ``sample-cases`` draws any number of trajectories in one process: the checkpoint
is read once, every case's files are exactly those of a ``sample`` job of its own (the samples do
not depend on what else the process drew), and they are written only once every case is drawn.

Sample i uses a generator seeded from ``sample.seed`` and i, so every case starts from the same
prior draws x_T. Seed k of ``report.seeds`` (``seed_index``) draws samples k*n .. k*n + n - 1
of those streams (n = ``sample.n_samples``): disjoint from every other seed's, and seed 0 is the
sweep's usual case. The samples of the fixed-step ODE methods and of the predictor-only samplers do
not depend on the batch size; those of the Langevin corrector (``pc``, ``c``: its step size uses
norms averaged over the batch) and of RK45 (step sizes shared by the batch) do.
With ``tweedie`` the result is one Tweedie step at eps after the sampler lands there, and ``nfe``
counts it.
"""

from __future__ import annotations

from collections.abc import Sequence

from scoresde.stages.cases import (
    CASE_KEYS,
    case_name,
    describe,
    parse_denoise,
    parse_steps,
    sampler_options,
)
from scoresde.stages.common import (
    compiled_model,
    draw_samples,
    load_score_model,
    log,
    provenance,
    save_tensors,
    setup_torch,
    write_json,
)


def parse_case(case: str) -> tuple[str, int | None, str]:
    """(sampler, steps, denoise) of a case name ``{sampler}_{steps}_{denoise}``."""
    rest, _, denoise = str(case).rpartition("_")
    sampler, sep, steps = rest.rpartition("_")
    if not sep:
        raise ValueError(f"case {case!r} is not '{{sampler}}_{{steps}}_{{denoise}}' (e.g. "
                         "pc_10_tweedie, ode-rk45_adaptive_none)")
    parse_denoise(denoise)
    return sampler, parse_steps(sampler, steps), denoise


def trajectories(cases: Sequence[str]) -> list[tuple[str, int | None, list[int]]]:
    """The cases grouped by trajectory: ``[(sampler, steps, [indices into cases])]`` in the
    order each trajectory first appears; ValueError for a malformed or repeated case."""
    if len(set(cases)) != len(cases):
        twice = sorted({c for c in cases if list(cases).count(c) > 1})
        raise ValueError(f"case {twice[0]} is given twice; give each case once")
    groups: dict[tuple[str, int | None], list[int]] = {}
    for i, case in enumerate(cases):
        sampler, steps, _ = parse_case(case)
        groups.setdefault((sampler, steps), []).append(i)
    return [(sampler, steps, idx) for (sampler, steps), idx in groups.items()]


def run_cases(params: dict, checkpoint: str, cases: Sequence[str], out: Sequence[str],
              meta_out: Sequence[str], device_name: str = "auto", threads: int = 1,
              expect_sde: str | None = None, seed_index: int = 0) -> list:
    """Draw every case of `cases`, one trajectory per (sampler, steps); writes ``out[i]`` and
    ``meta_out[i]`` for ``cases[i]`` and returns their records, in the order of `cases`."""
    from scoresde.utils import pick_device

    if not len(cases) == len(out) == len(meta_out) or not cases:
        raise ValueError(f"give one --out and one --meta per case (got {len(cases)} cases, "
                         f"{len(out)} --out, {len(meta_out)} --meta)")
    if seed_index < 0:
        raise ValueError(f"--seed-index must be >= 0, got {seed_index}")
    groups = trajectories(cases)  # every name checked before the checkpoint is read
    setup_torch(threads)
    device = pick_device(device_name)
    model, sde, meta = load_score_model(checkpoint, device, expect_sde)
    sample = params["sample"]
    model = compiled_model(model, sample.get("compile", "auto"), "sample", device,
                           meta["image_shape"], min(sample["n_samples"], sample["batch_size"]))
    records: list = [None] * len(cases)
    files: list = [None] * len(cases)
    for sampler, steps, idx in groups:
        names = [parse_case(cases[i])[2] for i in idx]
        drawn = draw_trajectory(params, model, sde, meta, sampler, steps, names,
                                [out[i] for i in idx], device, seed_index)
        for i, (record, images) in zip(idx, drawn, strict=True):
            records[i], files[i] = record, images
    # every case drawn: only now write them (each file atomically, the sidecars last), so a failure
    # or kill part-way leaves no complete-looking subset of the cases behind
    for path, images, record in zip(out, files, records, strict=True):
        save_tensors(path, {"images": images, "case": {k: record[k] for k in CASE_KEYS}})
    for path, meta_path, record in zip(out, meta_out, records, strict=True):
        write_json(meta_path, {**record, "config": provenance(
            "sample", params, checkpoint=str(checkpoint), output=str(path))})
        log(f"wrote {path} and {meta_path}")
    return records


def draw_trajectory(params: dict, model, sde, meta: dict, sampler: str, steps: int | None,
                    denoise: Sequence[str], out: Sequence[str], device, seed_index: int) -> list:
    """One (sampler, steps) trajectory: ``[(record, uint8 images)]``, one per denoise setting
    (written by :func:`run_cases` once every case is drawn)."""
    sample = params["sample"]
    flags = [parse_denoise(d) for d in denoise]
    snr = sample["snr"][sde.name]
    options = sampler_options(sample, sde.name, sampler)
    images, nfe, seconds = draw_samples(
        model, sde, meta, sampler, steps, flags, sample["n_samples"], sample["batch_size"],
        sample["seed"], device, first=seed_index * sample["n_samples"], snr=snr,
        corrector_steps=sample["corrector_steps"], eps=sample["eps"], rtol=sample["rtol"],
        atol=sample["atol"], sigma_min=sample["sigma_min"][sde.name], options=options)
    records = []
    for name, flag, path in zip(denoise, flags, out, strict=True):
        record = {"dataset": meta["dataset"], "sde": sde.name,
                  **describe(sampler, steps, flag),
                  "nfe": nfe[flag], "seconds": round(seconds, 3),
                  "n_samples": len(images[flag]), "snr": snr, "seed_index": seed_index,
                  "options": options, "sigma_min": sample["sigma_min"][sde.name],
                  "trajectory_shared_by": list(denoise),
                  "checkpoint_step": meta.get("step"), "device": str(device)}
        log(f"{sde.name} {case_name(sampler, steps, name)}: {len(images[flag])} samples, "
            f"nfe {nfe[flag]}, {seconds:.1f}s (for {path})")
        records.append((record, images[flag]))
    return records


def run(params: dict, checkpoint: str, sampler: str, steps: str | int | None,
        denoise: Sequence[str], out: Sequence[str], meta_out: Sequence[str],
        device_name: str = "auto", threads: int = 1, expect_sde: str | None = None,
        seed_index: int = 0) -> list:
    """Draw one (sampler, steps) case for each denoise setting, from one trajectory; writes
    ``out[i]`` and ``meta_out[i]`` for ``denoise[i]`` and returns their records."""
    if not len(denoise) == len(out) == len(meta_out) or len(set(denoise)) != len(denoise):
        raise ValueError(f"give one --out and one --meta per --denoise setting (got "
                         f"{len(denoise)} settings, {len(out)} --out, {len(meta_out)} --meta)")
    steps_ = parse_steps(sampler, steps)
    cases = [case_name(sampler, steps_, d) for d in denoise]
    return run_cases(params, checkpoint, cases, out, meta_out, device_name, threads,
                     expect_sde, seed_index)
