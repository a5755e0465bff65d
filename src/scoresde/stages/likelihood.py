"""likelihood: test-set bits/dim through the probability-flow ODE (Song et al. 2021, Sec. 4.3).

Each test image's integer levels k are dequantised to (k + u) / L, u ~ U[0, 1) (per-image
seeds), mapped to model space, and log p is integrated with adaptive RK45 and the
Skilling-Hutchinson divergence estimate (``eval.likelihood``: rtol, atol, eps, divergence,
n_probes). bits/dim = -log p / (D ln 2) + log2 L - log2(scale), scale 2 for data in [-1, 1].
"""

from __future__ import annotations

import math

import torch

from scoresde.stages.common import (
    StageError,
    batches,
    load_score_model,
    load_split,
    log,
    per_sample_generators,
    provenance,
    setup_torch,
    timer,
    write_json,
)


def test_levels(split: dict, meta: dict, n_images: int | None, path: str) -> torch.Tensor:
    """The test images (levels) after checking they match what the model was trained on."""
    k = split["x"]
    if int(split["levels"]) != int(meta["levels"]) or list(k.shape[1:]) != meta["image_shape"]:
        raise StageError(f"{path} holds {split['levels']}-level images {tuple(k.shape[1:])} but "
                         f"the checkpoint was trained on {meta['levels']}-level images "
                         f"{tuple(meta['image_shape'])}; use the same dataset")
    return k[:n_images] if n_images else k


def run(params: dict, checkpoint: str, data_path: str, out: str, device_name: str = "auto",
        threads: int = 1, expect_sde: str | None = None) -> dict:
    from scoresde.data import to_model_space
    from scoresde.likelihood import bits_per_dim, log_likelihood, uniform_dequantize
    from scoresde.losses import get_score_fn
    from scoresde.utils import pick_device

    lk = params["eval"]["likelihood"]
    setup_torch(threads)
    device = pick_device(device_name)
    model, sde, meta = load_score_model(checkpoint, device, expect_sde)
    k = test_levels(load_split(data_path), meta, lk["n_images"], data_path)
    levels, dim = int(meta["levels"]), k[0].numel()
    scale = 2.0 if meta["centered"] else 1.0
    score_fn = get_score_fn(sde, model)
    bpd, nfes = [], []
    with timer() as t:
        for start, count in batches(len(k), lk["batch_size"]):
            gens = per_sample_generators(lk["seed"], start, count, device)
            y = uniform_dequantize(k[start:start + count].to(device), levels, gens)
            logp, nfe = log_likelihood(
                score_fn, sde, to_model_space(y, meta["centered"]), rtol=lk["rtol"],
                atol=lk["atol"], eps=lk["eps"], divergence=lk["divergence"],
                n_probes=lk["n_probes"], generator=gens)
            bpd.append(bits_per_dim(logp, dim, levels, scale).double().cpu())
            nfes.append(nfe)
            log(f"{sde.name}: images {start}..{start + count - 1}: "
                f"{bpd[-1].mean().item():.4f} bits/dim, nfe {nfe}")
    bpd = torch.cat(bpd)
    n = len(bpd)
    result = {
        "dataset": meta["dataset"], "sde": sde.name, "bpd": bpd.mean().item(),
        "bpd_sem": bpd.std().item() / math.sqrt(n) if n > 1 else None,
        "nfe": sum(nfes) / len(nfes), "n_images": n, "divergence": lk["divergence"],
        "n_probes": lk["n_probes"], "rtol": lk["rtol"], "atol": lk["atol"], "eps": lk["eps"],
        "levels": levels, "centered": bool(meta["centered"]),
        "trained_dequantized": bool(meta["dequantize"]), "checkpoint_step": meta.get("step"),
        "seconds": round(t[0], 3),
    }  # fmt: skip
    write_json(out, {**result, "config": provenance(
        "likelihood", {"eval": {"likelihood": lk}}, checkpoint=str(checkpoint),
        data=str(data_path))})
    log(f"{sde.name}: {result['bpd']:.4f} +- {result['bpd_sem']:.4f} bits/dim over {n} test "
        f"images ({t[0]:.1f}s) -> {out}")
    return result
