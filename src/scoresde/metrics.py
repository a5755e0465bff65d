"""Sample-quality metrics: FID and KID computed by torch-fidelity, with bootstrap intervals.

Two feature extractors are supported:

* ``inception-v3-compat`` (torch-fidelity's port of the TF Inception-v3 used by the paper,
  Song et al. 2021, Tables 1 and 3) loaded from a local weights file, and
* ``scoresde-classifier``: a small CNN trained on the dataset's own labelled training split,
  for offline runs where no Inception weights are available. Its penultimate layer (the
  pooled ``feature_dim``-d activations) plays the role of Inception's pool3 features. Numbers
  computed with it are *not* comparable to published FIDs, and every result carries a label
  saying which extractor produced it.

The classifier checkpoint is an ordinary scoresde checkpoint: the ``(state_dict, config)``
pair returned by :func:`train_feature_extractor`, written with
``scoresde.checkpoint.save_checkpoint(path, state_dict, config)``. torch-fidelity builds
feature extractors by name, passing its ``feature_extractor_weights_path`` keyword to the
constructor; that is how the checkpoint path reaches :class:`ClassifierFeatureExtractor`.
Registration with torch-fidelity happens only when :func:`register_classifier_extractor` is
called (``compute_fid_kid`` calls it), never at import.

Uncertainty: an FID of a few hundred samples is a random quantity. :func:`bootstrap_fid`
resamples the extracted features of both sets with replacement and recomputes FID from the
resampled means and covariances (:func:`frechet_distance`, the same formula torch-fidelity
evaluates); :func:`bootstrap_interval` turns the replicates into an interval. Replicates of
cases drawn with the same seed and set sizes use the same resample indices, so the report can
bootstrap the difference of two cases' FIDs pairwise.
"""

from __future__ import annotations

import math
import os
from contextlib import contextmanager, nullcontext

import torch
import torch.nn.functional as F
import torch_fidelity
from torch import nn
from torch.utils.data import Dataset
from torch_fidelity import FeatureExtractorBase

EXTRACTOR_NAME = "scoresde-classifier"  # torch-fidelity's name and the checkpoint's "arch"
INCEPTION_NAME = "inception-v3-compat"
INCEPTION_LABEL = "inception-v3"


# --------------------------------------------------------------------------- classifier


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


# --------------------------------------------------------------------------- torch-fidelity


class ClassifierFeatureExtractor(FeatureExtractorBase):
    """torch-fidelity wrapper around :class:`FeatureClassifier`.

    torch-fidelity feeds uint8 (B, 3, H, W); grayscale models get the channel mean (exact for
    the repeated-gray images built by :func:`compute_fid_kid`), other sizes are resized.
    """

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)
        self.net, config = load_feature_extractor(feature_extractor_weights_path)
        self.in_channels = config["in_channels"]
        self.image_size = tuple(config["image_size"])
        self.requires_grad_(False)
        self.eval()

    @staticmethod
    def get_provided_features_list():
        return ("features", "logits")

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"isc": "logits"}.get(metric, "features")

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 3, 8, 8, dtype=torch.uint8)

    def forward(self, x):
        if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected uint8 (B, 3, H, W), got {x.dtype} {tuple(x.shape)}")
        x = _to_unit_input(x)
        if self.in_channels == 1:
            x = x.mean(dim=1, keepdim=True)
        if tuple(x.shape[2:]) != self.image_size:
            x = F.interpolate(x, size=self.image_size, mode="bilinear", antialias=True)
        # float64 so that torch-fidelity's KID kernel sums do not lose precision
        out = {"features": self.net.features(x).double(), "logits": self.net(x).double()}
        return tuple(out[name] for name in self.features_list)


