"""The likelihood stage's bounds on an exact Gaussian score, and the report's likelihood table."""

import json
import math

import pandas as pd
import pytest
import torch
from exact import gaussian

from scoresde import VPSDE
from scoresde.report import bound_rows, bounds_table, flat_metrics, load_nll_results
from scoresde.report.bounds import LIKELIHOOD_COLUMNS, tightest_text
from scoresde.stages.likelihood import image_bounds, images_bits_per_dim

LK = {"batch_size": 4, "rtol": 1e-4, "atol": 1e-4, "eps": 1e-5, "divergence": "exact", "n_probes": 1,
      "seed": 3, "samples": 2, "tau": 3.0}  # fmt: skip


@pytest.fixture(scope="module")
def bounds():
    """5 images of 2x2 pixels, 17 levels, under a Gaussian model in [-1, 1] (VP)."""
    sde, levels, n = VPSDE(beta_min=0.1, beta_max=20.0), 17, 5
    m = torch.tensor([0.1, -0.2, 0.0, 0.3], dtype=torch.float64)
    model = gaussian(m, torch.diag(torch.tensor([0.05, 0.08, 0.06, 0.04], dtype=torch.float64)))
    T = torch.full((1,), sde.T, dtype=torch.float64)
    sde.prior_logp = lambda z: model.log_prob_t(sde, z, T.expand(len(z))).to(z.dtype)
    u = model.sample(n, torch.Generator().manual_seed(0))[0]
    k = ((u + 1) / 2 * levels).floor().clamp(0, levels - 1).to(torch.uint8).reshape(n, 1, 2, 2)
    methods = ("uniform", "importance", "truncated-normal")
    return image_bounds(model.score_fn(sde), sde, k, levels, True, LK, "cpu", methods), (model, sde, k)


def test_importance_is_at_least_the_uniform_bound_on_the_same_draws(bounds):
    res, _ = bounds
    # log-mean-exp >= mean for every image: its bits/dim is never above uniform's
    assert (res["importance"]["bpd"] <= res["uniform"]["bpd"] + 1e-12).all()
    assert res["importance"]["nfe"] == res["uniform"]["nfe"] and res["uniform"]["solve"] == "uniform"
    tn = res["truncated-normal"]
    assert tn["tau"] == pytest.approx(3.0) and tn["t0"] > 1e-5 and torch.isfinite(tn["bpd"]).all()
    # 4 // 2 = 2 images per solve: 3 batches for 5 images
    assert len(res["uniform"]["nfe"]) == 3 and all(v > 10 for v in res["uniform"]["nfe"])


def test_images_bits_per_dim_is_the_uniform_bound(bounds):
    res, (model, sde, k) = bounds
    bpd, nfes = images_bits_per_dim(model.score_fn(sde), sde, k, 17, True, LK, "cpu")
    torch.testing.assert_close(bpd, res["uniform"]["bpd"]) and nfes == res["uniform"]["nfe"]


def _nll_json(path, sde, per_method):
    bounds = []
    for method, per_image in per_method.items():
        mean = sum(per_image) / len(per_image)
        sd = math.sqrt(sum((v - mean) ** 2 for v in per_image) / (len(per_image) - 1))
        bounds.append({"method": method, "bpd": mean, "bpd_std": sd,
                       "bpd_sem": sd / math.sqrt(len(per_image)), "nfe": 100, "seconds": 2.0,
                       "samples": 4, "t0": 1e-5, "tau": None,
                       "bpd_per_image": per_image})  # fmt: skip
    uniform = bounds[0]
    path.write_text(json.dumps({"dataset": "digits", "sde": sde, "bpd": uniform["bpd"],
                                "bpd_sem": uniform["bpd_sem"], "nfe": 100, "n_images": 4,
                                "bpd_per_image": uniform["bpd_per_image"], "bounds": bounds}))  # fmt: skip
    return path


