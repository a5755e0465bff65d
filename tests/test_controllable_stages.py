"""The noise-conditional classifier, the controllable stages' helpers and the report section."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch

from scoresde.checkpoint import save_checkpoint
from scoresde.models.classifier import NoiseConditionalClassifier, class_log_prob, classifier_loss
from scoresde.report.controllable import controllable_section, flat_metrics, load_rows, row_names
from scoresde.sde import make_sde
from scoresde.stages.common import StageError
from scoresde.stages.controllable import load_classifier, make_mask
from scoresde.stages.quality import psnr, ssim


@pytest.mark.parametrize("sde_name", ["ve", "vp", "subvp"])
def test_classifier_learns_noisy_classes(sde_name):
    """Two classes of 4x4 images (bright top / bright bottom half); after a short cross-entropy
    run on x(t) the classifier separates them at small t and is unsure at t = T."""
    torch.manual_seed(0)
    sde = make_sde(sde_name, **({"sigma_max": 2.0} if sde_name == "ve" else {}))
    net = NoiseConditionalClassifier(4, 1, num_classes=2, channels=8, channel_mult=(1,),
                                     embedding="fourier" if sde_name == "ve" else "positional")
    x = torch.zeros(64, 1, 4, 4)
    labels = torch.arange(64) % 2
    x[labels == 0, :, :2] = 1.0
    x[labels == 1, :, 2:] = 1.0
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(60):
        loss = classifier_loss(net, sde, x, labels, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        small = class_log_prob(net, sde, labels)(x, torch.full((64,), 1e-3))
        large = class_log_prob(net, sde, labels)(sde.prior_sampling((64, 1, 4, 4), gen),
                                                 torch.ones(64))
    assert small.exp().mean() > 0.9
    assert abs(large.exp().mean() - 0.5) < 0.25


def test_class_label_outside_the_classes_is_an_error():
    net = NoiseConditionalClassifier(4, 1, num_classes=3, channels=8, channel_mult=(1,))
    sde = make_sde("vp")
    with pytest.raises(ValueError, match=r"outside the classifier's classes 0\.\.2"):
        class_log_prob(net, sde, 3)
    with pytest.raises(ValueError, match="outside"):
        class_log_prob(net, sde, torch.tensor([0, -1]))
    assert class_log_prob(net, sde, 2)(torch.zeros(5, 1, 4, 4), torch.ones(5)).shape == (5,)


def test_masks():
    shape = (50, 1, 8, 8)
    centre, left, rnd = (make_mask(m, shape, seed=1) for m in ("centre", "left", "random"))
    assert float(1 - centre.mean()) == 0.25 and centre[0, 0, 3, 3] == 0 and centre[0, 0, 0, 0] == 1
    assert float(1 - left.mean()) == 0.5 and (left[..., :4] == 0).all()
    assert abs(float(1 - rnd.mean()) - 0.5) < 0.05 and torch.equal(rnd, make_mask("random", shape, 1))
    with pytest.raises(ValueError, match="unknown mask"):
        make_mask("circle", shape)


def test_psnr_and_ssim():
    gen = torch.Generator().manual_seed(0)
    ref = torch.randint(20, 230, (4, 1, 8, 8), generator=gen).to(torch.uint8)
    off = ref + 10
    expected = torch.full((4,), 10 * math.log10(255**2 / 100), dtype=torch.float64)
    assert torch.allclose(psnr(off, ref), expected)
    region = torch.zeros(4, 1, 8, 8, dtype=torch.bool)
    region[..., :4] = True
    half = torch.where(region, off, ref)
    assert torch.allclose(psnr(half, ref, region), psnr(off, ref))  # only the region counts
    assert torch.allclose(ssim(ref, ref), torch.ones(4, dtype=torch.float64))
    assert (ssim(torch.randint(0, 255, ref.shape, generator=gen).to(torch.uint8), ref) < 0.5).all()


def _save_classifier(path, **overrides):
    config = {"kind": "noise_conditional_classifier", "dataset": "digits", "image_shape": [1, 4, 4],
              "sde": {"name": "vp", "N": 1000, "beta_min": 0.1, "beta_max": 20.0},
              "centered": True, "dequantize": True,
              "model": {"image_size": 4, "in_channels": 1, "num_classes": 2, "channels": 8,
                        "channel_mult": [1], "num_res_blocks": 1, "embedding": "positional",
                        "fourier_scale": 16.0}}
    config.update(overrides)
    net = NoiseConditionalClassifier(**{k: tuple(v) if isinstance(v, list) else v
                                        for k, v in config["model"].items()})
    save_checkpoint(path, net.state_dict(), config)
    return config


def test_classifier_for_another_sde_or_dataset_is_refused(tmp_path):
    config = _save_classifier(tmp_path / "c.pt")
    score_cfg = {k: config[k] for k in ("dataset", "sde", "centered", "dequantize", "image_shape")}
    net, _ = load_classifier(str(tmp_path / "c.pt"), score_cfg, "cpu")
    assert net.num_classes == 2
    other = {**score_cfg, "sde": {"name": "subvp", "N": 1000, "beta_min": 0.1, "beta_max": 20.0}}
    with pytest.raises(StageError, match="trained for sde="):
        load_classifier(str(tmp_path / "c.pt"), other, "cpu")
    with pytest.raises(StageError, match="trained for dataset='digits'"):
        load_classifier(str(tmp_path / "c.pt"), {**score_cfg, "dataset": "mnist"}, "cpu")
    save_checkpoint(tmp_path / "x.pt", {}, {"kind": "score_model"})
    with pytest.raises(StageError, match="not a noise-conditional classifier"):
        load_classifier(str(tmp_path / "x.pt"), score_cfg, "cpu")


def _conditional_json(path):
    """A conditional-sample JSON as the stage writes it: two classes, both methods."""
    rows = [{"dataset": "digits", "sde": "vp", "task": "conditional", "case": f"unconditional / class {k}",
             "method": "unconditional", "class": k, "class_name": None, "n": 2, "nfe": 6, "fid": 4.0}
            for k in (0, 1)]
    for method, strength in (("classifier", 2.0), ("free", 1.0)):
        rows += [{"dataset": "digits", "sde": "vp", "task": "conditional", "case": f"{method} / class {k}",
                  "method": method, "class": k, "class_name": None, "n": 2, "nfe": 6,
                  "strength": strength, "accuracy": 1.0, "accuracy_ci_low": 0.34,
                  "accuracy_ci_high": 1.0, "fid": 3.0, "fid_unconditional": 4.0,
                  "fid_excess_ci_low": -2.0, "fid_excess_ci_high": 0.5, "fid_not_worse": True,
                  "precision": 0.5, "recall": 1.0} for k in (0, 1)]
        rows.append({"dataset": "digits", "sde": "vp", "task": "conditional",
                     "case": f"{method} / all classes", "method": method, "n": 4, "nfe": 6,
                     "strength": strength, "accuracy": 0.75 if method == "classifier" else 1.0,
                     "accuracy_ci_low": 0.3, "accuracy_ci_high": 0.95, "fid": 2.0,
                     "not_worse_classes": 2})
    sweep = [{"method": m, "sampler": sampler, "strength": s, "nfe": 6, "accuracy": 0.5 + s / 10,
              "fid": 5.0 - s, "precision": 0.5 + s / 10, "recall": 0.9 - s / 10, "seconds": 0.1}
             for m in ("classifier", "free") for sampler in ("sde-dpmpp-2m-sde_5", "pc_3")
             for s in (1.0, 2.0)]
    ratios = [{"method": m, "strength": s, "t": t, "ratio": 0.1 * s}
              for m in ("classifier", "free") for s in (1.0, 2.0) for t in (1.0, 0.5, 0.01)]
    path.write_text(json.dumps({"rows": rows, "sweep": sweep, "ratios": ratios,
                                "chosen": {"classifier": 2.0, "free": 1.0}, "target_accuracy": 0.95,
                                "classifier_accuracy_by_time": {"t=0": 0.99, "t=0.5": 0.3}}))


def test_report_section(tmp_path):
    samples = tmp_path / "controllable" / "digits" / "vp"
    (samples / "inpaint").mkdir(parents=True)
    images = torch.randint(0, 255, (4, 1, 8, 8), dtype=torch.uint8)
    labels = torch.tensor([0, 0, 1, 1])
    torch.save({"images": images, "labels": labels, "classifier": images, "free": images,
                "unconditional": images, "unconditional_labels": labels}, samples / "conditional.pt")
    torch.save({"truth": images, "masked_left": images}, samples / "inpaint" / "inputs.pt")
    torch.save({"images": images}, samples / "inpaint" / "left_smc.pt")
    _conditional_json(samples / "conditional.json")
    rows = [{"dataset": "digits", "sde": "vp", "task": "inpaint", "case": "left / smc",
             "mask": "left", "method": "smc", "n": 4, "nfe": 4, "psnr": 20.0, "ssim": 0.7, "fid": 1.0}]
    (samples / "inpaint.json").write_text(json.dumps({"rows": rows}))
    files = [samples / "conditional.json", samples / "inpaint.json"]
    out = tmp_path / "reports"
    out.mkdir()
    (out / "metrics.json").write_text(json.dumps({"digits/vp/pc_10_tweedie/fid": 5.0}))
    result = controllable_section(files, out)
    df = load_rows(files)
    assert len(df) == 9 and (out / "controllable.csv").is_file()
    merged = json.loads((out / "metrics.json").read_text())
    assert merged["digits/vp/pc_10_tweedie/fid"] == 5.0
    assert merged["digits/vp/controllable/inpaint/left_smc/psnr"] == 20.0
    assert flat_metrics(df)["digits/vp/controllable/conditional/free_class 0/accuracy"] == 1.0
    assert [f["name"] for f in result["figures"]] == ["controllable_digits_vp", "guidance_digits_vp"]
    assert (out / "figures" / "guidance_digits_vp.png").stat().st_size > 1000
    texts = [b for kind, b in result["section"].blocks if kind == "text"]
    tables = [b for kind, b in result["section"].blocks if kind == "table"]
    assert "the pipeline's digits classifier" in texts[0]
    assert "classifier guidance (strength 2, 6 NFE): accuracy 0.750 [0.300, 0.950] against the " \
           "target 0.95: not held" in texts[1]
    assert "free guidance (strength 1, 6 NFE): accuracy 1.000" in texts[1] and ": held;" in texts[1]
    assert "in 2 of 2 classes" in texts[1]
    per_class = tables[0]
    assert per_class["class"].tolist()[:2] == [0, 1] and str(per_class["class"].dtype) == "Int64"
    assert set(per_class["method"]) == {"unconditional", "classifier", "free"}
    assert list(tables[1]["task"]) == ["inpaint"]
    assert result["section"].heading == "Controllable generation"


def test_report_note_names_the_dataset_classifier():
    from scoresde.report.controllable import note

    assert "pipeline's image_folder classifier" in note(["image_folder", "image_folder"])
    assert "digits" not in note(["image_folder"])


def test_conditional_rows_are_named_by_class_where_the_data_has_names():
    rows = pd.DataFrame({"task": ["conditional"] * 3 + ["inpaint"], "class": [1, 0, None, None],
                         "class_name": ["square", "cross", None, None]})
    rows["class"] = rows["class"].astype("Int64")
    assert row_names(rows) == "rows: 0 = cross, 1 = square"
    assert row_names(rows.assign(class_name=None)) == "row k = class k"


RGB_TINY = """
data: {dataset: image_folder, root: %s, n_reference: 32}
model: {channels: 8, channel_mult: [1, 2]}
sde: {names: [vp]}
train: {n_iters: 4, snapshot_every: 4, batch_size: 16, log_every: 2, warmup: 2}
eval: {features: {epochs: 1}}
controllable:
  inpaint: {n_images: 4, steps: 3, methods: [replace, smc], smc: {particles: 2}}
