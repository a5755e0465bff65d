"""sample: draw one (sampler, steps) case of the sweep from the selected checkpoint's EMA weights.

Writes ``{case}.pt`` = ``{"images": uint8 (N, C, H, W) 0..255}`` (samples mapped back from
model space onto the dataset's level grid) and the sidecar ``{case}.json`` with the case's
fields (dataset, sde, sampler, predictor, corrector, steps, denoise, nfe, seconds, n_samples)
and the resolved parameters, for each denoise setting asked for: the Tweedie on / off cases of
a (sampler, steps) pair come from one trajectory, and ``seconds`` is that run's wall time.
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

from scoresde.stages.cases import describe, parse_denoise, parse_steps, sampler_options
from scoresde.stages.common import (
    draw_samples,
    load_score_model,
    log,
    provenance,
    save_tensors,
    setup_torch,
    write_json,
)


def run(params: dict, checkpoint: str, sampler: str, steps: str | int | None,
        denoise: Sequence[str], out: Sequence[str], meta_out: Sequence[str],
        device_name: str = "auto", threads: int = 1, expect_sde: str | None = None,
        seed_index: int = 0) -> list:
    """Draw one (sampler, steps) case for each denoise setting, from one trajectory; writes
    ``out[i]`` and ``meta_out[i]`` for ``denoise[i]`` and returns their records."""
    from scoresde.utils import pick_device

    if not len(denoise) == len(out) == len(meta_out) or len(set(denoise)) != len(denoise):
        raise ValueError(f"give one --out and one --meta per --denoise setting (got "
                         f"{len(denoise)} settings, {len(out)} --out, {len(meta_out)} --meta)")
    steps_ = parse_steps(sampler, steps)
    flags = [parse_denoise(d) for d in denoise]
    sample = params["sample"]
    if seed_index < 0:
        raise ValueError(f"--seed-index must be >= 0, got {seed_index}")
    setup_torch(threads)
    device = pick_device(device_name)
    model, sde, meta = load_score_model(checkpoint, device, expect_sde)
    snr = sample["snr"][sde.name]
    options = sampler_options(sample, sde.name, sampler)
    images, nfe, seconds = draw_samples(
        model, sde, meta, sampler, steps_, flags, sample["n_samples"], sample["batch_size"],
        sample["seed"], device, first=seed_index * sample["n_samples"], snr=snr,
        corrector_steps=sample["corrector_steps"], eps=sample["eps"], rtol=sample["rtol"],
        atol=sample["atol"], sigma_min=sample["sigma_min"][sde.name], options=options)
    records = []
    for name, flag, path, meta_path in zip(denoise, flags, out, meta_out, strict=True):
        record = {"dataset": meta["dataset"], "sde": sde.name,
                  **describe(sampler, steps_, flag),
                  "nfe": nfe[flag], "seconds": round(seconds, 3),
                  "n_samples": len(images[flag]), "snr": snr, "seed_index": seed_index,
                  "options": options, "sigma_min": sample["sigma_min"][sde.name],
                  "trajectory_shared_by": list(denoise),
                  "checkpoint_step": meta.get("step"), "device": str(device)}
        save_tensors(path, {"images": images[flag]})
        write_json(meta_path, {**record, "config": provenance(
            "sample", params, checkpoint=str(checkpoint), output=str(path))})
        log(f"{sde.name} {sampler} steps={steps} denoise={name}: {len(images[flag])} samples, "
            f"nfe {nfe[flag]}, {seconds:.1f}s -> {path}")
        records.append(record)
    return records