def test_report_rows_pair_every_bound_with_uniform(tmp_path):
    uniform = [2.0, 2.4, 1.8, 2.2]
    files = [
        _nll_json(tmp_path / "vp.json", "vp", {
            "uniform": uniform, "importance": [v - 0.1 for v in uniform],  # 0.1 lower on every image
            "truncated-normal": [v + 0.5 + 0.01 * i for i, v in enumerate(uniform)]}),
        _nll_json(tmp_path / "ve.json", "ve", {
            "uniform": uniform, "truncated-normal": [v + 1 + 0.01 * i for i, v in enumerate(uniform)]}),
    ]  # fmt: skip
    rows = bound_rows(load_nll_results(files))
    assert list(rows.columns) == LIKELIHOOD_COLUMNS
    assert list(zip(rows["sde"], rows["method"], strict=True)) == [
        ("ve", "uniform"), ("ve", "truncated-normal"), ("vp", "uniform"), ("vp", "importance"),
        ("vp", "truncated-normal")]  # fmt: skip
    imp = rows[rows["method"] == "importance"].iloc[0]
    # paired: the per-image differences are all -0.1, so the interval has zero width
    assert imp["diff_to_uniform"] == pytest.approx(-0.1) and imp["diff_ci_high"] == pytest.approx(-0.1)
    tn = rows[(rows["sde"] == "ve") & (rows["method"] == "truncated-normal")].iloc[0]
    assert tn["diff_to_uniform"] == pytest.approx(1.015)
    assert 1.0 < tn["diff_ci_low"] < 1.015 < tn["diff_ci_high"]
    assert math.isnan(rows["diff_to_uniform"][0])  # uniform against itself: empty
    table = bounds_table(rows)
    assert table["bound"].tolist()[:2] == ["uniform (paper)", "truncated normal (i-DODE)"]
    assert table.iloc[2, -1].startswith("3.16") and table.iloc[3, -1] == ""  # the paper beside uniform only
    metrics = flat_metrics(pd.DataFrame(), load_nll_results(files))  # DVC's metrics.json
    assert metrics["digits/vp/bpd"] == pytest.approx(2.1)
    assert metrics["digits/vp/bpd_importance"] == pytest.approx(2.0)
    assert set(metrics) == {"digits/vp/bpd", "digits/vp/bpd_importance", "digits/vp/bpd_truncated-normal",
                            "digits/ve/bpd", "digits/ve/bpd_truncated-normal"}  # fmt: skip
    text = tightest_text(rows)
    assert "digits/VP: importance-weighted is the tightest, 2.00 ± 0.13 bits/dim, -0.100" in text
    assert "Hutchinson" not in text  # no divergence recorded: no caveat
    assert "Hutchinson probes' noise" in tightest_text(rows.assign(divergence="rademacher"))
    assert "digits/VE: the paper's uniform bound is the tightest (2.10 ± 0.13 bits/dim" in text
    assert "truncated normal (i-DODE) +1.015 [1.00" in text


def test_one_draw_importance_is_labelled_as_uniform(tmp_path):
    uniform = [2.0, 2.4, 1.8, 2.2]
    path = _nll_json(tmp_path / "vp.json", "vp", {"uniform": uniform, "importance": uniform})
    rows = bound_rows(load_nll_results([path])).assign(samples=1)
    labels = bounds_table(rows)["bound"].tolist()
    assert labels == ["uniform (paper)", "importance-weighted (1 draw: equals uniform)"]
    assert "uniform bound is the tightest" in tightest_text(rows)


def test_old_json_without_bounds_is_one_uniform_row(tmp_path):
    path = tmp_path / "nll.json"
    path.write_text(json.dumps({"dataset": "digits", "sde": "vp", "bpd": 3.5, "bpd_sem": 0.1}))
    rows = bound_rows(load_nll_results([path]))
    assert rows["method"].tolist() == ["uniform"] and rows["bpd"].tolist() == [3.5]
    assert tightest_text(rows) == ""