"""


@pytest.mark.slow
def test_colorize_stage_on_an_rgb_image_folder(tmp_path):
    """prepare-data -> train-features -> train -> colorize on 8x8 colour PNGs: one coloured set
    per method, their grey level equal to the input's, metrics rows and the report's figure."""
    import numpy as np
    from PIL import Image
    from stage_runs import prepare_and_train, run

    rng = np.random.default_rng(0)
    for split, n in (("train", 24), ("test", 8)):
        for k in range(n):
            d = tmp_path / "raw" / split / f"c{k % 2}"
            d.mkdir(parents=True, exist_ok=True)
            img = np.zeros((8, 8, 3), np.uint8)
            img[..., k % 3] = rng.integers(120, 255, (8, 8))  # a red, green or blue image
            Image.fromarray(img).save(d / f"{k}.png")
    p = tmp_path / "params.yaml"
    p.write_text(RGB_TINY % (tmp_path / "raw"))
    data, ck, out = tmp_path / "data", tmp_path / "ck", tmp_path / "controllable/image_folder/vp"
    prepare_and_train(p, data, ck, "vp")
    args = ["colorize", "--params", p, "--checkpoint", ck / "vp/step_4.pt", "--data",
            data / "test.pt", "--extractor", ck / "fid_features.pt", "--reference",
            data / "reference.pt", "--methods", "replace", "smc", "--sde", "vp"]
    assert run(*args, "--out", out / "colorize/replace.pt", out / "colorize/smc.pt",
               "--inputs-out", out / "colorize/inputs.pt", "--metrics", out / "colorize.json") == 0
    shown = torch.load(out / "colorize/inputs.pt", weights_only=True)
    truth, grey = shown["truth"], shown["grey"]
    assert truth.shape == grey.shape == (4, 3, 8, 8)
    assert torch.equal(grey[:, 0], grey[:, 1]) and torch.equal(grey[:, 0], grey[:, 2])
    for method in ("replace", "smc"):
        images = torch.load(out / f"colorize/{method}.pt", weights_only=True)["images"]
        assert images.shape == (4, 3, 8, 8) and images.dtype == torch.uint8
        # (that the grey level is kept exactly, in model space, is test_controllable.py's
        # test_colorize_keeps_the_grey_level; a 4-step model's colours clip to 0 / 255 here)
    rows = json.loads((out / "colorize.json").read_text())["rows"]
    assert [r["method"] for r in rows] == ["replace", "smc"]
    assert all(r["task"] == "colorize" and r["psnr"] > 0 and r["nfe"] > 0 for r in rows)
    section = controllable_section([out / "colorize.json"], tmp_path / "reports")
    assert [f["name"] for f in section["figures"]] == ["controllable_image_folder_vp"]
    # one output per method
    assert run(*args, "--out", tmp_path / "a.pt", "--inputs-out", tmp_path / "i.pt",
               "--metrics", tmp_path / "m.json") == 2
    assert not (tmp_path / "m.json").exists()
