"""The offline FID feature extractor: a small classifier trained on the dataset's labelled
training split, its training, loading and accuracy (see the package docstring)."""

from __future__ import annotations

import os
from contextlib import contextmanager, nullcontext

import torch
import torch.nn.functional as F
from torch import nn

EXTRACTOR_NAME = "scoresde-classifier"  # torch-fidelity's name and the checkpoint's "arch"


class FeatureClassifier(nn.Module):
    """Three 3x3 convolutions, global average pooling, linear head.

    ``features(x)`` is the penultimate layer (``feature_dim`` values per image) used for FID/KID,
    standardised with the training set's per-feature mean and std (buffers set after training,
    so FID/KID have a fixed scale: the polynomial KID kernel of Binkowski et al. 2018 assumes
    features of order one). ``forward(x)`` returns class logits. Input: float images scaled to
    [-1, 1], (B, C, H, W).
    """

    def __init__(self, in_channels=1, num_classes=10, width=32, feature_dim=64):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.SiLU(),
            nn.Conv2d(2 * width, feature_dim, 3, stride=2, padding=1),
            nn.SiLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(feature_dim, num_classes)
        self.register_buffer("feature_mean", torch.zeros(feature_dim))
        self.register_buffer("feature_std", torch.ones(feature_dim))

    def features(self, x):
        return (self.body(x) - self.feature_mean) / self.feature_std

    def forward(self, x):
        return self.head(self.body(x))


def build_feature_classifier(config: dict) -> FeatureClassifier:
    """The classifier described by a config dict as returned by :func:`train_feature_extractor`."""
    if config.get("arch") != EXTRACTOR_NAME:
        raise ValueError(
            f"not a {EXTRACTOR_NAME} config (arch={config.get('arch')!r}); train one with "
            "`python -m scoresde train-features`"
        )
    return FeatureClassifier(
        config["in_channels"], config["num_classes"], config["width"], config["feature_dim"]
    )


def as_uint8_images(images, levels: int | None = None) -> torch.Tensor:
    """Validate images as uint8 (N, C, H, W) in 0..255.

    With ``levels`` the input holds integer levels 0..levels-1 (e.g. digits: 17 levels) and is
    mapped to round(k * 255 / (levels - 1)). Non-image input (e.g. 2-D toy data) raises ValueError.
    """
    x = torch.as_tensor(images)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(
            f"FID/KID need images shaped (N, C, H, W) with C in (1, 3); got shape "
            f"{tuple(x.shape)}. 2-D toy datasets have no FID: evaluate them another way."
        )
    if levels is not None:
        if x.is_floating_point() or int(x.min()) < 0 or int(x.max()) > levels - 1:
            raise ValueError(f"images must hold integer levels 0..{levels - 1}")
        from scoresde.data import Levels

        return Levels(levels).to_uint8(x)
    if x.dtype != torch.uint8:
        raise ValueError(
            f"images must be uint8 in 0..255 (got dtype {x.dtype}); convert with "
            "data.unit_to_uint8 or pass levels= for integer levels"
        )
    return x


def _to_unit_input(x_uint8: torch.Tensor) -> torch.Tensor:
    return x_uint8.float() / 127.5 - 1.0


@contextmanager
def cpu_threads(n: int | None):
    """Temporarily limit torch's intra-op threads and the BLAS pools (numpy) to ``n``.

    The classifier and KID's kernels work on small tensors, where OpenMP/BLAS spin-waiting costs
    more than it saves (up to 20x slower on a busy 2-core machine); ``None`` changes nothing.
    """
    if n is None:
        yield
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # installed with scikit-learn; without it only torch is limited
        threadpool_limits = None
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with threadpool_limits(n) if threadpool_limits else nullcontext():
            yield
    finally:
        torch.set_num_threads(before)


