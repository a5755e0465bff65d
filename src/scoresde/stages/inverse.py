"""The ``inverse`` stage: linear inverse problems (tasks) solved by each method on held-out images,
every (task, method) of one SDE in one job.

Tasks on the first ``n_images`` test images x (model space), y = A x + noise_std n:

* ``superres``: A = 2x2 block means (``operators.AvgPool``, super-resolution x2);
* ``deblur``: A = separable Gaussian blur, sigma 1 pixel, reflect padding (``operators.Blur``);
* ``noisy-projection``: A = D/4 random orthonormal directions (``operators.random_projection``).

Methods: ``dps``, ``pigdm`` (with ``jacobian="gaussian"``), ``smc`` (``particles`` from the
config) of ``scoresde.inverse.solve_inverse``. Metrics: PSNR and SSIM
against the ground truth (uint8, the inpainting stage's helpers), the measurement residual
||A x - y|| / sqrt(m) in model space (about noise_std for a posterior sample whose noise matches
the measurement's, 0 when exactly consistent), FID of the reconstructions against the reference set.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from scoresde.stages.common import (
    StageError,
    checkpoint_score_fn,
    images_from_model,
    load_reference,
    load_score_model,
    load_split,
    log,
    provenance,
    setup_torch,
    timer,
)
from scoresde.stages.inputs import check_case_args, write_all
from scoresde.stages.quality import ReferenceFID, psnr, ssim
from scoresde.utils import seeded_generator

TASKS = ("superres", "deblur", "noisy-projection")
METHODS = ("dps", "pigdm", "smc")
# PiGDM with its Gaussian model's Jacobian: the vector-Jacobian product through a trained network
# amplifies the network's error by 1 / a(t) near t = T and diverged on digits (|x| 3 -> 1e19 in
# 8 of 20 steps, VP); see docs/inverse.md.
OPTIONS = {"pigdm": {"jacobian": "gaussian"}}


def make_operator(task: str, shape, seed: int):
    """The measurement operator of ``task`` for images of ``shape`` (C, H, W)."""
    from scoresde.operators import AvgPool, Blur, random_projection

    if task == "superres":
        return AvgPool(shape, 2)
    if task == "deblur":
        return Blur(shape, sigma=1.0)
    if task == "noisy-projection":
        return random_projection(shape, max(1, math.prod(shape) // 4),
                                 seeded_generator(seed, "inverse", 1), dtype=torch.float32)
    raise StageError(f"unknown inverse task {task!r}; choose one of {', '.join(TASKS)}")


def measurement_view(task: str, op, y: torch.Tensor) -> torch.Tensor:
    """What to show of y in model space, image-shaped: the low-resolution image upsampled (superres),
    the blurred image (deblur), the back-projection A^T y (projection)."""
    if task == "superres":
        return op.adjoint(y) * op.factor**2
    if task == "deblur":
        return y.reshape(y.shape[0], *op.in_shape)
    return op.adjoint(y)


def inverse(params: dict, checkpoint: str, test_path: str, extractor: str, reference_path: str,
            tasks: Sequence[str], methods: Sequence[str], outs: Sequence[str],
            metrics_outs: Sequence[str], device_name: str = "auto", threads: int = 1,
            expect_sde: str | None = None) -> list[dict]:
    """Solve every task by every method for the first n_images test images (``outs`` and
    ``metrics_outs`` in the order of ``[(t, m) for t in tasks for m in methods]``): each case's
    reconstructions (with the ground truth and the measurement's view) and its metrics row. One
    model load for all cases; every case draws from its own seeded streams, so its files are those
    of a run of that case alone. Nothing is written until every case has run."""
    from scoresde.data import Levels
    from scoresde.utils import pick_device

    check_case_args({"--tasks": (tasks, TASKS), "--methods": (methods, METHODS)},
                    {"--out": outs, "--metrics": metrics_outs},
                    (checkpoint, test_path, extractor, reference_path), extractor, "(task, method)")
    cfg = params["controllable"]["inverse"]
    setup_torch(threads)
    device = pick_device(device_name)
    model, sde, meta = load_score_model(checkpoint, device, expect_sde)
    test = load_split(test_path)
    if list(test["x"].shape[1:]) != list(meta["image_shape"]):
        raise StageError(f"test split {test_path} holds {tuple(test['x'].shape[1:])} images but the "
                         f"score model was trained on {tuple(meta['image_shape'])}; same dataset?")
    n, levels = min(cfg["n_images"], len(test["x"])), int(test["levels"])
    level_map = Levels(levels, bool(meta["centered"]), bool(meta["dequantize"]))
    job = {"cfg": cfg, "device": device, "sde": sde, "meta": meta, "n": n,
           "score": checkpoint_score_fn(sde, model, meta), "truth": level_map.to_uint8(test["x"][:n]),
           "x_true": level_map.to_model(test["x"][:n], u=0.5),  # the cells' centres
           "fid": ReferenceFID(load_reference(reference_path), extractor)}
    rows, files = [], []
    for (task, method), out, metrics_out in zip(
            [(t, m) for t in tasks for m in methods], outs, metrics_outs, strict=True):
        row, tensors = solve_case(job, task, method)
        rows.append(row)
        files.append((out, tensors, metrics_out, {"rows": [row], "config": provenance(
            "inverse", params, checkpoint=str(checkpoint), test=str(test_path), task=task,
            method=method)}))
    for out, tensors, metrics_out, metrics in files:  # metrics JSON last: a case is complete
        write_all([(out, tensors)], metrics_out, metrics)
    return rows


def solve_case(job: dict, task: str, method: str) -> tuple[dict, dict]:
    """One (task, method) of :func:`inverse`: its metrics row and its tensors."""
    from scoresde.inverse import solve_inverse

    cfg, sde, device, x_true = job["cfg"], job["sde"], job["device"], job["x_true"]
    op = make_operator(task, tuple(x_true.shape[1:]), cfg["seed"])
    clean = op.forward(x_true)
    noise = torch.randn(clean.shape, generator=seeded_generator(cfg["seed"], "inverse", 0))
    y = (clean + cfg["noise_std"] * noise).to(device)
    gens = [seeded_generator(cfg["seed"], "inverse", 2, i, device=device) for i in range(job["n"])]
    options = OPTIONS.get(method, {}) | ({"particles": cfg["particles"]} if method == "smc" else {})
    with timer() as t:
        x, nfe = solve_inverse(job["score"], sde, y, op, cfg["noise_std"], cfg["steps"],
                               method=method, generator=gens, **options)
    x = x.detach().cpu()
    images = images_from_model(x, job["meta"])
    truth = job["truth"]
    residual = float(((op.forward(x) - y.cpu()) ** 2).mean().sqrt())  # ||Ax - y|| / sqrt(m), averaged
    row = {"dataset": job["meta"]["dataset"], "sde": sde.name, "task": task,
           "case": f"{task} / {method}", "method": method, "n": job["n"], "nfe": nfe,
           "steps": cfg["steps"], "noise_std": cfg["noise_std"], "residual": residual,
           "psnr": float(psnr(images, truth).mean()), "ssim": float(ssim(images, truth).mean()),
           "fid": job["fid"](images, cfg["seed"]),
           "seconds": round(t[0], 3)}
    log(f"{sde.name} inverse {task}/{method}: PSNR {row['psnr']:.2f} dB, SSIM {row['ssim']:.3f}, "
        f"residual {residual:.4f} (noise_std {cfg['noise_std']}), nfe {nfe}, {t[0]:.1f}s")
    tensors = {"images": images, "truth": truth,
               "measurement": images_from_model(measurement_view(task, op, y.cpu()), job["meta"])}
    return row, tensors
