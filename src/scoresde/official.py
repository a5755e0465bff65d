"""Released score_sde_pytorch checkpoints (Song et al. 2021): DDPM++ and NCSN++ on CIFAR-10.

An official ``checkpoint_*.pth`` is ``{"model": DataParallel state dict ("module." keys),
"ema": {"decay", "num_updates", "shadow_params": [trainable parameters in
model.parameters() order]}, "optimizer": Adam state, "step": int}``. ``load_official`` reads
it with ``torch.load(weights_only=True)``, builds the same network (``models.ncsnpp``) from
the official ``config.model`` keys, puts the EMA weights in (as the official sampling and
evaluation do) and returns the official continuous-time score function:

- VP / sub-VP (``get_score_fn`` with ``continuous=True``): s(x, t) = -net(x, 999 t) / s(t);
- VE: s(x, t) = net(x, sigma(t)), the network dividing by sigma itself (``scale_by_sigma``).

``import_official`` converts a checkpoint to this package's format (state dict + JSON config +
SHA-256, see ``checkpoint.py``) so the pipeline's sample / fid / likelihood stages run on it.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import pickle
from collections.abc import Callable
from pathlib import Path

import torch

from scoresde.checkpoint import save_checkpoint
from scoresde.models.ncsnpp import NCSNpp, ScoreNCSNpp
from scoresde.sde import SDE, make_sde

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# config.model keys of the official configs that do not change the network
_NOT_ARCH = {"name", "ema_rate", "normalization", "attention_type", "conv_size", "beta_min",
             "beta_max"}
_ARCH = {"nf", "ch_mult", "num_res_blocks", "attn_resolutions", "dropout", "resamp_with_conv",
         "conditional", "fir", "fir_kernel", "skip_rescale", "resblock_type", "progressive",
         "progressive_input", "progressive_combine", "embedding_type", "init_scale",
         "fourier_scale", "nonlinearity", "scale_by_sigma", "sigma_min", "sigma_max",
         "num_scales"}
# globals a weights_only load may meet in old checkpoints that only rebuild plain data
_DATA_GLOBALS = {"numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar", "numpy.dtype"}


class OfficialCheckpointError(ValueError):
    """An official checkpoint cannot be read or does not fit the configured network."""


# --------------------------------------------------------------------------- presets

_DEFAULTS = {  # configs/default_cifar10_configs.py, config.model
    "sigma_min": 0.01, "sigma_max": 50.0, "num_scales": 1000, "beta_min": 0.1,
    "beta_max": 20.0, "dropout": 0.1, "embedding_type": "fourier"}
_CIFAR10 = {  # shared by the released cifar10_{ncsnpp,ddpmpp}[_deep]_continuous configs
    "name": "ncsnpp", "normalization": "GroupNorm", "nonlinearity": "swish", "nf": 128,
    "ch_mult": [1, 2, 2, 2], "num_res_blocks": 4, "attn_resolutions": [16],
    "resamp_with_conv": True, "conditional": True, "fir_kernel": [1, 3, 3, 1],
    "skip_rescale": True, "resblock_type": "biggan", "progressive": "none",
    "progressive_combine": "sum", "attention_type": "ddpm", "init_scale": 0.0,
    "fourier_scale": 16, "conv_size": 3}
_NCSNPP = {"scale_by_sigma": True, "ema_rate": 0.999, "fir": True,
           "progressive_input": "residual"}
_DDPMPP = {"scale_by_sigma": False, "ema_rate": 0.9999, "fir": False, "progressive_input": "none",
           "embedding_type": "positional"}


def _preset(sde: str, family: dict, deep: bool, centered: bool) -> dict:
    model = {**_DEFAULTS, **_CIFAR10, **family, "num_res_blocks": 8 if deep else 4}
    return {"sde": sde, "model": model, "dataset": "cifar10", "image_size": 32,
            "num_channels": 3, "centered": centered}


PRESETS: dict[str, dict] = {
    "ve/cifar10_ncsnpp_continuous": _preset("ve", _NCSNPP, False, False),
    "ve/cifar10_ncsnpp_deep_continuous": _preset("ve", _NCSNPP, True, False),
    "vp/cifar10_ddpmpp_continuous": _preset("vp", _DDPMPP, False, True),
    "vp/cifar10_ddpmpp_deep_continuous": _preset("vp", _DDPMPP, True, True),
    "subvp/cifar10_ddpmpp_continuous": _preset("subvp", _DDPMPP, False, True),
    "subvp/cifar10_ddpmpp_deep_continuous": _preset("subvp", _DDPMPP, True, True),
}


def preset(name: str) -> dict:
    """A released configuration by its official path: sde, config.model, data settings."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return {**PRESETS[name], "model": dict(PRESETS[name]["model"])}


