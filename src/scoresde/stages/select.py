"""select-checkpoint: a quick FID of every snapshot's EMA weights; the best is copied to best.pt.

The paper reports FID at the checkpoint with the smallest FID; here each snapshot draws
``select.n_samples`` images with a cheap sampler (``select.sampler`` / ``select.steps``) and
the same per-sample seeds, so the ranking compares weights, not noise.
"""

from __future__ import annotations

import shutil

from scoresde.checkpoint import atomic_write
from scoresde.stages.cases import ADAPTIVE, parse_denoise, parse_steps
from scoresde.stages.common import (
    compiled_model,
    draw_samples,
    load_reference,
    load_score_model,
    log,
    provenance,
    setup_torch,
    write_csv,
    write_json,
)

COLUMNS = ("step", "fid", "kid", "kid_std", "nfe", "seconds", "checkpoint", "best")


def score_snapshot(path: str, params: dict, reference, extractor: str, device,
                   expect_sde: str | None, nets: dict | None = None) -> dict:
    """One snapshot's row. ``nets`` (a dict kept across the snapshots of one run) holds the first
    snapshot's network, compiled when ``select.compile`` asks for it; later snapshots load their
    weights into it, so the network is compiled once per job."""
    from scoresde.metrics import compute_fid_kid

    sel = params["select"]
    model, sde, meta = load_score_model(path, device, expect_sde)
    nets = {} if nets is None else nets
    if "net" in nets:
        nets["model"].load_state_dict(model.state_dict())
    else:
        nets["model"] = model
        nets["net"] = compiled_model(model, sel.get("compile", "auto"), "select", device,
                                     meta["image_shape"], min(sel["n_samples"], sel["batch_size"]))
    model = nets["net"]
    sampler = sel["sampler"]
    steps = parse_steps(sampler, "adaptive" if sampler in ADAPTIVE else sel["steps"])
    denoise = parse_denoise(sel["denoise"])
    images, nfe, seconds = draw_samples(
        model, sde, meta, sampler, steps, [denoise], sel["n_samples"], sel["batch_size"],
        sel["seed"], device, snr=sel["snr"], rtol=sel["rtol"], atol=sel["atol"])
    images, nfe = images[denoise], nfe[denoise]
    metrics = compute_fid_kid(images, reference, extractor_weights_path=extractor,
                              cuda=device.type == "cuda", seed=sel["seed"])
    row = {"step": int(meta["step"]), "fid": metrics["fid"], "kid": metrics["kid"],
           "kid_std": metrics["kid_std"], "nfe": nfe, "seconds": round(seconds, 3),
           "checkpoint": str(path)}
    log(f"{path}: FID {row['fid']:.3f} ({sampler}, nfe {nfe}, {seconds:.1f}s)")
    return row


def run(params: dict, checkpoints: list[str], reference_path: str, extractor_path: str,
        best_out: str, table_out: str, config_out: str, device_name: str = "auto",
        threads: int = 1, expect_sde: str | None = None) -> dict:
    from scoresde.utils import pick_device

    setup_torch(threads)
    device = pick_device(device_name)
    reference = load_reference(reference_path)
    nets: dict = {}
    rows = [score_snapshot(p, params, reference, extractor_path, device, expect_sde, nets)
            for p in checkpoints]
    best = min(rows, key=lambda r: (r["fid"], -r["step"]))
    for row in rows:
        row["best"] = row is best
    with atomic_write(best_out) as tmp:
        shutil.copyfile(best["checkpoint"], tmp)
    write_csv(table_out, COLUMNS, sorted(rows, key=lambda r: r["step"]))
    write_json(config_out, provenance("select-checkpoint", params, best_step=best["step"],
                                      best_fid=best["fid"], best=str(best_out),
                                      candidates=[str(p) for p in checkpoints]))
    log(f"best: step {best['step']} (FID {best['fid']:.3f}) -> {best_out}")
    return best
