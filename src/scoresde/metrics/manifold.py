"""Fidelity, diversity and copying of a sample set, each a separate figure with an interval.

In one feature space (the extractor's standardised features):

* precision and recall (Kynkaenniemi et al. 2019), computed by torch-fidelity: precision is the
  share of samples inside the reference manifold (the union of balls around each reference image
  reaching its k-th nearest reference neighbour), recall the share of reference images inside the
  samples' manifold. Fidelity and diversity.
* density and coverage (Naeem et al. 2020), computed by ``prdc``: density counts how many
  reference balls hold each sample (divided by k; about 1 when samples are distributed like the
  reference, robust to outliers of the reference), coverage is the share of reference images
  whose ball holds at least one sample (drops when modes are missing).
* ``memorised``: the share of samples that are near-copies of a training image, after Meehan et
  al. 2020 (data-copying test): a sample's distance to its nearest training image is compared with
  the same distance of held-out test images, which the model never saw. A sample is a near-copy
  when its distance is below ``ratio`` (default 1/3) times the held-out images' median distance:
  new images from the data distribution almost never come that close to a training image
  (``memorised_heldout``, the held-out images' own share, is the baseline; near 0), exact copies
  always do (share 1). The 1/3 follows the nearest-neighbour ratio test of Yoon et al. 2023 for
  diffusion-model memorisation, anchored here on held-out data. ``copy_z`` is Meehan et al.'s
  Mann-Whitney statistic over one cell: the z-score of the samples' distances against the
  held-out distances (well below -3: samples sit closer to the training set than new data does).

Intervals: the reference radii (and the samples' radii for recall) are fixed from the full sets,
the bootstrap resamples which samples and which reference images are counted (``n_bootstrap``
replicates of both, with replacement, from ``seed``; cases of equal size share resample indices),
and :func:`~scoresde.metrics.bootstrap.bootstrap_interval` recentres the percentile interval on
the library's estimate. ``memorised`` gets the Wilson score interval of a binomial share.
"""

from __future__ import annotations

import contextlib
import io
import math

import torch

from .bootstrap import _counts, bootstrap_interval, paired_streams

MANIFOLD_KEYS = ("precision", "recall", "density", "coverage")