def register_classifier_extractor() -> str:
    """Register :class:`ClassifierFeatureExtractor` with torch-fidelity (idempotent)."""
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    existing = FEATURE_EXTRACTORS_REGISTRY.get(EXTRACTOR_NAME)
    if existing is None:
        torch_fidelity.register_feature_extractor(EXTRACTOR_NAME, ClassifierFeatureExtractor)
    elif existing.__qualname__ != ClassifierFeatureExtractor.__qualname__:
        raise RuntimeError(f"{EXTRACTOR_NAME!r} is already registered to {existing!r}")
    return EXTRACTOR_NAME


class _RGBImages(Dataset):
    """uint8 (N, C, H, W) -> items uint8 (3, H, W), grayscale repeated to three channels."""

    def __init__(self, x: torch.Tensor):
        self.x = x if x.shape[1] == 3 else x.expand(-1, 3, -1, -1)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i].contiguous()


def _resolve_extractor(extractor_weights_path, inception_weights):
    """(torch-fidelity name, weights path, human label) for the chosen extractor."""
    if inception_weights is not None:
        if not os.path.isfile(inception_weights):
            raise FileNotFoundError(
                f"Inception weights file {inception_weights} not found; set "
                "eval.inception_weights to a local copy of torch-fidelity's "
                "weights-inception-2015-12-05-6726825d.pth, or leave it empty to use the "
                "trained classifier"
            )
        return INCEPTION_NAME, str(inception_weights), INCEPTION_LABEL
    if extractor_weights_path is None:
        raise ValueError(
            "no feature extractor: give extractor_weights_path (a scoresde-classifier checkpoint "
            "from `python -m scoresde train-features`) or inception_weights (a local file)"
        )
    _, config = load_feature_extractor(extractor_weights_path)
    acc = config.get("test_accuracy")
    accuracy = f", test accuracy {acc:.3f}" if acc is not None else ""
    label = f"{EXTRACTOR_NAME} (trained on {config['dataset']}{accuracy}; not Inception)"
    return register_classifier_extractor(), str(extractor_weights_path), label


def _check_pair(samples, reference) -> int:
    if samples.shape[1:] != reference.shape[1:]:
        raise ValueError(
            f"samples {tuple(samples.shape[1:])} and reference {tuple(reference.shape[1:])} differ"
        )
    return min(len(samples), len(reference))


class FeatureSpace:
    """A torch-fidelity feature extractor built once, for the features of many image sets.

    ``extractor_weights_path`` / ``inception_weights`` as in :func:`compute_fid_kid`; ``label``
    names the extractor in every result. ``features(images)``: float64 (N, D) of uint8 images.
    """

    def __init__(self, extractor_weights_path=None, inception_weights=None, cuda: bool = False,
                 batch_size: int = 64, num_threads: int | str | None = "auto"):
        from torch_fidelity.utils import create_feature_extractor, resolve_feature_layer_for_metric

        name, weights, self.label = _resolve_extractor(extractor_weights_path, inception_weights)
        self.num_threads = (1 if name == EXTRACTOR_NAME else None) if num_threads == "auto" \
            else num_threads  # fmt: skip
        self.cuda, self.batch_size = cuda, batch_size
        kwargs = {"feature_extractor": name, "feature_extractor_weights_path": weights,
                  "verbose": False}  # fmt: skip
        self.layer = resolve_feature_layer_for_metric("fid", **kwargs)
        with cpu_threads(self.num_threads):
            self.net = create_feature_extractor(name, [self.layer], cuda=cuda, **kwargs)

    def features(self, images) -> torch.Tensor:
        from torch_fidelity.utils import get_featuresdict_from_dataset

        x = as_uint8_images(images)
        with cpu_threads(self.num_threads):
            out = get_featuresdict_from_dataset(_RGBImages(x), self.net, self.batch_size, self.cuda,
                                                save_cpu_ram=True, verbose=False)  # fmt: skip
        return out[self.layer].double()


