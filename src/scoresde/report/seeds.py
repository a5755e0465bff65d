"""Several sampling seeds of one case (``report.seeds``) merged into one FID row.

Seed k of a case is the sweep's sampler run on samples k*n .. k*n + n - 1 of the per-sample
streams: independent sample sets of the same size, all scored against the same reference set
with the same bootstrap resample indices. The merged row's FID is the mean of the seeds' FIDs;
its bootstrap replicates are the replicate-wise means of the seeds' replicates, a bootstrap of
that mean that resamples within every seed (stratified by seed), so two merged cases stay
paired replicate by replicate. ``seeds`` counts the seeds and ``fid_seed_sd`` is the standard
deviation of the seeds' FIDs (the spread a reader would see rerunning with another seed); the
intervals of the mean already contain that noise, since each seed's bootstrap estimates it.
"""

from __future__ import annotations

import math

import numpy as np

from scoresde.report.uncertainty import recentred_interval

CASE_KEY = ("dataset", "sde", "case")
# must agree between seeds for their FIDs to be averaged
SAME = ("sampler", "predictor", "corrector", "steps", "denoise", "n_samples", "n_reference",
        "bootstrap_n", "bootstrap_seed", "feature_extractor")  # fmt: skip
FIGURES = ("precision", "recall", "density", "coverage", "memorised")  # the fid stage's shares
MEAN = ("nfe", "fid", "kid", "seconds", *FIGURES)


def merge_seeds(rows: list[dict]) -> list[dict]:
    """One row per case: the rows of a case's seeds (``seed_index``) merged as described above.

    Rows without ``seed_index`` count as seed 0. A case given twice for one seed, or whose seeds
    disagree on a field of ``SAME``, is an error naming the case.
    """
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in CASE_KEY), []).append(r)
    return [merge_case(key, group) for key, group in groups.items()]


def merge_case(key: tuple, group: list[dict]) -> dict:
    seeds = [int(r.get("seed_index") or 0) for r in group]
    name = "/".join(map(str, key))
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"FID results of case {name} repeat a seed ({sorted(seeds)}); give each "
                         "seed's file once")
    if len(group) == 1:
        return {**group[0], "seeds": 1, "fid_seed_sd": math.nan}
    for k in SAME:
        values = {str(r.get(k)) for r in group}
        if len(values) > 1:
            raise ValueError(f"the seeds of case {name} differ in {k} ({', '.join(sorted(values))}); "
                             "rerun them with one configuration")
    out = {**group[seeds.index(min(seeds))]}
    for k in MEAN:
        vals = [r.get(k) for r in group]
        out[k] = float(np.mean(vals)) if all(_number(v) for v in vals) else math.nan
    kid_sd = [r.get("kid_std") for r in group]
    out["kid_std"] = (math.sqrt(sum(v * v for v in kid_sd)) / len(group)
                      if all(_number(v) for v in kid_sd) else math.nan)  # fmt: skip
    for k in ("kid", *FIGURES):  # one seed's interval does not hold for the mean of several
        out[f"{k}_ci_low"] = out[f"{k}_ci_high"] = math.nan
    fids = [r["fid"] for r in group]
    out.update(seeds=len(group), fid_seed_sd=float(np.std(fids, ddof=1)), seed_index=None)
    reps = [r.get("fid_bootstrap") for r in group]
    if all(isinstance(v, (list, tuple)) and len(v) == len(reps[0]) > 1 for v in reps):
        mean_reps = np.mean(np.asarray(reps, dtype=float), axis=0)
        level = out.get("fid_ci_level") or 0.95
        out["fid_bootstrap"] = mean_reps.tolist()
        out["fid_ci_low"], out["fid_ci_high"] = recentred_interval(out["fid"], mean_reps, level)
    else:
        out["fid_bootstrap"] = None
        out["fid_ci_low"] = out["fid_ci_high"] = math.nan
    return out


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
