"""report.seeds: the seeds of a case merged into one row (scoresde.report.seeds), and the
orderings and tables that read it."""

import csv
import json
import math

import numpy as np
import pytest

from scoresde import report
from scoresde.report import uncertainty
from scoresde.report.load import load_fid_results
from scoresde.report.seeds import merge_seeds

B = 200  # bootstrap replicates


def record(fid, seed_index, noise=0.7, rng_seed=0, **over):
    """A FID JSON of one seed: replicates = fid + independent noise of s.d. `noise`."""
    rng = np.random.default_rng(rng_seed)
    return {"dataset": "digits", "sde": "vp", "case": "pc_10_tweedie", "sampler": "pc",
            "predictor": "reverse_diffusion", "corrector": "langevin", "steps": 10,
            "denoise": True, "nfe": 21, "fid": fid, "kid": fid / 100, "kid_std": 0.01,
            "seconds": 2.0, "n_samples": 64, "n_reference": 100, "bootstrap_n": B,
            "bootstrap_seed": 0, "feature_extractor": "x", "fid_ci_level": 0.9,
            "fid_bootstrap": (fid + noise * rng.standard_normal(B)).tolist(),
            "seed_index": seed_index, **over}  # fmt: skip


def test_seeds_merge_into_their_mean_with_the_stratified_bootstrap():
    seeds = [record(10.0 + 2 * k, k, rng_seed=k) for k in range(3)]
    (m,) = merge_seeds(seeds)
    assert m["seeds"] == 3 and m["fid"] == pytest.approx(12.0)
    assert m["fid_seed_sd"] == pytest.approx(2.0)  # s.d. of 10, 12, 14
    assert m["kid"] == pytest.approx(0.12) and m["nfe"] == 21
    assert m["kid_std"] == pytest.approx(0.01 / math.sqrt(3))  # s.d. of a mean of three
    reps = np.mean([s["fid_bootstrap"] for s in seeds], axis=0)
    assert m["fid_bootstrap"] == pytest.approx(reps.tolist())
    lo, hi = np.quantile(reps - reps.mean(), [0.05, 0.95])  # the JSONs' level, 0.9
    assert (m["fid_ci_low"], m["fid_ci_high"]) == pytest.approx((12.0 + lo, 12.0 + hi))
    # a mean of three independent seeds: the interval is about 1/sqrt(3) of one seed's
    one = uncertainty.recentred_interval(10.0, seeds[0]["fid_bootstrap"], 0.9)
    ratio = (m["fid_ci_high"] - m["fid_ci_low"]) / (one[1] - one[0])
    assert 0.4 < ratio < 0.75


def test_one_seed_is_passed_through_and_cases_stay_apart():
    a, b = record(10.0, None), record(11.0, 0, case="pc_20_tweedie", steps=20)
    out = merge_seeds([a, b])
    assert [r["fid"] for r in out] == [10.0, 11.0] and all(r["seeds"] == 1 for r in out)
    assert out[0]["fid_bootstrap"] == a["fid_bootstrap"] and math.isnan(out[0]["fid_seed_sd"])


@pytest.mark.parametrize("bad, words", [
    ({"repeat": True}, "repeat a seed"),
    ({"n_samples": 32}, "differ in n_samples (32, 64)"),
    ({"bootstrap_seed": 5}, "differ in bootstrap_seed"),
])  # fmt: skip
def test_seeds_that_cannot_be_averaged_are_an_error_naming_the_case(bad, words):
    with pytest.raises(ValueError, match=r"case digits/vp/pc_10_tweedie") as err:
        second = record(11.0, 0) if "repeat" in bad else record(11.0, 1, **bad)
        merge_seeds([record(10.0, 0), second])
    assert words in str(err.value)


def test_merged_replicates_without_equal_lengths_give_no_interval():
    (m,) = merge_seeds([record(10.0, 0), record(11.0, 1, fid_bootstrap=[1.0, 2.0])])
    assert m["fid"] == pytest.approx(10.5) and m["fid_bootstrap"] is None
    assert math.isnan(m["fid_ci_low"]) and math.isnan(m["fid_ci_high"])


def write_case(root, fid, seed, case, steps, rng_seed):
    sub = "" if seed == 0 else f"seed{seed}/"
    path = root / f"metrics/digits/vp/fid/{sub}{case}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    rec = record(fid, seed, rng_seed=rng_seed, case=case, steps=steps, nfe=2 * steps + 1)
    path.write_text(json.dumps({k: v for k, v in rec.items() if k != "case"}))
    return path


def two_cases(root, n_seeds):
    """PC at 10 steps (FID 10) and at 20 steps (FID 11), `n_seeds` seeds each, independent
    bootstrap noise of s.d. 0.7 per seed and case: d = -1 with a paired s.d. of ~1 / sqrt(n)."""
    files = []
    for k in range(n_seeds):
        files.append(write_case(root, 10.0, k, "pc_10_tweedie", 10, rng_seed=100 + k))
        files.append(write_case(root, 11.0, k, "pc_20_tweedie", 20, rng_seed=200 + k))
    return files


def test_load_merges_the_seed_folders_and_more_seeds_decide_an_ordering(tmp_path):
    rows = {}
    for n in (1, 9):
        df = load_fid_results(two_cases(tmp_path / f"n{n}", n))
        assert len(df) == 2 and list(df["seeds"]) == [n, n]
        rows[n] = df.to_dict("records")
    one, nine = (uncertainty.fid_difference(rows[n][0], rows[n][1], 0.95) for n in (1, 9))
    assert one["how"] == nine["how"] == "paired bootstrap"
    assert one["d"] == pytest.approx(-1.0) and nine["d"] == pytest.approx(-1.0)
    assert one["verdict"] is None and nine["verdict"] is True  # undecided at 1 seed, held at 9
    assert (nine["hi"] - nine["lo"]) < 0.5 * (one["hi"] - one["lo"])
    # a mean over 9 seeds is not paired with a single seed's FID
    assert not uncertainty.paired(rows[9][0], rows[1][1])


def test_report_tables_show_the_seeds(tmp_path):
    files = two_cases(tmp_path, 3)
    out = report.build_report(files, [], tmp_path / "reports")
    with open(out["metrics_csv"], newline="") as fh:
        csv_rows = list(csv.DictReader(fh))
    assert [int(r["seeds"]) for r in csv_rows] == [3, 3]
    assert float(csv_rows[0]["fid"]) == pytest.approx(10.0)
    assert float(csv_rows[0]["fid_seed_sd"]) == 0.0
    html = out["html"].read_text()
    assert "FID s.d. over seeds" in html and "64 x 3 seeds" in html and "(mean)" in html
