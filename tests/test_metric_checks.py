"""What the metrics see: the check-metrics stage on digits with the pipeline's own feature
extractor (trained here with params.yaml's settings). Each known defect must be seen decisively
(intervals apart from the held-out images') by the figure meant to see it."""

import json

import pytest
import yaml

from scoresde.data import load_dataset
from scoresde.stages import fid as fid_stage
from scoresde.stages.common import save_tensors

pytestmark = pytest.mark.slow


def _apart_above(row, clean, key):
    return row[f"{key}_ci_low"] > clean[f"{key}_ci_high"]


def _apart_below(row, clean, key):
    return row[f"{key}_ci_high"] < clean[f"{key}_ci_low"]


@pytest.fixture(scope="module")
def checks(tmp_path_factory):
    from pathlib import Path

    params = yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())
    tmp = tmp_path_factory.mktemp("checks")
    for split in ("train", "test"):
        d = load_dataset("digits", split)
        save_tensors(tmp / f"{split}.pt", {"x": d.x, "labels": d.labels, "levels": d.levels,
                                          "name": "digits"})  # fmt: skip
        if split == "train":  # the default reference: the whole training split
            from scoresde.data import Levels

            save_tensors(tmp / "reference.pt", {"images": Levels(d.levels).to_uint8(d.x)})
    fid_stage.train_features(params, str(tmp / "train.pt"), str(tmp / "test.pt"),
                             str(tmp / "features.pt"), device_name="cpu")  # fmt: skip
    out = tmp / "metric_checks.json"
    fid_stage.check_metrics(params, str(tmp / "train.pt"), str(tmp / "test.pt"),
                            str(tmp / "reference.pt"), str(tmp / "features.pt"), str(out),
                            device_name="cpu")  # fmt: skip
    result = json.loads(out.read_text())
    return {r["images"]: r for r in result["rows"]}, result


def test_the_extractor_is_strong_on_digits(checks):
    _, result = checks
    assert "test accuracy" in result["feature_extractor"]
    accuracy = float(result["feature_extractor"].split("test accuracy ")[1].split(";")[0])
    assert accuracy >= 0.99


def test_thirty_percent_speckle_multiplies_fid_by_five(checks):
    rows, _ = checks
    clean, speckle = rows["held-out"], rows["speckle 30%"]
    assert speckle["fid"] >= 5 * clean["fid"] and _apart_above(speckle, clean, "fid")
    assert _apart_below(speckle, clean, "precision") and _apart_below(speckle, clean, "density")


def test_blur_and_contrast_are_seen_by_fid_and_precision(checks):
    rows, _ = checks
    clean = rows["held-out"]
    for name in ("blur", "contrast 0.7"):
        assert rows[name]["fid"] >= 5 * clean["fid"] and _apart_above(rows[name], clean, "fid")
        assert _apart_below(rows[name], clean, "precision"), name


def test_missing_classes_lower_recall_and_coverage(checks):
    rows, _ = checks
    clean, missing = rows["held-out"], rows["3 classes missing"]
    assert _apart_below(missing, clean, "recall") and _apart_below(missing, clean, "coverage")
    assert _apart_above(missing, clean, "fid")


def test_training_copies_are_memorised_and_held_out_images_are_not(checks):
    rows, _ = checks
    clean, copies = rows["held-out"], rows["training copies"]
    assert clean["memorised"] <= 0.02 and clean["memorised_heldout"] <= 0.02
    assert copies["memorised"] >= 0.95 and copies["copy_z"] < -10
    assert _apart_above(copies, clean, "memorised")
    # FID cannot see copies: their FID interval overlaps the held-out images'
    assert copies["fid_ci_low"] <= clean["fid_ci_high"]


def test_every_row_has_every_figure_with_an_interval(checks):
    rows, result = checks
    assert len(rows) == 6 and result["n_reference"] == 1500
    for row in rows.values():
        for key in ("fid", "kid", "precision", "recall", "density", "coverage", "memorised"):
            assert row[f"{key}_ci_low"] <= row[key] <= row[f"{key}_ci_high"], (row["images"], key)
    assert 0 <= rows["held-out"]["speckled"] <= rows["speckle 30%"]["speckled"] <= 1