def _cdist(a: torch.Tensor, b: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Euclidean distances (A, B) in float64, by row chunks."""
    a, b = a.double(), b.double()
    return torch.cat([torch.cdist(a[i : i + chunk], b) for i in range(0, len(a), chunk)])


def _per_row(a: torch.Tensor, b: torch.Tensor, reduce) -> torch.Tensor:
    """``reduce`` of each row of the distances from ``a`` to ``b``, computed a block of rows at a
    time (about 128 MiB of distances), so that no (A, B) matrix is held."""
    rows = max(1, (1 << 24) // max(1, len(b)))
    return torch.cat([reduce(_cdist(a[i : i + rows], b)) for i in range(0, len(a), rows)])


def knn_radii(f: torch.Tensor, k: int) -> torch.Tensor:
    """Distance of each point to its k-th nearest neighbour among the others (float64)."""
    if not 1 <= k < len(f):
        raise ValueError(f"nearest_k={k} must be in 1..{len(f) - 1} (fewer points than neighbours)")
    return _per_row(f, f, lambda d: d.kthvalue(k + 1, dim=1).values)


def _library_prdc(f_samples: torch.Tensor, f_reference: torch.Tensor, k: int) -> dict:
    """Precision / recall from torch-fidelity, density / coverage from prdc."""
    import prdc
    from torch_fidelity.metric_prc import prc_features_to_metric

    prc = prc_features_to_metric(f_samples.double(), f_reference.double(), prc_neighborhood=k,
                                 prc_batch_size=4096, save_cpu_ram=True, verbose=False)  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):  # prdc prints the set sizes
        dc = prdc.compute_prdc(f_reference.double().numpy(), f_samples.double().numpy(), k)
    return {"precision": float(prc["precision"]), "recall": float(prc["recall"]),
            "density": float(dc["density"]), "coverage": float(dc["coverage"])}  # fmt: skip


def replicate_prdc(d_sr, r_ref, r_samples, c_samples, c_reference, k) -> dict:
    """Precision, recall, density and coverage for resample multiplicities (B, S) and (B, R).

    ``d_sr``: sample-to-reference distances (S, R); ``r_ref`` / ``r_samples``: the k-NN radii of
    the full sets. With every multiplicity 1 these are the full-set figures (torch-fidelity's
    precision / recall with ``<=``, prdc's density / coverage with ``<``).
    """
    cs, cr = c_samples.double(), c_reference.double()
    in_ref = (d_sr <= r_ref[None, :]).double()  # sample j in reference ball i (precision)
    in_ref_strict = (d_sr < r_ref[None, :]).double()  # density / coverage (prdc's <)
    in_samples = (r_samples[None, :] >= d_sr.T).double()  # reference i in sample ball j (recall)
    s, r = cs.sum(1), cr.sum(1)
    precision = (cs * ((cr > 0).double() @ in_ref.T > 0)).sum(1) / s
    density = ((cs @ in_ref_strict) * cr).sum(1) / (k * s)
    recall = (cr * ((cs > 0).double() @ in_samples.T > 0)).sum(1) / r
    coverage = (cr * ((cs > 0).double() @ in_ref_strict > 0)).sum(1) / r
    return {"precision": precision, "recall": recall, "density": density, "coverage": coverage}


class Manifold:
    """The reference set's k-NN manifold in feature space, built once for many sample sets.

    ``f_reference``: (R, D) features; ``nearest_k``: k of every ball (5, as Naeem et al.);
    ``n_bootstrap`` / ``seed`` / ``confidence``: the intervals (0 replicates: none).
    """

    def __init__(self, f_reference: torch.Tensor, nearest_k: int = 5, n_bootstrap: int = 200,
                 seed: int = 0, confidence: float = 0.95):
        self.f_reference = f_reference.double().cpu()
        self.k, self.n_bootstrap, self.confidence = nearest_k, n_bootstrap, confidence
        # prdc needs k + 2 images of each set (a k-th neighbour besides itself): else NaN figures
        self.radii = (knn_radii(self.f_reference, nearest_k) if len(f_reference) >= nearest_k + 2
                      else None)  # fmt: skip
        ref_seed, self._sample_seed = paired_streams(seed)
        self._c_reference = _counts(len(self.f_reference), n_bootstrap,
                                    torch.Generator().manual_seed(ref_seed))  # fmt: skip

    def __call__(self, f_samples: torch.Tensor) -> dict:
        """Precision, recall, density, coverage and, with replicates, each one's interval
        (``<name>_ci_low`` / ``<name>_ci_high``); NaN when either set has at most k + 1 images."""
        f = f_samples.double().cpu()
        if self.radii is None or len(f) < self.k + 2:
            return {key: math.nan for key in MANIFOLD_KEYS} | {"nearest_k": self.k}
        out = _library_prdc(f, self.f_reference, self.k)
        out["nearest_k"] = self.k
        if self.n_bootstrap:
            d_sr = _cdist(f, self.f_reference)
            c_samples = _counts(len(f), self.n_bootstrap, torch.Generator().manual_seed(self._sample_seed))
            r_samples, reps = knn_radii(f, self.k), {key: [] for key in MANIFOLD_KEYS}
            for i in range(0, self.n_bootstrap, 50):
                part = replicate_prdc(d_sr, self.radii, r_samples, c_samples[i : i + 50],
                                      self._c_reference[i : i + 50], self.k)  # fmt: skip
                for key in MANIFOLD_KEYS:
                    reps[key].append(part[key])
            for key in MANIFOLD_KEYS:
                lo, hi = bootstrap_interval(out[key], torch.cat(reps[key]), self.confidence)
                top = math.inf if key == "density" else 1.0  # shares stay in [0, 1]
                out |= {f"{key}_ci_low": max(lo, 0.0), f"{key}_ci_high": min(hi, top)}
        return out


def nearest_distances(f: torch.Tensor, f_train: torch.Tensor) -> torch.Tensor:
    """Distance of each row of ``f`` to its nearest row of ``f_train`` (float64)."""
    return _per_row(f, f_train, lambda d: d.min(1).values)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson's score interval of a binomial proportion (Wilson 1927)."""
    if n == 0:
        return math.nan, math.nan
    from scipy.stats import norm

    z = float(norm.ppf(0.5 + confidence / 2))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    lo, hi = max(0.0, centre - half), min(1.0, centre + half)
    return (0.0 if successes == 0 else lo), (1.0 if successes == n else hi)


class CopyDetector:
    """Near-copies of training images, judged against held-out images (see the module docstring).

    ``f_train``: features of the training set the model saw; ``f_heldout``: of held-out images
    it did not see; ``ratio``: the threshold as a fraction of the held-out median distance.
    """

    def __init__(self, f_train: torch.Tensor, f_heldout: torch.Tensor, ratio: float = 1 / 3,
                 confidence: float = 0.95):
        if not 0 < ratio < 1:
            raise ValueError(f"ratio={ratio} must be in (0, 1)")
        self.f_train, self.ratio, self.confidence = f_train.double().cpu(), ratio, confidence
        self.heldout = nearest_distances(f_heldout.double().cpu(), self.f_train)
        self.threshold = ratio * float(self.heldout.median())

    def __call__(self, f_samples: torch.Tensor) -> dict:
        from scipy.stats import mannwhitneyu

        d = nearest_distances(f_samples.double().cpu(), self.f_train)
        copies = int((d <= self.threshold).sum())
        lo, hi = wilson_interval(copies, len(d), self.confidence)
        u = float(mannwhitneyu(d.numpy(), self.heldout.numpy()).statistic)
        n1, n2 = len(d), len(self.heldout)
        z = (u - n1 * n2 / 2) / math.sqrt(n1 * n2 * (n1 + n2 + 1) / 12)
        return {"memorised": copies / len(d), "memorised_ci_low": lo, "memorised_ci_high": hi,
                "memorised_heldout": float((self.heldout <= self.threshold).double().mean()),
                "memorised_ratio": self.ratio, "copy_z": z,
                "nn_train_distance": float(d.median()),
                "nn_train_distance_heldout": float(self.heldout.median())}  # fmt: skip
