"""The inverse stage's operators, its report figure and (slow) the stage through the CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch

from scoresde.report.controllable import controllable_section, load_rows
from scoresde.stages.common import StageError
from scoresde.stages.inverse import TASKS, make_operator, measurement_view


@pytest.mark.parametrize("task", TASKS)
def test_task_operators_and_measurement_views(task):
    shape = (1, 8, 8)
    op = make_operator(task, shape, seed=7)
    x = torch.rand(3, *shape, generator=torch.Generator().manual_seed(0))
    y = op.forward(x)
    assert y.shape == (3, {"superres": 16, "deblur": 64, "noisy-projection": 16}[task])
    view = measurement_view(task, op, y)
    assert view.shape == x.shape
    if task == "superres":  # the low-resolution image, each value repeated over its 2x2 block
        assert torch.allclose(view[:, :, ::2, ::2].flatten(1), y)
    if task == "deblur":
        assert torch.equal(view.flatten(1), y)
    assert torch.equal(make_operator(task, shape, 7).forward(x), y)  # seeded
    with pytest.raises(StageError, match="unknown inverse task"):
        make_operator("inpaint", shape, 7)


def test_report_has_the_inverse_rows_and_figure(tmp_path):
    base = tmp_path / "controllable" / "digits" / "vp"
    (base / "inverse").mkdir(parents=True)
    images = torch.randint(0, 255, (4, 1, 8, 8), dtype=torch.uint8)
    files = []
    for task in ("superres", "deblur"):
        for method in ("dps", "smc"):
            torch.save({"images": images, "truth": images, "measurement": images},
                       base / "inverse" / f"{task}_{method}.pt")
            row = {"dataset": "digits", "sde": "vp", "task": task, "case": f"{task} / {method}",
                   "method": method, "n": 4, "nfe": 21, "steps": 20, "noise_std": 0.05,
                   "residual": 0.06, "psnr": 20.0, "ssim": 0.7, "fid": 1.0, "seconds": 1.0}
            path = base / "inverse" / f"{task}_{method}.json"
            path.write_text(json.dumps({"rows": [row]}))
            files.append(path)
    out = tmp_path / "reports"
    out.mkdir()
    result = controllable_section(files, out)
    df = load_rows(files)
    assert len(df) == 4 and set(df["task"]) == {"superres", "deblur"}
    assert (df["residual"] == 0.06).all()
    merged = json.loads((out / "metrics.json").read_text())
    assert merged["digits/vp/controllable/deblur/deblur_smc/residual"] == 0.06
    assert [f["name"] for f in result["figures"]] == ["inverse_digits_vp"]
    assert (out / "figures" / "inverse_digits_vp.png").stat().st_size > 1000
    assert "residual" in (out / "controllable.csv").read_text().splitlines()[0]


TINY = """
data: {n_reference: 32}
model: {channels: 8, channel_mult: [1, 2]}
sde: {names: [vp]}
train: {n_iters: 4, snapshot_every: 4, batch_size: 16, log_every: 2, warmup: 2}
eval: {features: {epochs: 1}}
controllable:
  inverse: {n_images: 4, steps: 3, particles: 2}
"""


@pytest.mark.slow
def test_inverse_stage_through_the_cli(tmp_path):
    """prepare-data -> train-features -> train -> inverse: one run for every (task, method) writes
    reconstructions, truth and measurement images and one metrics row per case, the same files as
    a run of one case alone; bad arguments exit 2 before writing."""
    from stage_runs import prepare_and_train, run

    p = tmp_path / "params.yaml"
    p.write_text(TINY)
    data, ck, out = tmp_path / "data", tmp_path / "ck", tmp_path / "controllable/digits/vp/inverse"
    prepare_and_train(p, data, ck, "vp")
    args = ["inverse", "--params", p, "--checkpoint", ck / "vp/step_4.pt", "--data",
            data / "test.pt", "--extractor", ck / "fid_features.pt", "--reference",
            data / "reference.pt", "--sde", "vp", "--threads", "1"]
    methods = ["smc", "dps", "pigdm"]
    cases = [(t, m) for t in TASKS for m in methods]
    assert run(*args, "--tasks", *TASKS, "--methods", *methods,
               "--out", *[out / f"{t}_{m}.pt" for t, m in cases],
               "--metrics", *[out / f"{t}_{m}.json" for t, m in cases]) == 0
    for task, method in cases:
        saved = torch.load(out / f"{task}_{method}.pt", weights_only=True)
        assert {k: v.shape for k, v in saved.items()} == {k: (4, 1, 8, 8) for k in
                                                         ("images", "truth", "measurement")}
        assert all(v.dtype == torch.uint8 for v in saved.values())
        (row,) = json.loads((out / f"{task}_{method}.json").read_text())["rows"]
        assert row["task"] == task and row["method"] == method and row["nfe"] == 4
        # (a 4-step model's Tweedie step may land far off: the residual is only finite here)
        assert row["psnr"] > 0 and 0 <= row["residual"] < math.inf and row["noise_std"] == 0.05
    alone = tmp_path / "alone"
    assert run(*args, "--tasks", "deblur", "--methods", "dps", "--out", alone / "c.pt",
               "--metrics", alone / "c.json") == 0
    grouped = torch.load(out / "deblur_dps.pt", weights_only=True)
    assert all(torch.equal(v, grouped[k]) for k, v in
               torch.load(alone / "c.pt", weights_only=True).items())
    (one,) = json.loads((alone / "c.json").read_text())["rows"]
    (same,) = json.loads((out / "deblur_dps.json").read_text())["rows"]
    assert {k: v for k, v in one.items() if k != "seconds"} == \
        {k: v for k, v in same.items() if k != "seconds"}
    bad = tmp_path / "bad"
    for extra, message in (
        (["--tasks", "inpaint", "--methods", "dps"], "--tasks 'inpaint' is unknown"),
        (["--tasks", "deblur", "deblur", "--methods", "dps"], "names one twice"),
        (["--tasks", "deblur", "superres", "--methods", "dps"], "give one --out per"),
    ):
        assert run(*args, *extra, "--out", bad / "x.pt", "--metrics", bad / "x.json") == 2, message
    assert not bad.exists()
    section = controllable_section(sorted(out.glob("*.json")), tmp_path / "reports")
    assert [f["name"] for f in section["figures"]] == ["inverse_digits_vp"]