def fid_kid_from_features(f_samples: torch.Tensor, f_reference: torch.Tensor,
                          kid_subset_size: int | None = None, seed: int = 0,
                          num_threads: int | None = 1) -> dict:
    """torch-fidelity's FID and KID (100 subsets, cubic polynomial kernel) of two feature sets.

    ``num_threads``: BLAS threads for KID's kernels (see :func:`cpu_threads`; None = unchanged).
    """
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
    from torch_fidelity.metric_kid import kid_features_to_metric

    n_min = min(len(f_samples), len(f_reference))
    subset = kid_subset_size or max(2, min(1000, n_min // 2))
    if not 2 <= subset <= n_min:
        raise ValueError(f"kid_subset_size={subset} must be in 2..{n_min} (the smaller set)")
    with cpu_threads(num_threads):
        fid = fid_statistics_to_metric(fid_features_to_statistics(f_samples.cpu()),
                                       fid_features_to_statistics(f_reference.cpu()), verbose=False)
        kid = kid_features_to_metric(f_samples.cpu(), f_reference.cpu(), kid_subset_size=subset,
                                     rng_seed=seed, verbose=False)  # fmt: skip
    return {
        "fid": float(fid[torch_fidelity.KEY_METRIC_FID]),
        "kid": float(kid[torch_fidelity.KEY_METRIC_KID_MEAN]),
        "kid_std": float(kid[torch_fidelity.KEY_METRIC_KID_STD]),
    }


def _resampled_moments(f: torch.Tensor, counts: torch.Tensor):
    """Mean (B, D) and unbiased covariance (B, D, D) of B resamples given by multiplicities."""
    n = f.shape[0]
    w = counts.to(f.dtype)
    mu = w @ f / n
    second = (w[:, :, None] * f).transpose(1, 2) @ f
    cov = (second - n * mu[:, :, None] * mu[:, None, :]) / (n - 1)
    return mu, cov


def _sqrtm_psd(cov: torch.Tensor) -> torch.Tensor:
    """The symmetric square root of (batched) covariance matrices."""
    lam, v = torch.linalg.eigh(cov)
    return (v * lam.clamp(min=0).sqrt()[..., None, :]) @ v.transpose(-1, -2)


def frechet_distance(mu1, cov1, mu2, cov2, root2=None) -> torch.Tensor:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)) (Heusel et al. 2017, eq. 6), batched.

    tr (S1 S2)^(1/2) = tr (R S1 R)^(1/2) with R = S2^(1/2): the sum of the square roots of the
    eigenvalues of a symmetric positive semi-definite matrix (the same eigenvalues as S1 S2,
    whose square roots torch-fidelity sums). ``root2``: S2^(1/2) if already known.
    """
    r = _sqrtm_psd(cov2) if root2 is None else root2
    lam = torch.linalg.eigvalsh(r @ cov1 @ r)
    tr_sqrt = lam.clamp(min=0).sqrt().sum(-1)
    diff = mu1 - mu2
    trace = cov1.diagonal(dim1=-2, dim2=-1).sum(-1) + cov2.diagonal(dim1=-2, dim2=-1).sum(-1)
    return (diff * diff).sum(-1) + trace - 2 * tr_sqrt


def _counts(n: int, b: int, generator: torch.Generator) -> torch.Tensor:
    """Multiplicities (b, n) of b resamples of n items with replacement."""
    idx = torch.randint(n, (b, n), generator=generator)
    return torch.zeros(b, n, dtype=torch.long).scatter_add_(1, idx, torch.ones_like(idx))


class BootstrapFID:
    """FID of resamples (with replacement) of a sample set and of the reference set.

    The reference set's ``n_bootstrap`` resamples (and their means and covariances) are drawn
    once, from ``seed``'s first spawned stream; each sample set's resamples come from its second
    stream, restarted for every set. So two sample sets of the same size get the same resample
    indices and the same reference resamples: their replicates are paired, and the difference of
    two cases' replicates is a paired bootstrap of the difference of their FIDs (sample i of every
    case shares sample i's seed; all cases share the reference set). Memory: 8 B D^2 bytes.
    """

    def __init__(self, f_reference: torch.Tensor, n_bootstrap: int, seed: int, chunk: int = 50):
        import numpy as np

        ref_seed, self._sample_seed = (int(s.generate_state(1)[0])
                                       for s in np.random.SeedSequence(seed).spawn(2))  # fmt: skip
        self.n_bootstrap, self.seed, self.chunk = n_bootstrap, seed, chunk
        self.n_reference = len(f_reference)
        counts = _counts(len(f_reference), n_bootstrap, torch.Generator().manual_seed(ref_seed))
        f = f_reference.double().cpu()
        self._ref = []
        for i in range(0, n_bootstrap, chunk):
            mu, cov = _resampled_moments(f, counts[i : i + chunk])
            self._ref.append((mu, cov, _sqrtm_psd(cov)))

    def replicates(self, f_samples: torch.Tensor) -> torch.Tensor:
        """FID of each of the ``n_bootstrap`` paired resamples, float64 (B,)."""
        f = f_samples.double().cpu()
        counts = _counts(len(f), self.n_bootstrap, torch.Generator().manual_seed(self._sample_seed))
        out = [frechet_distance(*_resampled_moments(f, counts[i : i + self.chunk]), *ref)
               for i, ref in zip(range(0, self.n_bootstrap, self.chunk), self._ref, strict=True)]
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


def bootstrap_interval(estimate: float, replicates, confidence: float = 0.95) -> tuple[float, float]:
    """Central ``confidence`` interval: the estimate plus the percentiles of the recentred replicates.

    A resample repeats about a third of its images, which raises FID's small-sample bias (on
    digits, n = 400: replicates average 0.55 above the full-set FID of 0.97), so the plain
    percentile interval would miss the estimate. Recentring the replicates on their mean keeps
    the bootstrap's spread and removes that extra bias: ``estimate + q(r - mean(r))``.
    """
    r = torch.as_tensor(replicates, dtype=torch.float64)
    r = r[torch.isfinite(r)]
    if r.numel() < 2 or not math.isfinite(estimate):
        return math.nan, math.nan
    alpha = (1 - confidence) / 2
    q = torch.quantile(r - r.mean(), torch.tensor([alpha, 1 - alpha], dtype=torch.float64))
    return estimate + float(q[0]), estimate + float(q[1])


def compute_fid_kid(
    samples_uint8,
    reference_uint8,
    extractor_weights_path=None,
    inception_weights=None,
    cuda: bool = False,
    kid_subset_size: int | None = None,
    seed: int = 0,
    batch_size: int = 64,
    num_threads: int | str | None = "auto",
) -> dict:
    """FID (Heusel et al. 2017) and KID (Binkowski et al. 2018) of samples vs reference images.

    Both inputs: uint8 (N, C, H, W) in 0..255, C in (1, 3), same H, W. With
    ``inception_weights`` (a local file) the standard Inception-v3 features are used;
    otherwise the classifier checkpoint at ``extractor_weights_path``. ``kid_subset_size``
    defaults to min(1000, N // 2) for N the smaller set (so that KID's 100 subsets differ and
    ``kid_std`` means something); ``seed`` fixes KID's subset draws. ``num_threads``: CPU
    threads (see :func:`cpu_threads`); the default "auto" means 1 for the small classifier and
    unchanged for Inception. Features come from torch-fidelity's extractor and the metrics from
    its own FID / KID functions (:class:`FeatureSpace`, :func:`fid_kid_from_features`).
    Returns ``{"fid", "kid", "kid_std", "feature_extractor"}``.
    """
    samples, reference = as_uint8_images(samples_uint8), as_uint8_images(reference_uint8)
    n_min = _check_pair(samples, reference)
    subset = kid_subset_size or max(2, min(1000, n_min // 2))
    if not 2 <= subset <= n_min:
        raise ValueError(f"kid_subset_size={subset} must be in 2..{n_min} (the smaller set)")
    space = FeatureSpace(extractor_weights_path, inception_weights, cuda, batch_size, num_threads)
    out = fid_kid_from_features(space.features(samples), space.features(reference), subset, seed,
                                space.num_threads)
    return {**out, "feature_extractor": space.label}
