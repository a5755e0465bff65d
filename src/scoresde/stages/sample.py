"""sample: draw one case of the sweep from the selected checkpoint's EMA weights.

Writes ``{case}.pt`` = ``{"images": uint8 (N, C, H, W) 0..255}`` (samples mapped back from
model space onto the dataset's level grid) and the sidecar ``{case}.json`` with the case's
fields (dataset, sde, sampler, predictor, corrector, steps, denoise, nfe, seconds, n_samples)
and the resolved parameters. Sample i uses a generator seeded from ``sample.seed`` and i, so
every case starts from the same prior draws and the result does not depend on the batch size
(except through the adaptive solver's shared step sizes).
"""

from __future__ import annotations

from scoresde.stages.cases import describe, parse_denoise, parse_steps
from scoresde.stages.common import (
    draw_samples,
    load_score_model,
    log,
    provenance,
    save_tensors,
    setup_torch,
    write_json,
)


def run(params: dict, checkpoint: str, sampler: str, steps: str | int | None, denoise: str,
        out: str, meta_out: str, device_name: str = "auto", threads: int = 1,
        expect_sde: str | None = None) -> dict:
    from scoresde.utils import pick_device

    steps_ = parse_steps(sampler, steps)
    denoise_ = parse_denoise(denoise)
    sample = params["sample"]
    setup_torch(threads)
    device = pick_device(device_name)
    model, sde, meta = load_score_model(checkpoint, device, expect_sde)
    snr = sample["snr"][sde.name]
    images, nfe, seconds = draw_samples(
        model, sde, meta, sampler, steps_, denoise_, sample["n_samples"], sample["batch_size"],
        sample["seed"], device, snr=snr, corrector_steps=sample["corrector_steps"],
        eps=sample["eps"], rtol=sample["rtol"], atol=sample["atol"])
    record = {"dataset": meta["dataset"], "sde": sde.name,
              **describe(sampler, steps_, denoise_),
              "nfe": nfe, "seconds": round(seconds, 3), "n_samples": len(images),
              "snr": snr, "checkpoint_step": meta.get("step"), "device": str(device)}
    save_tensors(out, {"images": images})
    write_json(meta_out, {**record, "config": provenance(
        "sample", params, checkpoint=str(checkpoint), output=str(out))})
    log(f"{sde.name} {sampler} steps={steps} denoise={denoise}: {len(images)} samples, "
        f"nfe {nfe}, {seconds:.1f}s -> {out}")
    return record
