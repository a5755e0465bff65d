"""likelihood: test-set bits/dim through the probability-flow ODE (Song et al. 2021, Sec. 4.3).

Each test image's integer levels k are dequantised to (k + u) / L, u ~ U[0, 1) (image i from
the stream ``seed_stream(seed, "likelihood", i)``), mapped to model space, and log p is
integrated with adaptive RK45 and the Skilling-Hutchinson divergence estimate
(``eval.likelihood``: rtol, atol, eps, divergence, n_probes). bits/dim = -log p / (D ln 2) +
log2 L - log2(scale), scale 2 for data in [-1, 1].

:func:`images_bits_per_dim` is the computation for any score function (the tests run it on an
exact Gaussian score); :func:`run` reads the checkpoint and the test split and writes the JSON.
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


def images_bits_per_dim(score_fn, sde, k: torch.Tensor, levels: int, centered: bool, lk: dict,
                        device) -> tuple[torch.Tensor, list[int]]:
    """Bits/dim of each image of integer levels ``k`` (N, C, H, W) under ``score_fn``'s model.

    Dequantise y = (k + u) / L, map to model space x = scale * y + shift (scale 2, shift -1
    when ``centered``, else 1, 0), log p(x) by the probability-flow ODE, then
    ``bits_per_dim(logp, D, L, scale)``. ``lk`` is the ``eval.likelihood`` group (batch_size,
    rtol, atol, eps, divergence, n_probes, seed). Returns (float64 bits/dim (N,), NFE per batch).
    """
    from scoresde.data import to_model_space
    from scoresde.likelihood import bits_per_dim, log_likelihood, uniform_dequantize
    from scoresde.utils import per_sample_generators

    dim, scale = k[0].numel(), 2.0 if centered else 1.0
    bpd, nfes = [], []
    for start, count in batches(len(k), lk["batch_size"]):
        gens = per_sample_generators(lk["seed"], start, count, device, purpose="likelihood")
        y = uniform_dequantize(k[start:start + count].to(device), levels, gens)
        logp, nfe = log_likelihood(
            score_fn, sde, to_model_space(y, centered), rtol=lk["rtol"], atol=lk["atol"],
            eps=lk["eps"], divergence=lk["divergence"], n_probes=lk["n_probes"],
            generator=gens)
        bpd.append(bits_per_dim(logp, dim, levels, scale).double().cpu())
        nfes.append(nfe)
        log(f"{sde.name}: images {start}..{start + count - 1}: "
            f"{bpd[-1].mean().item():.4f} bits/dim, nfe {nfe}")
    return torch.cat(bpd), nfes


def run(params: dict, checkpoint: str, data_path: str, out: str, device_name: str = "auto",
        threads: int = 1, expect_sde: str | None = None) -> dict:
    """Writes ``out`` (nll.json): mean bits/dim ``bpd``, the per-image spread ``bpd_std`` and
    the standard error of the mean ``bpd_sem`` (both null for one image), ``bpd_per_image``
    (test image i's bits/dim, the same images and noise for every SDE: paired comparisons),
    mean NFE, settings and provenance."""
    from scoresde.losses import get_score_fn
    from scoresde.utils import pick_device

    lk = params["eval"]["likelihood"]
    setup_torch(threads)
    device = pick_device(device_name)
    model, sde, meta = load_score_model(checkpoint, device, expect_sde)
    k = test_levels(load_split(data_path), meta, lk["n_images"], data_path)
    levels = int(meta["levels"])
    with timer() as t:
        bpd, nfes = images_bits_per_dim(get_score_fn(sde, model), sde, k, levels,
                                        bool(meta["centered"]), lk, device)
    n = len(bpd)
    std = bpd.std().item() if n > 1 else None
    result = {
        "dataset": meta["dataset"], "sde": sde.name, "bpd": bpd.mean().item(),
        "bpd_std": std, "bpd_sem": std / math.sqrt(n) if n > 1 else None,
        "nfe": sum(nfes) / len(nfes), "n_images": n, "divergence": lk["divergence"],
        "n_probes": lk["n_probes"], "rtol": lk["rtol"], "atol": lk["atol"], "eps": lk["eps"],
        "levels": levels, "centered": bool(meta["centered"]),
        "trained_dequantized": bool(meta["dequantize"]), "checkpoint_step": meta.get("step"),
        "seconds": round(t[0], 3), "bpd_per_image": [round(v, 6) for v in bpd.tolist()],
    }  # fmt: skip
    write_json(out, {**result, "config": provenance(
        "likelihood", {"eval": {"likelihood": lk}}, checkpoint=str(checkpoint),
        data=str(data_path))})
    sem = f" +- {result['bpd_sem']:.4f}" if n > 1 else ""
    log(f"{sde.name}: {result['bpd']:.4f}{sem} bits/dim over {n} test images ({t[0]:.1f}s) "
        f"-> {out}")
    return result
