"""Controllable-generation stages (paper section 5): train-classifier, inpaint, colorize
(conditional-sample is :mod:`scoresde.stages.guidance`).

* ``train-classifier``: the noise-conditional classifier p_t(y | x(t)) of one SDE, trained with
  cross-entropy on x(t) from that SDE's perturbation kernel of the training split (in the score
  model's data space), saved with its dataset, SDE and data map so that a mismatch is refused.
* ``inpaint``: for each mask (``centre`` box, ``left`` half, ``random`` 50% of pixels) and method
  (``replace``, ``repaint``, ``smc``) completes the first ``n_images`` test images; metrics: PSNR
  over the missing pixels and SSIM (whole image) against the ground truth, FID of completions
  against the reference set. One job per (dataset, SDE) writes every (mask, method).
* ``colorize`` (RGB datasets): the grey image (the mean of R, G and B) of each of the first
  ``n_images`` test images coloured by every inpainting method in the decoupled colour space
  (App. I.3, ``scoresde.controllable.colorize``), with inpainting's ``steps`` and options;
  metrics as for inpainting, PSNR over all pixels (every colour was hidden).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch

from scoresde.checkpoint import load_checkpoint, save_checkpoint
from scoresde.data import Levels
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
from scoresde.stages.inputs import (
    check_completion_args,
    check_data_fits,
    check_test_split,
    write_all,
)
from scoresde.stages.masks import make_mask
from scoresde.stages.quality import ReferenceFID, psnr, ssim
from scoresde.utils import seeded_generator

CLASSIFIER_FIX = "rerun train-classifier for this dataset and SDE (snakemake: delete it and rerun)"


# --- train-classifier -----------------------------------------------------------------------------


def classifier_config(params: dict, sde_name: str, split: dict) -> dict:
    from scoresde.stages.train import model_config, sde_config

    cl = params["controllable"]["classifier"]
    labels = split["labels"]
    net = model_config({"channels": cl["channels"], "channel_mult": cl["channel_mult"],
                        "num_res_blocks": cl["num_res_blocks"], "embedding": "auto",
                        "fourier_scale": params["model"]["fourier_scale"]}, sde_name,
                       split["x"].shape[1:])
    net["num_classes"] = int(labels.max()) + 1
    return {"kind": "noise_conditional_classifier", "dataset": split["name"],
            "levels": int(split["levels"]), "image_shape": list(split["x"].shape[1:]),
            "centered": bool(params["data"]["centered"][sde_name]),
            "dequantize": bool(params["train"]["dequantize"]),
            "sde": sde_config(params["sde"], sde_name), "model": net, "train": cl}


def build_noise_conditional_classifier(config: dict):
    """The noise-conditional classifier p_t(y | x(t)) that a train-classifier config describes
    (not the FID feature classifier of ``metrics.build_feature_classifier``)."""
    from scoresde.models.classifier import NoiseConditionalClassifier

    return NoiseConditionalClassifier(**{k: tuple(v) if isinstance(v, list) else v
                                         for k, v in config["model"].items()})


def train_classifier(params: dict, data_path: str, test_path: str | None, sde_name: str,
                     out: str, device_name: str = "auto", threads: int = 1) -> dict:
    """Train p_t(y | x(t)) for one SDE on the training split; save state_dict + config."""
    from scoresde.models.classifier import classifier_loss
    from scoresde.sde import make_sde
    from scoresde.utils import pick_device

    cl = params["controllable"]["classifier"]
    setup_torch(threads, seed=cl["seed"])
    device = pick_device(device_name)
    split = load_split(data_path)
    if split["labels"] is None:
        raise StageError(f"{data_path} has no labels; class-conditional sampling needs a labelled "
                         "dataset (set controllable.enabled: false)")
    test = load_split(test_path) if test_path else None
    check_test_split(split, test, data_path, test_path)
    config = classifier_config(params, sde_name, split)
    sde = make_sde(sde_name, **{k: v for k, v in config["sde"].items() if k != "name"})
    net = build_noise_conditional_classifier(config).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=cl["lr"])
    gen = seeded_generator(cl["seed"], "classifier")
    k, labels = split["x"], split["labels"].long()
    with timer() as t:
        for step in range(1, cl["n_iters"] + 1):
            idx = torch.randint(len(k), (cl["batch_size"],), generator=gen)
            x = Levels.of(config).to_model(k[idx], gen)
            loss = classifier_loss(net, sde, x.to(device), labels[idx].to(device), gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step % max(1, cl["n_iters"] // 5) == 0:
                log(f"{sde_name} classifier step {step}: cross-entropy {loss.item():.3f}")
    net.eval()
    if test is not None:
        config["test_accuracy"] = accuracy_by_time(net, sde, test, config)
    config["seconds"] = round(t[0], 3)
    save_checkpoint(out, {k_: v.cpu() for k_, v in net.state_dict().items()}, config)
    log(f"{sde_name} classifier: test accuracy by t {config.get('test_accuracy')} -> {out}")
    return config


ACCURACY_TIMES = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)


def accuracy_by_time(net, sde, split: dict, config: dict, times=ACCURACY_TIMES) -> dict:
    """Test accuracy of the classifier on x(t) at a few times (t = 0 is the clean image)."""
    gen = torch.Generator().manual_seed(0)
    x0 = Levels.of(config).to_model(split["x"], u=0.5)  # the cells' centres
    out = {}
    with torch.no_grad():
        for t_ in times:
            t = torch.full((len(x0),), max(t_, 1e-5))
            xt = sde.mean_coeff(t)[:, None, None, None] * x0 + \
                sde.std(t)[:, None, None, None] * torch.randn(x0.shape, generator=gen)
            pred = net(xt, sde.noise_condition(t)).argmax(1)
            out[f"t={t_:g}"] = round(float((pred == split["labels"]).float().mean()), 4)
    return out


def load_classifier(path: str, score_config: dict, device):
    """The classifier of ``path``, refused unless it was trained for the score model's dataset,
    SDE (with its parameters) and data map."""
    state, config = load_checkpoint(path)
    if config.get("kind") != "noise_conditional_classifier":
        raise StageError(f"{path} is not a noise-conditional classifier checkpoint; {CLASSIFIER_FIX}")
    for key in ("dataset", "sde", "centered", "dequantize", "image_shape"):
        if config.get(key) != score_config.get(key):
            raise StageError(f"classifier {path} was trained for {key}={config.get(key)!r} but the "
                             f"score model has {key}={score_config.get(key)!r}; use the classifier "
                             "of the same dataset and SDE, or " + CLASSIFIER_FIX)
    net = build_noise_conditional_classifier(config)
    net.load_state_dict(state)
    return net.requires_grad_(False).to(device).eval(), config


# --- inpaint --------------------------------------------------------------------------------------


def method_options(ip: dict, method: str) -> dict:
    if method == "repaint":
        return {"jump": ip["repaint"]["jump"], "resample": ip["repaint"]["resample"]}
    if method == "smc":
        return {"particles": ip["smc"]["particles"]}
    return {}


def _completion_setup(params: dict, checkpoint: str, test_path: str, extractor: str,
                      reference_path: str, device_name: str, threads: int,
                      expect_sde: str | None):
    """What inpainting and colorization share: the model, the first n_images test images (truth
    as uint8, ``y`` in model space), FID against the reference set, the score and the
    corrector's snr."""
    from scoresde.utils import pick_device

    ip = params["controllable"]["inpaint"]
    setup_torch(threads)
    device = pick_device(device_name)
    model, sde, meta = load_score_model(checkpoint, device, expect_sde)
    test = load_split(test_path)
    check_data_fits(test, test_path, meta, "--data")
    n = min(ip["n_images"], len(test["x"]))
    levels = Levels(int(test["levels"]), bool(meta["centered"]), bool(meta["dequantize"]))
    return {"ip": ip, "device": device, "sde": sde, "meta": meta, "n": n,
            "truth": levels.to_uint8(test["x"][:n]),
            "y": levels.to_model(test["x"][:n], u=0.5).to(device),
            "fid": ReferenceFID(load_reference(reference_path), extractor),
            "score": checkpoint_score_fn(sde, model, meta),
            "snr": params["sample"]["snr"][sde.name]}


