"""File and tensor helpers shared by the stages (all writes are atomic)."""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch

from scoresde import __version__
from scoresde.checkpoint import atomic_write, load_checkpoint
from scoresde.data import DataError


class StageError(ValueError):
    """A stage cannot run on its inputs; the message names the file or value and the fix."""


class Preempted(Exception):
    """A stage stopped on SIGTERM after saving what a rerun resumes from."""


def log(message: str) -> None:
    """One progress line on stderr (the rule's log file under Snakemake)."""
    print(f"[scoresde {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def strict_json(obj):
    """``obj`` with every non-finite float (NaN, +-Inf) replaced by None: JSON has no NaN, and
    a metric that is undefined (e.g. FID of fewer than 4 images) is written as ``null``."""
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [strict_json(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path: str | os.PathLike, obj: dict) -> None:
    """Strict JSON (non-finite numbers as null, see :func:`strict_json`), written atomically."""
    text = json.dumps(strict_json(obj), indent=2, sort_keys=False, allow_nan=False)
    with atomic_write(path) as tmp:
        tmp.write_text(text + "\n")


def read_json(path: str | os.PathLike, what: str, fix: str) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise StageError(f"{what} {path} does not exist; {fix}") from None
    except (OSError, ValueError) as err:
        raise StageError(f"{what} {path} cannot be read ({err}); {fix}") from None


def write_csv(path: str | os.PathLike, columns: Sequence[str], rows: Sequence[dict]) -> None:
    with atomic_write(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def save_tensors(path: str | os.PathLike, obj: dict) -> None:
    with atomic_write(path) as tmp:
        torch.save(obj, tmp)


def load_tensors(path: str | os.PathLike, keys: Sequence[str], what: str, fix: str) -> dict:
    """torch.load(weights_only=True) of a dict holding `keys`; StageError naming file and fix."""
    path = Path(path)
    if not path.is_file():
        raise StageError(f"{what} {path} does not exist; {fix}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, corrupt or not a tensor file
        raise StageError(f"{what} {path} is corrupt or not a tensor file "
                         f"({type(err).__name__}); {fix}") from None
    missing = [k for k in keys if not isinstance(obj, dict) or k not in obj]
    if missing:
        raise StageError(f"{what} {path} lacks {', '.join(missing)}; {fix}")
    return obj


PREPARE_FIX = "rerun prepare-data (snakemake: delete it and rerun)"


def load_split(path: str | os.PathLike) -> dict:
    """A processed split written by prepare-data: x (uint8 levels), labels, levels, name."""
    obj = load_tensors(path, ("x", "labels", "levels", "name"), "processed data file",
                       PREPARE_FIX)
    x = obj["x"]
    if x.ndim != 4 or x.dtype != torch.uint8 or len(x) == 0:
        raise DataError(f"processed data file {path} holds no uint8 images (N, C, H, W); "
                        f"{PREPARE_FIX}")
    check_split(obj, path)
    return obj


def check_split(obj: dict, path: str | os.PathLike) -> None:
    """A processed split is self-consistent: ``levels`` an integer >= 2, every pixel a level
    0..levels-1, labels (if any) one integer >= 0 per image. DataError naming the file."""
    x, levels, labels = obj["x"], obj["levels"], obj["labels"]
    if isinstance(levels, torch.Tensor) and levels.numel() == 1:
        levels = levels.item()
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 2:
        raise DataError(f"processed data file {path} has levels={levels!r}; expected an integer "
                        f">= 2 (256 for 8-bit images); {PREPARE_FIX}")
    top = int(x.max())
    if top > levels - 1:
        raise DataError(f"processed data file {path} holds pixel value {top} > levels - 1 = "
                        f"{levels - 1} (levels={levels}): not levels 0..{levels - 1} of its "
                        f"dataset; {PREPARE_FIX}")
    if labels is None:
        return
    if not isinstance(labels, torch.Tensor) or labels.ndim != 1 or len(labels) != len(x):
        shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise DataError(f"processed data file {path} has labels of shape {shape} for {len(x)} "
                        f"images; expected one label per image; {PREPARE_FIX}")
    if labels.is_floating_point() or labels.is_complex() or (len(labels) and labels.min() < 0):
        raise DataError(f"processed data file {path} has labels that are not integers >= 0 "
                        f"(dtype {labels.dtype}, min {labels.min().item()}); {PREPARE_FIX}")


def load_reference(path: str | os.PathLike) -> torch.Tensor:
    obj = load_tensors(path, ("images",), "FID reference set", PREPARE_FIX)
    return obj["images"]


def split_images(split: dict) -> torch.Tensor:
    """A processed split's images as uint8 0..255 (its ``levels`` mapped onto the 8-bit grid)."""
    from scoresde.data import Levels

    return Levels(int(split["levels"])).to_uint8(split["x"])


# glibc's mallopt parameters (malloc.h): a stage allocates and frees the same few-MB activations
# thousands of times; with the defaults each one is a fresh mmap whose pages fault in again.
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
MALLOC_SETTINGS = {M_MMAP_THRESHOLD: 32 << 20, M_TRIM_THRESHOLD: 1 << 30, M_TOP_PAD: 64 << 20}


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to serve blocks up to 32 MiB from its heap and to keep up to 1 GiB of freed
    heap instead of returning it to the system (as the environment variables
    ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` / ``MALLOC_TOP_PAD_`` would): the
    activations a stage frees are reused without page faults (sample and likelihood jobs: about
    10-14% less wall time, docs/pipeline.md). The resident memory stays at its peak. True when glibc took
    every setting; elsewhere (macOS, musl) nothing changes."""
    import ctypes
    import ctypes.util

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all([mallopt(k, v) == 1 for k, v in MALLOC_SETTINGS.items()])


def setup_torch(threads: int, seed: int | None = None) -> None:
    """Torch intra-op threads = the rule's threads; malloc keeps freed memory
    (:func:`keep_freed_memory`); Inductor's cache in ``.cache/inductor`` of the working directory
    unless ``TORCHINDUCTOR_CACHE_DIR`` is set (:func:`scoresde.models.compiled.inductor_cache`: the
    DAG's jobs share compiled graphs); optional global seed."""
    from scoresde.models.compiled import inductor_cache

    keep_freed_memory()
    inductor_cache()
    torch.set_num_threads(max(1, int(threads)))
    if seed is not None:
        torch.manual_seed(seed)


def provenance(stage: str, params: dict, **extra) -> dict:
    """The resolved config written beside a stage's outputs."""
    return {"stage": stage, "scoresde_version": __version__, "torch": torch.__version__,
            **extra, "params": params}


def load_score_model(path: str | os.PathLike, device: torch.device,
                     expect_sde: str | None = None):
    """(model with EMA weights in eval mode, sde, checkpoint config) from a train checkpoint."""
    from scoresde.losses import PARAMETERIZATIONS
    from scoresde.models import EMA, build_model, to_device
    from scoresde.sde import make_sde

    state, config = load_checkpoint(path)
    if "model" not in state or "ema" not in state or "sde" not in config:
        raise StageError(f"checkpoint {path} is not a score-model checkpoint from the train "
                         "stage (no model/ema/sde); pass a step_*.pt or best.pt file")
    sde_cfg = dict(config["sde"])
    name = sde_cfg.pop("name")
    if expect_sde is not None and name != expect_sde:
        raise StageError(f"checkpoint {path} was trained for SDE {name!r}, not {expect_sde!r}; "
                         f"use the checkpoint under checkpoints/<dataset>/{expect_sde}/")
    recorded = config.get("parameterization", {"name": "paper"})
    if not isinstance(recorded, dict) or recorded.get("name") not in PARAMETERIZATIONS:
        raise StageError(f"checkpoint {path} records parameterization {recorded!r}, not one of "
                         f"{', '.join(PARAMETERIZATIONS)}; retrain it with this version")
    model = build_model(config["model"])
    ema = EMA(model, decay=float(state["ema"]["decay"]))
    try:
        ema.load_state_dict(state["ema"])
    except (KeyError, ValueError, RuntimeError) as err:
        raise StageError(f"checkpoint {path}: the EMA weights do not fit the architecture in "
                         f"its config ({err}); retrain it") from None
    ema.copy_to(model)
    to_device(model.requires_grad_(False), device).eval()
    return model, make_sde(name, **sde_cfg), config


def compiled_model(model, setting, stage: str, device, image_shape, batch_size: int | None = None):
    """The network a stage evaluates: ``model`` itself, or compiled (one batch size, see
    :func:`scoresde.models.compiled.compiled`) when the stage's ``compile`` setting asks for it
    (``auto``: where it was measured to win on this device and image size); logs the choice."""
    from scoresde.models.compiled import compiled, use_compile

    on = use_compile(setting, stage, device, tuple(image_shape))
    if on:
        log(f"{stage}: torch.compile of the network (compile={setting}; cache "
            f"{os.environ.get('TORCHINDUCTOR_CACHE_DIR')})")
    return compiled(model, on, batch_size)


def checkpoint_score_fn(sde, model, config: dict):
    """``score_fn(x, t)`` of a train checkpoint's network (:func:`load_score_model`), read by the
    parameterisation its config records (``train.parameterization``); a checkpoint without one
    (older runs, imported released checkpoints) has the paper's."""
    from scoresde import losses

    recorded = config.get("parameterization", {"name": "paper"})
    return losses.get_score_fn(sde, model, recorded["name"], recorded.get("sigma_data", 0.5))


def checkpoint_class_score_fn(sde, model, config: dict):
    """``score_fn(x, t, labels)`` of a class-conditional train checkpoint (classifier-free
    guidance's network; label ``num_classes`` = no label), read by its parameterisation."""
    from scoresde import losses

    recorded = config.get("parameterization", {"name": "paper"})
    return losses.get_class_score_fn(sde, model, recorded["name"], recorded.get("sigma_data", 0.5))


def batches(n: int, batch_size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, batch_size):
        yield start, min(batch_size, n - start)


def images_from_model(x: torch.Tensor, meta: dict) -> torch.Tensor:
    """Model-space samples -> uint8 0..255 on the dataset's level grid (the checkpoint's map)."""
    from scoresde.data import Levels

    levels = Levels.of(meta)
    return levels.to_uint8(levels.from_model(x.detach().cpu().float()))


@contextmanager
def timer() -> Iterator[list[float]]:
    """``with timer() as t: ...``; afterwards ``t[0]`` holds the wall seconds."""
    box = [0.0]
    start = time.perf_counter()
    try:
        yield box
    finally:
        box[0] = time.perf_counter() - start


def draw_samples(model, sde, meta: dict, sampler: str, steps: int | None,
                 denoise: Sequence[bool], n: int, batch_size: int, seed: int, device,
                 first: int = 0, **sampler_kwargs):
    """Draw `n` samples in batches, sample i (``first`` .. ``first + n - 1``) from the stream
    ``seed_stream(seed, "sample", i)``,
    for every setting in `denoise` from one trajectory; returns
    ``({denoise: uint8 images}, {denoise: nfe}, seconds)``.

    nfe is per sample (equal for every batch of a fixed-step sampler; the mean over batches
    for the adaptive solver); seconds is the wall time of the shared run.
    """
    from scoresde.stages.cases import run_sampler
    from scoresde.utils import per_sample_generators

    score_fn = checkpoint_score_fn(sde, model, meta)
    shape = tuple(meta["image_shape"])
    images = {d: [] for d in denoise}
    nfes = {d: [] for d in denoise}
    with timer() as t, torch.no_grad():
        for start, count in batches(n, batch_size):
            gens = per_sample_generators(seed, first + start, count, device)
            drawn = run_sampler(score_fn, sde, (count, *shape), sampler, steps, denoise,
                                generator=gens, device=device, **sampler_kwargs)
            for d, (x, nfe) in drawn.items():
                images[d].append(images_from_model(x, meta))
                nfes[d].append(nfe)
    nfe = {d: v[0] if len(set(v)) == 1 else sum(v) / len(v) for d, v in nfes.items()}
    return {d: torch.cat(v) for d, v in images.items()}, nfe, t[0]
