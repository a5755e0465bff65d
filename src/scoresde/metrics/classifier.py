"""The offline FID feature extractor: a small classifier trained on the dataset's labelled
training split, its training, loading and accuracy (see the package docstring)."""

from __future__ import annotations

import os
from contextlib import contextmanager, nullcontext

import torch
import torch.nn.functional as F
from torch import nn

EXTRACTOR_NAME = "scoresde-classifier"  # torch-fidelity's name and the checkpoint's "arch"


VERSION = 2  # 1: three plain convolutions, last-layer features only (retrain with train-features)


def _norm(channels: int) -> nn.BatchNorm2d:
    """BatchNorm: fast on the CPU; in eval mode (features, FID) a fixed affine map per channel,
    so an image's features do not depend on its batch."""
    return nn.BatchNorm2d(channels)


class ResBlock(nn.Module):
    """Pre-activation residual block (He et al. 2016): norm, SiLU, 3x3 conv, twice; a strided
    1x1 projection on the skip path when the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.norm1, self.conv1 = _norm(c_in), nn.Conv2d(c_in, c_out, 3, stride, 1)
        self.norm2, self.conv2 = _norm(c_out), nn.Conv2d(c_out, c_out, 3, 1, 1)
        self.skip = (nn.Identity() if stride == 1 and c_in == c_out
                     else nn.Conv2d(c_in, c_out, 1, stride))  # fmt: skip

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        return self.skip(x) + self.conv2(F.silu(self.norm2(h)))


def _detail(h: torch.Tensor) -> torch.Tensor:
    """Per channel, the root mean square of the activations minus their 3x3 local mean: the
    energy of fine detail (edges, texture, speckle) at that depth, (B, C)."""
    smooth = F.avg_pool2d(F.pad(h, [1] * 4, mode="replicate"), 3, stride=1)
    return ((h - smooth) ** 2).mean((2, 3)).sqrt()


class FeatureClassifier(nn.Module):
    """A small ResNet: a 3x3 stem and three stages of ``blocks`` residual blocks at widths w, 2w,
    4w (resolution H, H/2, H/4), global average pooling, linear head.

    ``features(x)``: ``feature_dim`` = C + 8w values per image (:meth:`raw_features`),
    standardised with the training set's per-feature mean and std (buffers set after training,
    so FID / KID / distances have a fixed scale). ``forward(x)`` returns class logits from the last
    stage. BatchNorm in eval mode: an image's features do not depend on its batch.
    Input: float images scaled to [-1, 1], (B, C, H, W).
    """

    def __init__(self, in_channels=1, num_classes=10, width=32, blocks=1):
        super().__init__()
        w = width
        self.stem = nn.Conv2d(in_channels, w, 3, padding=1)
        self.stages = nn.ModuleList([
            nn.Sequential(ResBlock(c_in, c_out, stride), *(ResBlock(c_out, c_out) for _ in range(blocks - 1)))
            for c_in, c_out, stride in ((w, w, 1), (w, 2 * w, 2), (2 * w, 4 * w, 2))
        ])  # fmt: skip
        self.out_norm = _norm(4 * w)
        self.head = nn.Linear(4 * w, num_classes)
        self.feature_dim = in_channels + 8 * w
        self.register_buffer("feature_mean", torch.zeros(self.feature_dim))
        self.register_buffer("feature_std", torch.ones(self.feature_dim))

    def _stages(self, x):
        h = self.stem(x)
        pooled = [h]
        for stage in self.stages:
            h = stage(h)
            pooled.append(h)
        return pooled

    def raw_features(self, x):
        """Before standardisation, (B, C + 8w): the detail energy (:func:`_detail`) of the input,
        the stem and the first two stages (what speckle, blur and lost texture change; the stem
        and first stage see 3x3 to 7x7 patches), then the last stage's global average (shape and
        class, the head's input, kept last). Several depths, not only the last pooled layer:
        last-layer features of a classifier are nearly blind to local defects."""
        h0, h1, h2, h3 = self._stages(x)
        return torch.cat([_detail(x), _detail(h0), _detail(h1), _detail(h2), self._head_input(h3)],
                         dim=1)  # fmt: skip

    def _head_input(self, h3):
        """The last stage's normalised, activated, globally pooled activations (B, 4w)."""
        return F.silu(self.out_norm(h3)).mean((2, 3))

    def logits_of(self, raw):
        """Class logits from :meth:`raw_features` (the head reads their last 4w values)."""
        return self.head(raw[:, -self.head.in_features :])

    def standardise(self, raw):
        """:meth:`raw_features` on the training set's per-feature scale."""
        return (raw - self.feature_mean) / self.feature_std

    def features(self, x):
        return self.standardise(self.raw_features(x))

    def forward(self, x):
        return self.head(self._head_input(self._stages(x)[-1]))


def build_feature_classifier(config: dict) -> FeatureClassifier:
    """The classifier described by a config dict as returned by :func:`train_feature_extractor`."""
    if config.get("arch") != EXTRACTOR_NAME:
        raise ValueError(
            f"not a {EXTRACTOR_NAME} config (arch={config.get('arch')!r}); train one with "
            "`python -m scoresde train-features`"
        )
    if config.get("version", 1) != VERSION:
        raise ValueError(
            f"{EXTRACTOR_NAME} version {config.get('version', 1)} is not the current version "
            f"{VERSION}; retrain it with `python -m scoresde train-features` (Snakemake reruns "
            "the train_features rule when its output is deleted)"
        )
    return FeatureClassifier(config["in_channels"], config["num_classes"], config["width"],
                             config["blocks"])


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