def _complete(job: dict, method: str, run) -> tuple:
    """``run(generator=..., method=..., **options) -> (x, nfe)`` with the method's options and
    the stage's seed; returns the uint8 images, nfe and seconds."""
    ip = job["ip"]
    gen = seeded_generator(ip["seed"], "controllable", 0, device=job["device"])
    with timer() as t, torch.no_grad():
        x, nfe = run(generator=gen, method=method, corrector="none" if method == "smc" else "langevin",
                     snr=job["snr"], **method_options(ip, method))
    return images_from_model(x, job["meta"]), nfe, t[0]


def _row(job: dict, task: str, case: str, mask: str, method: str, images, missing, nfe,
         seconds) -> dict:
    truth, ip = job["truth"], job["ip"]
    return {"dataset": job["meta"]["dataset"], "sde": job["sde"].name, "task": task,
            "case": case, "mask": mask, "method": method, "n": job["n"], "nfe": nfe,
            "steps": ip["steps"], "psnr": float(psnr(images, truth, missing).mean()),
            "ssim": float(ssim(images, truth).mean()),
            "fid": job["fid"](images, ip["seed"]),
            "seconds": round(seconds, 3)}


def inpaint(params: dict, checkpoint: str, test_path: str, extractor: str, reference_path: str,
            masks: Sequence[str], methods: Sequence[str], outs: Sequence[str], inputs_out: str,
            metrics_out: str, device_name: str = "auto", threads: int = 1,
            expect_sde: str | None = None) -> list[dict]:
    """Complete the first n_images test images for every (mask, method); ``outs`` in the order
    of ``[(mask, method) for mask in masks for method in methods]``."""
    from scoresde.controllable import inpaint as complete

    check_completion_args(masks, methods, outs, inputs_out, metrics_out,
                          (checkpoint, test_path, extractor, reference_path), extractor,
                          "(mask, method)")
    cases = [(m, meth) for m in masks for meth in methods]
    job = _completion_setup(params, checkpoint, test_path, extractor, reference_path, device_name,
                            threads, expect_sde)
    y, truth, sde = job["y"], job["truth"], job["sde"]
    rows, shown, done = [], {"truth": truth}, []
    for (mask_name, method), path in zip(cases, outs, strict=True):
        mask = make_mask(mask_name, tuple(y.shape), job["ip"]["seed"]).to(job["device"])
        images, nfe, seconds = _complete(job, method, partial(
            complete, job["score"], sde, y, mask, job["ip"]["steps"]))
        missing = (mask == 0).cpu()
        done.append((path, {"images": images, "mask": mask.cpu()}))
        shown[f"masked_{mask_name}"] = torch.where(missing, torch.zeros_like(truth), truth)
        rows.append(_row(job, "inpaint", f"{mask_name} / {method}", mask_name, method, images,
                         missing, nfe, seconds))
        log(f"{sde.name} inpaint {mask_name}/{method}: PSNR {rows[-1]['psnr']:.2f} dB, SSIM "
            f"{rows[-1]['ssim']:.3f}, nfe {nfe}, {seconds:.1f}s")
    write_all(done + [(inputs_out, shown)], metrics_out, {"rows": rows, "config": provenance(
        "inpaint", params, checkpoint=str(checkpoint), test=str(test_path))})
    return rows


