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

Uncertainty: an FID of a few hundred samples is a random quantity. :class:`BootstrapFID`
resamples the extracted features of both sets with replacement and recomputes FID from the
resampled means and covariances (:func:`frechet_distance`, the same formula torch-fidelity
evaluates); :func:`bootstrap_interval` turns the replicates into an interval. Replicates of
cases drawn with the same seed and set sizes use the same resample indices, so the report can
bootstrap the difference of two cases' FIDs pairwise.

The package's modules: :mod:`.classifier` (the offline feature classifier: network, training,
loading), :mod:`.fidelity` (torch-fidelity's feature extractors, FID and KID) and
:mod:`.bootstrap` (Frechet distance of resampled moments, paired bootstrap intervals).
torch-fidelity (and with it torchvision) is imported only when a name of :mod:`.fidelity` is
first used, so stages that only train or load the classifier start faster.
"""

from __future__ import annotations

import importlib

from .bootstrap import BootstrapFID, BootstrapKID, bootstrap_interval, frechet_distance
from .classifier import (
    EXTRACTOR_NAME,
    FeatureClassifier,
    as_uint8_images,
    build_feature_classifier,
    classifier_accuracy,
    classifier_predictions,
    cpu_threads,
    load_feature_extractor,
    train_feature_extractor,
)

_FIDELITY = (
    "INCEPTION_LABEL", "INCEPTION_NAME", "ClassifierFeatureExtractor", "FeatureSpace",
    "check_pair", "compute_fid_kid", "fid_from_features", "fid_kid_from_features",
    "register_classifier_extractor",
)  # fmt: skip

__all__ = [
    "EXTRACTOR_NAME", "BootstrapFID", "BootstrapKID", "FeatureClassifier", "as_uint8_images",
    "bootstrap_interval",
    "build_feature_classifier", "classifier_accuracy", "classifier_predictions", "cpu_threads",
    "frechet_distance",
    "load_feature_extractor", "train_feature_extractor", *_FIDELITY,
]  # fmt: skip


def __getattr__(name: str):
    """The torch-fidelity names, imported on first use (PEP 562)."""
    if name in _FIDELITY:
        return getattr(importlib.import_module(".fidelity", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