@torch.no_grad()
def _batched(fn, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """fn applied to x in chunks (whole training sets do not fit one forward pass)."""
    return torch.cat([fn(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def _seeded_classifier(config: dict, seed: int) -> FeatureClassifier:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_feature_classifier(config)


def _train_epoch(net, opt, x, y, batch_size, generator):
    perm = torch.randperm(len(x), generator=generator)
    total = 0.0
    for i in range(0, len(x), batch_size):
        idx = perm[i : i + batch_size]
        loss = F.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.item() * len(idx)
    return total / len(x)


def train_feature_extractor(
    images,
    labels,
    levels: int | None = None,
    epochs: int = 20,
    seed: int = 0,
    batch_size: int = 64,
    lr: float = 2e-3,
    width: int = 32,
    feature_dim: int = 64,
    dataset: str | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
    num_threads: int | None = 1,
) -> tuple[dict, dict]:
    """Train the FID feature classifier on a labelled training split.

    ``images``: uint8 (N, C, H, W) in 0..255, or integer levels with ``levels`` given.
    Deterministic given ``seed`` (initialisation in a forked RNG, shuffling by a Generator).
    ``num_threads``: CPU threads while training (see :func:`cpu_threads`; None = unchanged).
    Returns ``(state_dict, config)``; config records the architecture, the dataset name and
    the final training loss/accuracy, and is what :func:`build_feature_classifier` consumes.
    """
    x = _to_unit_input(as_uint8_images(images, levels)).to(device)
    y = torch.as_tensor(labels, dtype=torch.long).to(device)
    if len(y) != len(x):
        raise ValueError(f"{len(x)} images but {len(y)} labels")
    with cpu_threads(num_threads):
        return _fit(x, y, epochs, seed, batch_size, lr, width, feature_dim, dataset, progress)


def _fit(x, y, epochs, seed, batch_size, lr, width, feature_dim, dataset, progress):
    config = {
        "arch": EXTRACTOR_NAME, "in_channels": int(x.shape[1]), "image_size": list(x.shape[2:]),
        "num_classes": int(y.max()) + 1, "width": width, "feature_dim": feature_dim,
        "dataset": dataset or "unknown", "epochs": epochs, "seed": seed,
    }  # fmt: skip
    net = _seeded_classifier(config, seed).to(x.device)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    rounds = range(epochs)
    if progress:
        from tqdm import tqdm

        rounds = tqdm(rounds, desc="train-features", unit="epoch")
    loss = None
    for _ in rounds:
        loss = _train_epoch(net, opt, x, y, batch_size, gen)
    config["train_loss"] = loss
    net.eval()
    config["train_accuracy"] = float((_batched(net, x).argmax(1) == y).float().mean())
    h = _batched(net.body, x)
    net.feature_mean.copy_(h.mean(0))
    net.feature_std.copy_(h.std(0) + 1e-6)
    return {k: v.cpu() for k, v in net.state_dict().items()}, config


def classifier_accuracy(state_dict: dict, config: dict, images, labels, levels=None) -> float:
    """Top-1 accuracy of a trained feature classifier on held-out labelled images."""
    net = build_feature_classifier(config)
    net.load_state_dict(state_dict)
    net.eval()
    x = _to_unit_input(as_uint8_images(images, levels))
    return float((_batched(net, x).argmax(1) == torch.as_tensor(labels)).float().mean())


def load_feature_extractor(path) -> tuple[FeatureClassifier, dict]:
    """Load a classifier checkpoint written with ``checkpoint.save_checkpoint``."""
    from scoresde.checkpoint import CheckpointError, load_checkpoint

    if path is None:
        raise ValueError(
            f"the {EXTRACTOR_NAME} feature extractor needs feature_extractor_weights_path= "
            "(a checkpoint from `python -m scoresde train-features`)"
        )
    if not os.path.isfile(path):
        raise CheckpointError(
            f"feature-extractor checkpoint {path} does not exist; run the train-features stage "
            "(`python -m scoresde train-features`) or fix the path"
        )
    state, config = load_checkpoint(path)
    try:
        net = build_feature_classifier(config)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    net.load_state_dict(state)
    return net.eval(), config