# --------------------------------------------------------------------------- arguments

def _positive_int(name: str, value, minimum: int = 1, example: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}={value!r} must be an integer >= {minimum}{example}")
    return value


def check_arguments(config, image_size, num_channels, levels: int | None = None) -> dict:
    """The network and data arguments of :func:`load_official` / :func:`import_official`,
    checked before the checkpoint is read; returns ``config`` (a preset name resolved)."""
    if isinstance(config, str):
        config = preset(config)["model"]
    if not isinstance(config, dict):
        raise ValueError(f"config={config!r} must be the official config.model as a dict, or a "
                         f"preset name ({', '.join(PRESETS)})")
    size = _positive_int("image_size", image_size, 1, " (the official config.data.image_size, "
                         "e.g. 32 for CIFAR-10)")
    steps = 2 ** (len(config.get("ch_mult", _CIFAR10["ch_mult"])) - 1)
    if size % steps:
        raise ValueError(f"image_size={size} must be a multiple of {steps}: the network halves "
                         f"the resolution {steps.bit_length() - 1} times (config.model.ch_mult)")
    _positive_int("num_channels", num_channels, 1, " (3 for RGB)")
    if levels is not None:
        _positive_int("levels", levels, 2, " (the data's grey levels, 256 for 8-bit images)")
    return config


def _fit_hint(image_size: int, num_channels: int) -> str:
    return (f"use the preset / config.model, image size (image_size={image_size}) and channels "
            f"(num_channels={num_channels}) the checkpoint was trained with")


# --------------------------------------------------------------------------- network

def network_config(config: dict, sde: str, image_size: int, num_channels: int = 3,
                   centered: bool | None = None) -> dict:
    """``build_model``'s config (arch ``ncsnpp``) from an official ``config.model`` dict.

    ``centered`` is the official ``config.data.centered`` (default: False for VE, True for
    VP / sub-VP, as in the released CIFAR-10 configs); with False the network maps its [0, 1]
    input to [-1, 1] itself.
    """
    if sde not in ("ve", "vp", "subvp"):
        raise ValueError(f"sde={sde!r} must be 've', 'vp' or 'subvp'")
    name = config.get("name", "ncsnpp")
    if name != "ncsnpp":
        raise ValueError(f"config.model.name={name!r}: only the 'ncsnpp' network (DDPM++ / "
                         "NCSN++) is supported")
    unknown = sorted(set(config) - _ARCH - _NOT_ARCH)
    if unknown:
        raise ValueError(f"config.model.{unknown[0]} is not a key of the official ncsnpp "
                         f"config; valid keys: {sorted(_ARCH | _NOT_ARCH)}")
    if sde == "ve" and config.get("embedding_type", "fourier") != "fourier":
        raise ValueError("a continuous VE model gets sigma(t) as its input and needs "
                         "embedding_type='fourier'")
    arch = {k: list(v) if isinstance(v, tuple) else v for k, v in config.items() if k in _ARCH}
    if centered is None:
        centered = sde != "ve"
    return {"arch": "ncsnpp", "sde": sde, "image_size": int(image_size),
            "num_channels": int(num_channels), "centered": bool(centered), **arch}


def official_sde(config: dict, sde: str) -> SDE:
    """The SDE of an official config: sigma_min / sigma_max (VE) or beta_min / beta_max, and
    N = num_scales."""
    n = int(config.get("num_scales", 1000))
    if sde == "ve":
        return make_sde("ve", sigma_min=config.get("sigma_min", 0.01),
                        sigma_max=config.get("sigma_max", 50.0), N=n)
    return make_sde(sde, beta_min=config.get("beta_min", 0.1),
                    beta_max=config.get("beta_max", 20.0), N=n)


def official_score_fn(net: NCSNpp, sde: SDE) -> ScoreFn:
    """The official continuous-time score (``models/utils.py: get_score_fn``) of ``net``."""

    def official(x, time_cond):  # the official network function, also for a ScoreNCSNpp
        return NCSNpp.forward(net, x, time_cond)

    if sde.name == "ve":
        def score_fn(x, t):
            return official(x, sde.std(t))
    else:
        def score_fn(x, t):
            std = official_std(sde, t).reshape(-1, *([1] * (x.ndim - 1)))
            return -official(x, 999.0 * t) / std
    return score_fn


