"""likelihood: test-set bounds on log P(k) through the probability-flow ODE (Song et al. 2021, Sec. 4.3).

Each test image's integer levels k get ``eval.likelihood.samples`` dequantisation draws per
proposal (image i's draws and Hutchinson probes from the stream ``seed_stream(seed,
"likelihood", i)``), mapped to model space x = scale (k + u) / L + shift (scale 2, shift -1 for
data in [-1, 1]); log p is integrated with adaptive RK45 (``eval.likelihood``: rtol, atol, eps,
divergence, n_probes). The methods of ``eval.likelihood.dequantization``
(:func:`scoresde.likelihood.discrete_log_likelihood`): ``uniform`` (the paper's bound) and
``importance`` share one set of uniform draws and one solve; ``truncated-normal`` has its own
(start time from ``eval.likelihood.tau``). bits/dim = -bound / (D ln 2), which for ``uniform`` is
-log p / (D ln 2) + log2 L - log2(scale).

:func:`image_bounds` is the computation for any score function (the tests run it on an exact
Gaussian score); :func:`run` reads the checkpoint and the test split and writes the JSON.
"""

from __future__ import annotations

import math

import torch

from scoresde.stages.common import (
    StageError,
    batches,
    checkpoint_score_fn,
    compiled_model,
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


def _group_of(methods) -> list[tuple[str, list[str]]]:
    """(proposal, methods) in solve order: uniform and importance share the uniform draws."""
    uniform = [m for m in methods if m != "truncated-normal"]
    return ([("uniform", uniform)] if uniform else []) + (
        [("truncated-normal", ["truncated-normal"])] if "truncated-normal" in methods else [])


def image_bounds(score_fn, sde, k: torch.Tensor, levels: int, centered: bool, lk: dict, device,
                 methods=("uniform",)) -> dict[str, dict]:
    """Bits/dim of each image of integer levels ``k`` (N, C, H, W) for every method in ``methods``.

    ``lk`` is the ``eval.likelihood`` group (batch_size, rtol, atol, eps, divergence, n_probes, seed;
    samples and tau optional: 1 and None); a batch holds batch_size // samples images (B * S
    draws per solve). Returns ``{method: {"bpd": float64 (N,), "nfe": [per batch], "seconds",
    "t0", "tau"}}``; methods of one proposal share its draws, solves and seconds.
    """
    from scoresde.likelihood import dequantized_log_densities, discrete_bits_per_dim, reduce_bound
    from scoresde.utils import per_sample_generators

    dim, samples = k[0].numel(), int(lk.get("samples", 1))
    scale, shift = (2.0, -1.0) if centered else (1.0, 0.0)
    out = {}
    for proposal, group in _group_of(methods):
        bpd = {m: [] for m in group}
        nfes, seconds, draws = [], 0.0, None
        for start, count in batches(len(k), max(1, lk["batch_size"] // samples)):
            gens = per_sample_generators(lk["seed"], start, count, device, purpose="likelihood")
            with timer() as t:
                draws = dequantized_log_densities(
                    score_fn, sde, k[start:start + count].to(device), levels, scale, shift, proposal,
                    samples, eps=lk["eps"], rtol=lk["rtol"], atol=lk["atol"],
                    divergence=lk["divergence"], n_probes=lk["n_probes"], generator=gens,
                    tau=lk.get("tau") if proposal == "truncated-normal" else None)
            seconds += t[0]
            nfes.append(draws.nfe)
            for m in group:
                bpd[m].append(discrete_bits_per_dim(reduce_bound(draws, m), dim).double().cpu())
            log(f"{sde.name} {proposal}: images {start}..{start + count - 1}: "
                + ", ".join(f"{m} {bpd[m][-1].mean().item():.4f}" for m in group)
                + f" bits/dim, nfe {draws.nfe}, {t[0]:.1f}s")
        for m in group:
            out[m] = {"bpd": torch.cat(bpd[m]), "nfe": nfes, "seconds": seconds, "t0": draws.t0,
                      "tau": draws.tau, "solve": proposal}
    return out


def images_bits_per_dim(score_fn, sde, k: torch.Tensor, levels: int, centered: bool, lk: dict,
                        device) -> tuple[torch.Tensor, list[int]]:
    """The paper's bound alone: uniform bits/dim per image (float64 (N,)) and NFE per batch."""
    r = image_bounds(score_fn, sde, k, levels, centered, lk, device)["uniform"]
    return r["bpd"], r["nfe"]


def _summary(bpd: torch.Tensor) -> dict:
    n = len(bpd)
    std = bpd.std().item() if n > 1 else None
    return {"bpd": bpd.mean().item(), "bpd_std": std, "bpd_sem": std / math.sqrt(n) if n > 1 else None}


def run(params: dict, checkpoint: str, data_path: str, out: str, device_name: str = "auto",
        threads: int = 1, expect_sde: str | None = None) -> dict:
    """Writes ``out`` (nll.json). Top level, the paper's uniform bound as before: mean bits/dim
    ``bpd``, the per-image spread ``bpd_std`` and the standard error of the mean ``bpd_sem``
    (both null for one image), ``bpd_per_image`` (test image i's bits/dim, the same images and
    noise for every SDE: paired comparisons), mean NFE, settings and provenance. ``bounds``: one
    entry per method (``method``, ``bpd``, ``bpd_std``, ``bpd_sem``, ``nfe``, ``seconds`` of its
    solves, ``samples``, ``t0``, ``tau``, ``shares_solve_with``, ``bpd_per_image``)."""
    from scoresde.utils import pick_device

    lk = params["eval"]["likelihood"]
    methods = list(lk.get("dequantization", ["uniform"]))
    if "uniform" not in methods:
        raise StageError(f"eval.likelihood.dequantization={methods} lacks 'uniform', the paper's bound "
                         "every other bound is compared with; add it")
    setup_torch(threads)
    device = pick_device(device_name)
    model, sde, meta = load_score_model(checkpoint, device, expect_sde)
    # one batch size: the first solve's rows (the largest), smaller batches padded to it
    model = compiled_model(model, lk.get("compile", "auto"), "likelihood", device, meta["image_shape"])
    k = test_levels(load_split(data_path), meta, lk["n_images"], data_path)
    levels = int(meta["levels"])
    with timer() as t:
        res = image_bounds(checkpoint_score_fn(sde, model, meta), sde, k, levels,
                           bool(meta["centered"]), lk, device, methods)
    bounds = []
    for m in methods:
        r = res[m]
        shared = [o for o in methods if o != m and res[o]["solve"] == r["solve"]]
        bounds.append({
            "method": m, **_summary(r["bpd"]), "nfe": sum(r["nfe"]) / len(r["nfe"]),
            "seconds": round(r["seconds"], 3), "samples": int(lk.get("samples", 1)), "t0": r["t0"],
            "tau": r["tau"], "shares_solve_with": shared,
            "bpd_per_image": [round(v, 6) for v in r["bpd"].tolist()],
        })  # fmt: skip
    uniform, n = res["uniform"], len(k)
    result = {
        "dataset": meta["dataset"], "sde": sde.name, **_summary(uniform["bpd"]),
        "nfe": sum(uniform["nfe"]) / len(uniform["nfe"]), "n_images": n, "divergence": lk["divergence"],
        "n_probes": lk["n_probes"], "rtol": lk["rtol"], "atol": lk["atol"], "eps": lk["eps"],
        "samples": int(lk.get("samples", 1)), "levels": levels, "centered": bool(meta["centered"]),
        "trained_dequantized": bool(meta["dequantize"]), "checkpoint_step": meta.get("step"),
        "seconds": round(t[0], 3), "bpd_per_image": bounds[methods.index("uniform")]["bpd_per_image"],
        "bounds": bounds,
    }  # fmt: skip
    write_json(out, {**result, "config": provenance(
        "likelihood", {"eval": {"likelihood": lk}}, checkpoint=str(checkpoint),
        data=str(data_path))})
    for b in bounds:
        sem = f" +- {b['bpd_sem']:.4f}" if n > 1 else ""
        log(f"{sde.name} {b['method']}: {b['bpd']:.4f}{sem} bits/dim over {n} test images "
            f"(nfe {b['nfe']:.0f}, {b['seconds']:.1f}s)")
    log(f"{sde.name}: {t[0]:.1f}s -> {out}")
    return result
