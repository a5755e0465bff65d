"""torch-fidelity: the classifier registered as a feature extractor, features of image sets,
FID and KID (imported on first use: torch-fidelity imports torchvision)."""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
import torch_fidelity
from torch.utils.data import Dataset
from torch_fidelity import FeatureExtractorBase

from .classifier import EXTRACTOR_NAME, _to_unit_input, as_uint8_images, cpu_threads, load_feature_extractor

INCEPTION_NAME = "inception-v3-compat"
INCEPTION_LABEL = "inception-v3"


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
        # one pass through the network for both outputs; float64 so that torch-fidelity's KID
        # kernel sums do not lose precision
        raw = self.net.raw_features(x)
        out = {"features": lambda: self.net.standardise(raw), "logits": lambda: self.net.logits_of(raw)}
        return tuple(out[name]().double() for name in self.features_list)


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


def check_pair(samples, reference) -> int:
    """The smaller set's size; a ValueError naming both image shapes when they differ."""
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


def fid_from_features(f_samples: torch.Tensor, f_reference: torch.Tensor,
                      num_threads: int | None = 1) -> dict:
    """torch-fidelity's FID of two feature sets, ``{"fid"}`` (KID: :class:`~scoresde.metrics.
    bootstrap.BootstrapKID`, which shares each case's kernels with the KID bootstrap)."""
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    with cpu_threads(num_threads):
        fid = fid_statistics_to_metric(fid_features_to_statistics(f_samples.cpu()),
                                       fid_features_to_statistics(f_reference.cpu()), verbose=False)
    return {"fid": float(fid[torch_fidelity.KEY_METRIC_FID])}


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
    n_min = check_pair(samples, reference)
    subset = kid_subset_size or max(2, min(1000, n_min // 2))
    if not 2 <= subset <= n_min:
        raise ValueError(f"kid_subset_size={subset} must be in 2..{n_min} (the smaller set)")
    space = FeatureSpace(extractor_weights_path, inception_weights, cuda, batch_size, num_threads)
    out = fid_kid_from_features(space.features(samples), space.features(reference), subset, seed,
                                space.num_threads)
    return {**out, "feature_extractor": space.label}