def official_std(sde: SDE, t: torch.Tensor) -> torch.Tensor:
    """s(t) as the official ``marginal_prob`` computes it: sqrt(1 - a(t)^2) (VP) or
    1 - a(t)^2 (sub-VP) with ``1 - exp(.)``, which in float32 loses digits at small t
    (relative error 1.2e-4 (VP) / 2.4e-4 (sub-VP) at t = 1e-3); ``sde.std`` uses ``expm1``."""
    one_minus = 1.0 - torch.exp(2.0 * sde.log_mean_coeff(t))
    return one_minus.sqrt() if sde.name == "vp" else one_minus


# --------------------------------------------------------------------------- reading

def _resolve_global(name: str):
    module, _, attr = name.rpartition(".")
    return getattr(importlib.import_module(module), attr)


def read_official(path: str | os.PathLike) -> dict:
    """``torch.load(weights_only=True)`` of an official checkpoint, on the CPU.

    Checkpoints saved by older numpy / torch may pickle numpy scalars (``numpy...scalar``,
    ``numpy.dtype``), which ``weights_only`` refuses by default although they only rebuild a
    number. When those are the only foreign globals in the file, it is read again with just
    them allow-listed (``torch.serialization.safe_globals``); any other global (a class, a
    function) is refused with an error naming it. ``weights_only=False`` is never used.
    """
    path = Path(path)
    if not path.is_file():
        raise OfficialCheckpointError(f"official checkpoint {path} does not exist; download "
                                      "checkpoint_*.pth of the released model and pass its path")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        pass
    except Exception as err:
        raise OfficialCheckpointError(f"official checkpoint {path} is truncated or not a torch "
                                      f"file ({type(err).__name__}); download it again") from None
    foreign = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    refused = [g for g in foreign if g not in _DATA_GLOBALS]
    if refused:
        raise OfficialCheckpointError(
            f"official checkpoint {path} refers to code that weights_only loading refuses "
            f"({', '.join(refused)}); it is not a plain score_sde_pytorch checkpoint")
    allowed = [_resolve_global(g) for g in foreign]
    if foreign:  # numpy scalars also name their dtype's class: allow the numeric ones
        import numpy as np

        allowed += [type(np.dtype(code)) for code in "?bhilqBHILQefd"]
    with torch.serialization.safe_globals(allowed):
        return torch.load(path, map_location="cpu", weights_only=True)


def _shape(t) -> tuple:
    return tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__


def official_weights(blob: dict, net: torch.nn.Module, where: str = "checkpoint",
                     fix: str = "use the preset / config.model the checkpoint was trained with"
                     ) -> tuple:
    """(training weights, EMA weights) as state dicts of ``net`` from an official checkpoint.

    The ``module.`` prefix of DataParallel is removed; every key must fit ``net`` by name and
    shape, else OfficialCheckpointError names the first key that does not. The EMA's
    ``shadow_params`` replace the trainable parameters in ``named_parameters()`` order; the
    frozen ones (Fourier features W) and buffers (sigmas) keep the file's values.
    """
    if not isinstance(blob, dict) or "model" not in blob:
        raise OfficialCheckpointError(f"{where} has no 'model' state dict; pass a "
                                      "score_sde_pytorch checkpoint_*.pth")
    raw = {k.removeprefix("module."): v for k, v in blob["model"].items()}
    ours = net.state_dict()
    for key, value in raw.items():
        if key not in ours:
            raise OfficialCheckpointError(f"{where}: key {key!r} (shape {_shape(value)}) has no "
                                          f"place in the configured network; {fix}")
        if _shape(value) != _shape(ours[key]):
            raise OfficialCheckpointError(
                f"{where}: key {key!r} has shape {_shape(value)} in the file but "
                f"{_shape(ours[key])} in the configured network; {fix}")
    missing = [k for k in ours if k not in raw]
    if missing:
        raise OfficialCheckpointError(f"{where}: the configured network's key {missing[0]!r} "
                                      f"is not in the file ({len(missing)} missing); {fix}")
    raw = {k: raw[k].to(ours[k].dtype) for k in ours}
    ema = dict(raw)
    shadow = (blob.get("ema") or {}).get("shadow_params")
    trainable = [k for k, p in net.named_parameters() if p.requires_grad]
    if shadow is None:
        raise OfficialCheckpointError(f"{where} has no ema.shadow_params; the official "
                                      "sampling uses the EMA weights")
    if len(shadow) != len(trainable):
        raise OfficialCheckpointError(f"{where}: ema.shadow_params holds {len(shadow)} tensors "
                                      f"but the network has {len(trainable)} trainable ones; {fix}")
    for key, value in zip(trainable, shadow, strict=True):
        if _shape(value) != _shape(ours[key]):
            raise OfficialCheckpointError(
                f"{where}: ema.shadow_params entry for {key!r} has shape {_shape(value)}, "
                f"expected {_shape(ours[key])}; {fix}")
        ema[key] = value.to(ours[key].dtype)
    return raw, ema


