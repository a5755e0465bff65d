"""The ``inverse`` stage: one linear inverse problem (task) solved by one method on held-out images.

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

import torch

from scoresde.stages.common import (
    StageError,
    images_from_model,
    load_reference,
    load_score_model,
    load_split,
    log,
    provenance,
    save_tensors,
    setup_torch,
    timer,
    write_json,
)
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


def _check(task: str, method: str) -> None:
    if task not in TASKS:
        raise StageError(f"--task {task!r} is unknown; choose one of {', '.join(TASKS)}")
    if method not in METHODS:
        raise StageError(f"--method {method!r} is unknown; choose one of {', '.join(METHODS)}")


def inverse(params: dict, checkpoint: str, test_path: str, extractor: str, reference_path: str,
            task: str, method: str, out: str, metrics_out: str, device_name: str = "auto",
            threads: int = 1, expect_sde: str | None = None) -> dict:
    """Solve ``task`` by ``method`` for the first n_images test images; write the reconstructions
    (with the ground truth and the measurement's view) to ``out`` and one metrics row."""
    from scoresde.data import Levels
    from scoresde.inverse import solve_inverse
    from scoresde.losses import get_score_fn
    from scoresde.stages.controllable import _fid, psnr, ssim
    from scoresde.utils import pick_device

    _check(task, method)
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
    truth = level_map.to_uint8(test["x"][:n])
    x_true = level_map.to_model(test["x"][:n], u=0.5)  # the cells' centres
    op = make_operator(task, tuple(x_true.shape[1:]), cfg["seed"])
    noise = torch.randn(op.forward(x_true).shape, generator=seeded_generator(cfg["seed"], "inverse", 0))
    y = (op.forward(x_true) + cfg["noise_std"] * noise).to(device)
    gens = [seeded_generator(cfg["seed"], "inverse", 2, i, device=device) for i in range(n)]
    options = OPTIONS.get(method, {}) | ({"particles": cfg["particles"]} if method == "smc" else {})
    with timer() as t:
        x, nfe = solve_inverse(get_score_fn(sde, model), sde, y, op, cfg["noise_std"], cfg["steps"],
                               method=method, generator=gens, **options)
    x = x.detach().cpu()
    images = images_from_model(x, meta)
    residual = float(((op.forward(x) - y.cpu()) ** 2).mean().sqrt())  # ||Ax - y|| / sqrt(m), averaged
    row = {"dataset": meta["dataset"], "sde": sde.name, "task": task, "case": f"{task} / {method}",
           "method": method, "n": n, "nfe": nfe, "steps": cfg["steps"],
           "noise_std": cfg["noise_std"], "residual": residual,
           "psnr": float(psnr(images, truth).mean()), "ssim": float(ssim(images, truth).mean()),
           "fid": _fid(images, load_reference(reference_path), extractor, cfg["seed"]),
           "seconds": round(t[0], 3)}
    save_tensors(out, {"images": images, "truth": truth,
                       "measurement": images_from_model(measurement_view(task, op, y.cpu()), meta)})
    write_json(metrics_out, {"rows": [row], "config": provenance(
        "inverse", params, checkpoint=str(checkpoint), test=str(test_path), task=task, method=method)})
    log(f"{sde.name} inverse {task}/{method}: PSNR {row['psnr']:.2f} dB, SSIM {row['ssim']:.3f}, "
        f"residual {residual:.4f} (noise_std {cfg['noise_std']}), nfe {nfe}, {t[0]:.1f}s -> {out}")
    return row