def colorize(params: dict, checkpoint: str, test_path: str, extractor: str, reference_path: str,
             methods: Sequence[str], outs: Sequence[str], inputs_out: str, metrics_out: str,
             device_name: str = "auto", threads: int = 1,
             expect_sde: str | None = None) -> list[dict]:
    """Colour the grey versions of the first n_images RGB test images with every method
    (``outs`` in the order of ``methods``); the grey input is the mean of R, G and B in model
    space, exactly what every completion keeps."""
    from scoresde.controllable import colorize as colour

    check_completion_args(None, methods, outs, inputs_out, metrics_out,
                          (checkpoint, test_path, extractor, reference_path), extractor, "method")
    job = _completion_setup(params, checkpoint, test_path, extractor, reference_path, device_name,
                            threads, expect_sde)
    y, truth, sde = job["y"], job["truth"], job["sde"]
    if y.shape[1] != 3:
        raise StageError(f"colorize needs RGB images; {test_path} holds {y.shape[1]}-channel "
                         "images (colorization runs for cifar10 and image_folder datasets)")
    gray = y.mean(dim=1, keepdim=True)
    rows, done = [], []
    for method, path in zip(methods, outs, strict=True):
        images, nfe, seconds = _complete(job, method, partial(
            colour, job["score"], sde, gray, job["ip"]["steps"]))
        done.append((path, {"images": images}))
        rows.append(_row(job, "colorize", f"colour / {method}", "colour", method, images, None,
                         nfe, seconds))
        log(f"{sde.name} colorize {method}: PSNR {rows[-1]['psnr']:.2f} dB, SSIM "
            f"{rows[-1]['ssim']:.3f}, nfe {nfe}, {seconds:.1f}s")
    grey_images = truth.float().mean(dim=1, keepdim=True).round().to(torch.uint8).expand_as(truth)
    write_all(done + [(inputs_out, {"truth": truth, "grey": grey_images.contiguous()})],
               metrics_out, {"rows": rows, "config": provenance(
                   "colorize", params, checkpoint=str(checkpoint), test=str(test_path))})
    return rows