def load_official(path: str | os.PathLike, config: dict | str, sde: str, image_size: int,
                  num_channels: int = 3, centered: bool | None = None,
                  device: str | torch.device = "cpu") -> tuple[ScoreFn, SDE]:
    """(score_fn, sde) of a released checkpoint, with its EMA weights, in eval mode.

    ``config`` is the official ``config.model`` as a dict (or a preset name); ``sde`` is
    ``ve``, ``vp`` or ``subvp``. ``score_fn(x, t)`` is the official continuous-time score.
    """
    config = check_arguments(config, image_size, num_channels)
    net_cfg = network_config(config, sde, image_size, num_channels, centered)
    blob = read_official(path)
    net = ScoreNCSNpp(**{k: v for k, v in net_cfg.items() if k != "arch"})
    _, ema = official_weights(blob, net, f"official checkpoint {path}",
                              _fit_hint(image_size, num_channels))
    net.load_state_dict(ema)
    net.requires_grad_(False).to(device).eval()
    return official_score_fn(net, official_sde(config, sde)), official_sde(config, sde)


# --------------------------------------------------------------------------- import

def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def import_official(path: str | os.PathLike, out: str | os.PathLike, preset_name: str | None = None,
                    config: dict | None = None, sde: str | None = None,
                    dataset: str = "cifar10", image_size: int = 32, num_channels: int = 3,
                    centered: bool | None = None, levels: int = 256) -> dict:
    """Write an official checkpoint as a scoresde checkpoint at ``out``; returns its config.

    Either ``preset_name`` or (``config``, ``sde``) describes the network. The state holds the
    training weights (``model``) and the EMA weights (``ema.shadow``), which the stages use.
    """
    if preset_name is not None and (config is not None or sde is not None):
        raise ValueError("give a preset, or the official config.model and the SDE, not both")
    if preset_name is not None:
        p = preset(preset_name)
        config, sde, dataset = p["model"], p["sde"], p["dataset"]
        image_size, num_channels, centered = p["image_size"], p["num_channels"], p["centered"]
    if config is None or sde is None:
        raise ValueError("give a preset, or both the official config.model and the SDE")
    config = check_arguments(config, image_size, num_channels, levels)
    net_cfg = network_config(config, sde, image_size, num_channels, centered)
    blob = read_official(path)
    net = ScoreNCSNpp(**{k: v for k, v in net_cfg.items() if k != "arch"})
    raw, ema = official_weights(blob, net, f"official checkpoint {path}",
                                _fit_hint(image_size, num_channels))
    the_sde = official_sde(config, sde)
    sde_cfg = ({"sigma_min": the_sde.sigma_min, "sigma_max": the_sde.sigma_max} if sde == "ve"
               else {"beta_min": the_sde.beta_min, "beta_max": the_sde.beta_max})
    step = blob.get("step")
    step = int(step) if isinstance(step, int | torch.Tensor) else None
    ema_blob = blob.get("ema") or {}
    num_updates = ema_blob.get("num_updates")
    ckpt_config = {
        "dataset": dataset, "levels": int(levels),
        "image_shape": [int(num_channels), int(image_size), int(image_size)],
        "centered": net_cfg["centered"], "dequantize": False,
        "sde": {"name": sde, "N": the_sde.N, **sde_cfg}, "model": net_cfg, "step": step,
        "source": {"kind": "score_sde_pytorch", "file": Path(path).name,
                   "file_sha256": file_sha256(path), "preset": preset_name,
                   "official_config_model": {k: list(v) if isinstance(v, tuple) else v
                                             for k, v in config.items()}},
    }  # fmt: skip
    state = {"model": raw, "step": step,
             "ema": {"decay": float(ema_blob.get("decay", config.get("ema_rate", 0.9999))),
                     "warmup": True, "shadow": ema,
                     "num_updates": int(num_updates) if num_updates is not None else 0}}
    save_checkpoint(out, state, ckpt_config)
    return ckpt_config