def augment(x: torch.Tensor, shift: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random translation by up to ``shift`` pixels (zero-padded crop, per image) and, with
    ``flip``, a random horizontal flip per image: the usual small-image augmentation."""
    if flip:
        mirror = torch.rand(len(x), generator=generator) < 0.5
        x = torch.where(mirror[:, None, None, None].to(x.device), x.flip(-1), x)
    if shift <= 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, [shift] * 4, value=-1.0)  # background of images in [-1, 1]
    dy, dx = (torch.randint(0, 2 * shift + 1, (2, n), generator=generator)).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    idx = torch.arange(n, device=x.device)[:, None, None, None]
    return padded[idx, torch.arange(x.shape[1], device=x.device)[None, :, None, None], rows, cols]


def lr_schedule(opt, lr: float, total: int):
    """PyTorch's one-cycle schedule (Smith and Topin 2019: warm-up over the first 20% of the steps,
    cosine decay, momentum cycled) for ``total`` >= 10 steps; a constant rate for fewer (smoke
    runs: OneCycleLR divides by zero at some small totals)."""
    if total < 10:
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    return torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=total, pct_start=0.2)


def _train_epoch(net, opt, sched, x, y, batch_size, generator, shift, flip):
    perm = torch.randperm(len(x), generator=generator)
    total = 0.0
    for i in range(0, len(x), batch_size):
        idx = perm[i : i + batch_size]
        loss = F.cross_entropy(net(augment(x[idx], shift, flip, generator)), y[idx],
                               label_smoothing=0.1)  # fmt: skip
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        total += loss.item() * len(idx)
    return total / len(x)


def train_feature_extractor(
    images,
    labels,
    levels: int | None = None,
    epochs: int = 15,
    seed: int = 0,
    batch_size: int = 64,
    lr: float = 4e-3,
    width: int = 16,
    blocks: int = 1,
    shift: int = 1,
    flip: bool = False,
    dataset: str | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
    num_threads: int | None = 1,
) -> tuple[dict, dict]:
    """Train the FID feature classifier on a labelled training split.

    ``images``: uint8 (N, C, H, W) in 0..255, or integer levels with ``levels`` given. AdamW with
    a one-cycle learning rate (peak ``lr``, :func:`lr_schedule`), label smoothing 0.1, and
    :func:`augment` (random shifts of up to ``shift`` pixels, horizontal flips with ``flip``: on
    for datasets whose classes are mirror-symmetric, such as clothes, never for digits).
    Deterministic given ``seed`` (initialisation in a forked RNG, shuffling and augmentation by a
    Generator). ``num_threads``: CPU threads while training (see :func:`cpu_threads`; None =
    unchanged). Returns ``(state_dict, config)``; config records the architecture, the dataset
    name and the final training loss/accuracy, and is what :func:`build_feature_classifier`
    consumes.
    """
    x = _to_unit_input(as_uint8_images(images, levels)).to(device)
    y = torch.as_tensor(labels, dtype=torch.long).to(device)
    if len(y) != len(x):
        raise ValueError(f"{len(x)} images but {len(y)} labels")
    config = {
        "arch": EXTRACTOR_NAME, "version": VERSION, "in_channels": int(x.shape[1]),
        "image_size": list(x.shape[2:]), "num_classes": int(y.max()) + 1, "width": width,
        "blocks": blocks, "feature_dim": int(x.shape[1]) + 8 * width,
        "dataset": dataset or "unknown",
        "epochs": epochs, "seed": seed, "batch_size": batch_size, "lr": lr, "shift": shift, "flip": flip,
    }  # fmt: skip
    with cpu_threads(num_threads):
        state = _fit(x, y, config, progress)
    return state, config


def _fit(x, y, config, progress):
    net = _seeded_classifier(config, config["seed"]).to(x.device)
    epochs, batch_size = config["epochs"], config["batch_size"]
    opt = torch.optim.AdamW(net.parameters(), lr=config["lr"], weight_decay=5e-4)
    steps = epochs * -(-len(x) // batch_size)
    sched = lr_schedule(opt, config["lr"], steps)
    gen = torch.Generator().manual_seed(config["seed"])
    rounds = range(epochs)
    if progress:
        from tqdm import tqdm

        rounds = tqdm(rounds, desc="train-features", unit="epoch")
    loss = None
    for _ in rounds:
        net.train()
        loss = _train_epoch(net, opt, sched, x, y, batch_size, gen, config["shift"], config["flip"])
    config["train_loss"] = loss
    net.eval()
    h = _batched(net.raw_features, x)  # one pass gives the features' statistics and the logits
    with torch.no_grad():
        logits = net.logits_of(h)
    config["train_accuracy"] = float((logits.argmax(1) == y).float().mean())
    net.feature_mean.copy_(h.mean(0))
    net.feature_std.copy_(h.std(0) + 1e-6 if len(h) > 1 else torch.ones_like(h[0]))
    return {k: v.cpu() for k, v in net.state_dict().items()}


def classifier_predictions(state_dict: dict, config: dict, images, levels=None) -> torch.Tensor:
    """The trained feature classifier's top-1 class of each image, (N,) long."""
    net = build_feature_classifier(config)
    net.load_state_dict(state_dict)
    net.eval()
    return _batched(net, _to_unit_input(as_uint8_images(images, levels))).argmax(1)


def classifier_accuracy(state_dict: dict, config: dict, images, labels, levels=None) -> float:
    """Top-1 accuracy of a trained feature classifier on held-out labelled images."""
    predicted = classifier_predictions(state_dict, config, images, levels)
    return float((predicted == torch.as_tensor(labels)).float().mean())


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
