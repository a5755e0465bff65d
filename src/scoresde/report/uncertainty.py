"""Intervals and decisions: every ordering is decided with its uncertainty.

A comparison "A < B" is decided from an interval of the difference d = A - B at the report's
confidence level: **held** when the whole interval lies below 0, **not held** when it lies
above 0, **undecided** when it contains 0 (the data cannot tell the two apart).

* FID: each case's JSON holds bootstrap replicates of its FID (``metrics.BootstrapFID``). When two
  cases were resampled with the same indices (same seed, replicate count and set sizes: every case
  of a run), the replicate-wise differences are a *paired* bootstrap of d: the noise the two FIDs
  share (the common reference set, the shared per-sample seeds, the one trajectory behind a
  Tweedie on / off pair) cancels in d instead of widening both intervals. Without pairing the
  rule falls back to the two FID intervals: decided only when they do not overlap.
* bits/dim: the per-image standard errors, d +- z sqrt(se_A^2 + se_B^2) (normal approximation,
  independent estimates; conservative, since both SDEs see the same test images). With per-image
  values (``bpd_per_image``) of the same images the paired interval d +- z sd(d_i) / sqrt(n).
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

from scoresde.report.formatting import missing

HELD, NOT_HELD, UNDECIDED = True, False, None


def decide(lo: float, hi: float):
    """Verdict on "d < 0" from an interval of d."""
    if missing(lo) or missing(hi):
        return UNDECIDED
    return HELD if hi < 0 else NOT_HELD if lo > 0 else UNDECIDED


def recentred_interval(estimate: float, replicates, confidence: float) -> tuple[float, float]:
    """``estimate + percentiles(replicates - mean(replicates))`` (as ``metrics.bootstrap_interval``)."""
    r = np.asarray(replicates, dtype=float)
    r = r[np.isfinite(r)]
    if r.size < 2 or missing(estimate):
        return math.nan, math.nan
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(r - r.mean(), [alpha, 1 - alpha])
    return float(estimate + lo), float(estimate + hi)


def _replicates(r: dict):
    reps = r.get("fid_bootstrap")
    return reps if isinstance(reps, (list, tuple, np.ndarray)) and len(reps) > 1 else None


def fid_interval(r: dict, confidence: float) -> tuple[float, float]:
    """The FID's interval at ``confidence`` from its replicates, else the JSON's stored interval."""
    reps = _replicates(r)
    if reps is not None:
        return recentred_interval(r["fid"], reps, confidence)
    return r.get("fid_ci_low", math.nan), r.get("fid_ci_high", math.nan)


def paired(a: dict, b: dict) -> bool:
    """Were the two cases' replicates drawn with the same resample indices?"""
    ra, rb = _replicates(a), _replicates(b)
    keys = ("bootstrap_seed", "n_samples", "n_reference", "dataset", "feature_extractor")
    same = all(not missing(a.get(k)) and not missing(b.get(k)) and a[k] == b[k] for k in keys)
    same = same and seed_count(a) == seed_count(b)  # means over as many seeds
    return ra is not None and rb is not None and len(ra) == len(rb) and same


def seed_count(r: dict) -> int:
    n = r.get("seeds")
    return 1 if missing(n) else int(n)


def fid_difference(a: dict, b: dict, confidence: float) -> dict:
    """d = FID(a) - FID(b) with its interval and verdict on "a has the lower FID"."""
    d = a["fid"] - b["fid"]
    if paired(a, b):
        reps = np.asarray(a["fid_bootstrap"], float) - np.asarray(b["fid_bootstrap"], float)
        lo, hi = recentred_interval(d, reps, confidence)
        return {"d": d, "lo": lo, "hi": hi, "how": "paired bootstrap", "verdict": decide(lo, hi)}
    (alo, ahi), (blo, bhi) = fid_interval(a, confidence), fid_interval(b, confidence)
    if any(missing(v) for v in (alo, ahi, blo, bhi)):
        return {"d": d, "lo": math.nan, "hi": math.nan, "how": "no interval", "verdict": UNDECIDED}
    lo, hi = alo - bhi, ahi - blo  # the intervals separate exactly when this excludes 0
    return {"d": d, "lo": lo, "hi": hi, "how": "interval overlap", "verdict": decide(lo, hi)}


def z_value(confidence: float) -> float:
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def bpd_interval(r: dict, confidence: float) -> tuple[float, float]:
    sem = r.get("bpd_sem")
    if missing(sem) or missing(r["bpd"]):
        return math.nan, math.nan
    z = z_value(confidence)
    return r["bpd"] - z * sem, r["bpd"] + z * sem


def bpd_difference(a: dict, b: dict, confidence: float) -> dict:
    """d = bpd(a) - bpd(b) with its normal interval and verdict on "a has the lower bits/dim"."""
    d, z = a["bpd"] - b["bpd"], z_value(confidence)
    ia, ib = a.get("bpd_per_image"), b.get("bpd_per_image")
    if isinstance(ia, list) and isinstance(ib, list) and len(ia) == len(ib) > 1:
        di = np.asarray(ia, float) - np.asarray(ib, float)
        se, how = float(di.std(ddof=1) / math.sqrt(len(di))), "paired over test images"
    elif not (missing(a.get("bpd_sem")) or missing(b.get("bpd_sem"))):
        se, how = math.hypot(a["bpd_sem"], b["bpd_sem"]), "independent standard errors"
    else:
        return {"d": d, "lo": math.nan, "hi": math.nan, "how": "no standard error",
                "verdict": UNDECIDED}  # fmt: skip
    lo, hi = d - z * se, d + z * se
    return {"d": d, "lo": lo, "hi": hi, "how": how, "verdict": decide(lo, hi)}
