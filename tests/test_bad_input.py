"""Bad input on the config, data and stage surfaces: refused before any work with one line that
names the argument or key and the value, no score evaluated and no output left behind."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml
from stage_runs import prepare_and_train, run
from test_cli import _error
from test_official import save_official, tiny

from scoresde import official
from scoresde.data import DataError
from scoresde.stages import config as cfg
from scoresde.stages.common import load_split, write_json

TINY = """
data: {n_train: 200, n_test: 20, n_reference: 32}
model: {channels: 8, channel_mult: [1, 2]}
sde: {names: [vp]}
train: {n_iters: 2, snapshot_every: 2, batch_size: 8, log_every: 1, warmup: 1}
eval: {features: {epochs: 1}}
controllable:
  classifier: {n_iters: 2, batch_size: 8, channels: 8}
  conditional: {n_per_class: 2, samplers: [sde-dpmpp-2m-sde_2], guidance: [classifier],
                strengths: {classifier: [1]}, selection_per_class: 2}
  inpaint: {n_images: 2, steps: 2, masks: [centre], methods: [replace], smc: {particles: 2}}
"""


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Processed digits, the FID extractor, a 2-step VP score model and a 2-step classifier."""
    d = tmp_path_factory.mktemp("bad_input")
    (d / "params.yaml").write_text(TINY)
    prepare_and_train(d / "params.yaml", d / "data", d / "ck", "vp")
    assert run("train-classifier", "--params", d / "params.yaml", "--data", d / "data/train.pt",
               "--sde", "vp", "--out", d / "ck/classifier.pt", "--device", "cpu") == 0
    return d


@pytest.fixture
def calls(monkeypatch):
    """Counts score evaluations (every stage builds its score through losses.get_score_fn) and
    classifier training steps."""
    import scoresde.losses
    import scoresde.models.classifier

    counted = {"score": 0, "classifier_step": 0}
    make_score, loss = scoresde.losses.get_score_fn, scoresde.models.classifier.classifier_loss

    def get_score_fn(*args, **kwargs):
        score_fn = make_score(*args, **kwargs)

        def counting(x, t):
            counted["score"] += 1
            return score_fn(x, t)
        return counting

    def classifier_loss(*args, **kwargs):
        counted["classifier_step"] += 1
        return loss(*args, **kwargs)

    monkeypatch.setattr(scoresde.losses, "get_score_fn", get_score_fn)
    monkeypatch.setattr(scoresde.models.classifier, "classifier_loss", classifier_loss)
    return counted


def bad_split(work, tmp_path, split: str, change) -> str:
    """A copy of a processed split with ``change(obj)`` applied."""
    obj = torch.load(work / f"data/{split}.pt", weights_only=True)
    change(obj)
    path = tmp_path / f"bad_{split}.pt"
    torch.save(obj, path)
    return str(path)


def assert_refused(code, capsys, words, out_dir, calls=None):
    """Exit 2 with one ``error:`` line holding every word; no output; nothing evaluated."""
    assert code == 2
    message = _error(capsys)
    for w in words:
        assert str(w) in message, (w, message)
    assert not out_dir.exists() or not list(out_dir.iterdir())
    if calls is not None:
        assert calls == {"score": 0, "classifier_step": 0}


def _set(obj, key, value):
    obj[key] = value


# --------------------------------------------------------------------------- config (library)

CONFIG_CASES = [
    ({"controllable": {"conditional": {"target_accuracy": math.nan}}},
     ["controllable.conditional.target_accuracy", "nan"]),
    ({"controllable": {"conditional": {"strengths": {"free": [1, math.inf]}}}},
     ["controllable.conditional.strengths.free.1", "inf"]),
    ({"controllable": {"conditional": {"samplers": ["pc_10", "ode-rk4_10"]}}},
     ["controllable.conditional.samplers[1]", "ode-rk4_10", "unknown sampler"]),
    ({"controllable": {"conditional": {"guidance": ["classifier", "bayes"]}}},
     ["controllable.conditional.guidance", "bayes"]),
    ({"sample": {"snr": {"ve": -math.inf}}}, ["sample.snr.ve", "-inf"]),
    ({"train": {"lr": math.nan}}, ["train.lr", "nan"]),
    ({"sample": {"steps": [10, math.inf]}}, ["sample.steps.1", "inf"]),
    ({"eval": {"likelihood": {"rtol": math.nan}}}, ["eval.likelihood.rtol", "nan"]),
    ({"sample": {"extra_cases": ["ode-dpmpp2m_10"]}}, ["sample.extra_cases[0]", "ode-dpmpp2m_10",
                                                       "unknown sampler"]),
    ({"sample": {"extra_cases": ["pc_200", "ode-rk45_10"]}}, ["sample.extra_cases[1]",
                                                             "ode-rk45_10", "adaptive"]),
    ({"sample": {"extra_cases": ["pc_adaptive"]}}, ["sample.extra_cases[0]", "pc_adaptive"]),
    ({"train": {"lr": "1e30"}}, ["train.lr", "1e30", "write 1.0e+30"]),
    ({"train": {"lr": "2e-4"}}, ["train.lr", "2e-4", "write 2.0e-4"]),
    ({"train": {"lr": "1.5E3"}}, ["train.lr", "1.5E3", "write 1.5e+3"]),
    ({"select": {"sampler": "dpmpp"}}, ["select.sampler", "dpmpp"]),
    ({"sample": {"samplers": ["pc", "ode-rk4"]}}, ["sample.samplers", "ode-rk4"]),
]


@pytest.mark.parametrize("params, words", CONFIG_CASES)
def test_config_names_the_key_and_value(params, words):
    with pytest.raises(cfg.ConfigError) as err:
        cfg.validate(params)
    for w in words:
        assert w in str(err.value), (w, str(err.value))


def test_nan_in_params_json_is_refused():
    with pytest.raises(cfg.ConfigError, match=r"sample\.snr\.vp: nan is not a finite number"):
        cfg.resolve(params_json='{"sample": {"snr": {"vp": NaN}}}')
    assert cfg.yaml_float("1e30") == "1.0e+30" and yaml.safe_load(cfg.yaml_float("1e30")) == 1e30


# --------------------------------------------------------------------------- validate-config (CLI)

VALIDATE_CASES = [
    ("sample: {extra_cases: [ode-dpmpp2m_10]}", [], ["sample.extra_cases[0]", "ode-dpmpp2m_10"]),
    ("sample: {extra_cases: [ode-rk45_10]}", [], ["sample.extra_cases[0]", "ode-rk45_10"]),
    ("select: {sampler: ode-rk4}", [], ["select.sampler", "ode-rk4"]),
    ("controllable: {conditional: {target_accuracy: .nan}}", [],
     ["controllable.conditional.target_accuracy", "nan"]),
    ("sample: {snr: {ve: .inf}}", [], ["sample.snr.ve", "inf"]),
    ("train: {lr: 1e30}", [], ["train.lr", "write 1.0e+30"]),
    ("{}", ["--set", "controllable.inpaint.n_images=-.inf"], ["controllable.inpaint.n_images",
                                                              "-inf"]),
]


@pytest.mark.parametrize("text, extra, words", VALIDATE_CASES)
def test_validate_config_refuses(tmp_path, capsys, text, extra, words):
    path = tmp_path / "bad.yaml"
    path.write_text(text + "\n")
    assert_refused(run("validate-config", path, *extra), capsys, words, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


# --------------------------------------------------------------------------- processed data


def _bad_labels(obj):
    obj["labels"] = obj["labels"][:-1]


DATA_CASES = [
    ("pixel above levels - 1", lambda o: o["x"].view(-1).__setitem__(0, 17), ["pixel value 17",
                                                                               "levels=17"]),
    ("8-bit pixels", lambda o: o["x"].view(-1).__setitem__(3, 255), ["pixel value 255"]),
    ("levels 0", lambda o: _set(o, "levels", 0), ["levels=0"]),
    ("levels 1", lambda o: _set(o, "levels", 1), ["levels=1"]),
    ("levels text", lambda o: _set(o, "levels", "17"), ["levels='17'"]),
    ("labels too short", _bad_labels, ["(19,)", "20 images"]),
    ("labels 2-D", lambda o: _set(o, "labels", o["labels"][:, None]), ["(20, 1)"]),
    ("negative label", lambda o: o["labels"].__setitem__(0, -1), ["min -1"]),
    ("float labels", lambda o: _set(o, "labels", o["labels"].float()), ["torch.float32"]),
]


@pytest.mark.parametrize("name, change, words", DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_processed_data_is_checked_when_loaded(work, tmp_path, name, change, words):
    path = bad_split(work, tmp_path, "test", change)
    with pytest.raises(DataError) as err:
        load_split(path)
    for w in [path, "rerun prepare-data", *words]:
        assert w in str(err.value), (w, str(err.value))


# --------------------------------------------------------------------------- train-classifier


def _classifier_args(work, out, data=None, test=None):
    return ["train-classifier", "--params", work / "params.yaml", "--data",
            data or work / "data/train.pt", "--test", test or work / "data/test.pt", "--sde", "vp",
            "--out", out / "classifier.pt", "--device", "cpu"]


CLASSIFIER_CASES = [
    ("3-channel test", "test", lambda o: _set(o, "x", o["x"].expand(-1, 3, -1, -1).contiguous()),
     ["--test", "(3, 8, 8)", "(1, 8, 8)"]),
    ("4x4 test", "test", lambda o: _set(o, "x", o["x"][..., :4, :4].contiguous()),
     ["--test", "(1, 4, 4)"]),
    ("test labels too short", "test", _bad_labels, ["labels of shape (19,)", "20 images"]),
    ("train labels too short", "train", _bad_labels, ["labels of shape (199,)", "200 images"]),
    ("unlabelled test", "test", lambda o: _set(o, "labels", None), ["--test", "no labels"]),
    ("test of other levels", "test", lambda o: _set(o, "levels", 256), ["--test", "levels 256"]),
    ("test of another dataset", "test", lambda o: _set(o, "name", "mnist"), ["'mnist'",
                                                                               "'digits'"]),
    ("test class unknown to training", "test", lambda o: o["labels"].__setitem__(0, 12),
     ["class 12", "0..9"]),
    ("train pixel above levels", "train", lambda o: o["x"].view(-1).__setitem__(0, 200),
     ["pixel value 200"]),
]


@pytest.mark.parametrize("name, split, change, words", CLASSIFIER_CASES,
                         ids=[c[0] for c in CLASSIFIER_CASES])
def test_train_classifier_refuses_before_training(work, tmp_path, capsys, calls, name, split,
                                                  change, words):
    path = bad_split(work, tmp_path, split, change)
    out = tmp_path / "out"
    code = run(*_classifier_args(work, out, **{"data" if split == "train" else "test": path}))
    assert_refused(code, capsys, [*words, path], out, calls)


# --------------------------------------------------------------------------- conditional-sample


def _conditional_args(work, out, data=None, extractor=None, *extra):
    return ["conditional-sample", "--params", work / "params.yaml", "--checkpoint",
            work / "ck/vp/step_2.pt", "--classifier", work / "ck/classifier.pt", "--data",
            data or work / "data/train.pt", "--test", work / "data/test.pt",
            "--extractor", extractor or work / "ck/fid_features.pt",
            "--out", out / "conditional.pt", "--metrics", out / "conditional.json", "--sde", "vp",
            "--device", "cpu", *extra]


def _keep_classes(obj, n=5):
    keep = obj["labels"] < n
    obj["x"], obj["labels"] = obj["x"][keep], obj["labels"][keep]


CONDITIONAL_CASES = [
    ("data lacking classes", _keep_classes, [], ["class(es) 5, 6, 7, 8, 9", "10 classes"]),
    ("unlabelled data", lambda o: _set(o, "labels", None), [], ["--data", "no labels"]),
    ("data of another shape", lambda o: _set(o, "x", o["x"][..., :4, :4].contiguous()), [],
     ["--data", "[1, 4, 4]", "[1, 8, 8]"]),
    ("data of other levels", lambda o: _set(o, "levels", 256), [], ["levels 256", "17"]),
    ("data pixel above levels", lambda o: o["x"].view(-1).__setitem__(0, 99), [],
     ["pixel value 99"]),
    ("NaN target accuracy", None, ["--set", "controllable.conditional.target_accuracy=.nan"],
     ["controllable.conditional.target_accuracy", "nan"]),
    ("free guidance without its network", None,
     ["--set", "controllable.conditional.guidance=[classifier, free]"],
     ["guidance lists 'free'", "--free"]),
    ("an unconditional network as --free", None, ["--free", "ck/vp/step_2.pt"],
     ["unconditional score model", "train --class-conditional"]),
    ("missing extractor", None, ["extractor"], ["nowhere.pt"]),
]


@pytest.mark.parametrize("name, change, extra, words", CONDITIONAL_CASES,
                         ids=[c[0] for c in CONDITIONAL_CASES])
def test_conditional_sample_refuses_before_sampling(work, tmp_path, capsys, calls, name, change,
                                                    extra, words):
    out = tmp_path / "out"
    data = bad_split(work, tmp_path, "train", change) if change else None
    if extra == ["extractor"]:
        args = _conditional_args(work, out, data, tmp_path / "nowhere.pt")
    elif extra[:1] == ["--free"]:
        args = _conditional_args(work, out, data, None, "--free", work / extra[1], "--set",
                                 "controllable.conditional.guidance=[free]")
    else:
        args = _conditional_args(work, out, data, None, *extra)
    assert_refused(run(*args), capsys, words + ([data] if data else []), out, calls)


def test_undefined_per_class_fid_is_null_with_a_warning(work, tmp_path, capsys):
    """2 samples per class: each class's FID is undefined, written as null (strict JSON)."""
    out = tmp_path / "out"
    assert run(*_conditional_args(work, out)) == 0
    assert "warning: per-class FID needs 4 images per class" in capsys.readouterr().err

    def refuse(name):
        raise AssertionError(f"non-standard JSON constant {name}")

    rows = json.loads((out / "conditional.json").read_text(), parse_constant=refuse)["rows"]
    per_class = [r for r in rows if r.get("class") is not None]
    assert len(per_class) == 20  # unconditional and classifier guidance, 10 classes each
    assert [r["fid"] for r in per_class] == [None] * 20 and rows[-1]["fid"] > 0


# --------------------------------------------------------------------------- inpaint / colorize


def _completion_args(work, out, stage="inpaint", masks=("centre",), methods=("replace",),
                     n_out=None, data=None, extractor=None, outs=None, extra=()):
    n_out = n_out if n_out is not None else len(masks) * len(methods)
    args = [stage, "--params", work / "params.yaml", "--checkpoint", work / "ck/vp/step_2.pt",
            "--data", data or work / "data/test.pt", "--extractor",
            extractor or work / "ck/fid_features.pt", "--reference", work / "data/reference.pt"]
    if stage == "inpaint":
        args += ["--masks", *masks]
    return [*args, "--methods", *methods, "--out", *(outs or [out / f"{i}.pt" for i in range(n_out)]),
            "--inputs-out", out / "inputs.pt", "--metrics", out / "metrics.json", "--sde", "vp",
            "--device", "cpu", *extra]


INPAINT_CASES = [
    ("bad second mask", dict(masks=("centre", "circle")), ["--masks", "'circle'"]),
    ("bad second method", dict(methods=("replace", "repain")), ["--methods", "'repain'"]),
    ("mask given twice", dict(masks=("left", "left")), ["--masks", "left left"]),
    ("missing extractor", dict(extractor="EXTRACTOR_MISSING"), ["nowhere.pt"]),
    ("extractor not a checkpoint", dict(extractor="EXTRACTOR_REFERENCE"), ["reference.pt"]),
    ("too few outputs", dict(masks=("centre", "left"), n_out=1), ["2 expected, got 1"]),
    ("an output twice", dict(methods=("replace", "smc"), outs="SAME"), ["name one file twice"]),
    ("output is the input", dict(outs="DATA"), ["test.pt", "is also an input"]),
    ("data of another shape", dict(data=lambda o: _set(o, "x", o["x"][..., :4, :4].contiguous())),
     ["--data", "[1, 4, 4]"]),
    ("data pixel above levels", dict(data=lambda o: o["x"].view(-1).__setitem__(5, 40)),
     ["pixel value 40"]),
    ("NaN snr", dict(extra=["--set", "sample.snr.vp=.nan"]), ["sample.snr.vp", "nan"]),
    ("colorize grey data", dict(stage="colorize"), ["RGB", "1-channel"]),
    ("colorize bad method", dict(stage="colorize", methods=("replace", "paint")),
     ["--methods", "'paint'"]),
]


@pytest.mark.parametrize("name, how, words", INPAINT_CASES, ids=[c[0] for c in INPAINT_CASES])
def test_inpaint_refuses_before_sampling(work, tmp_path, capsys, calls, name, how, words):
    out = tmp_path / "out"
    how = dict(how)
    if callable(how.get("data")):
        how["data"] = bad_split(work, tmp_path, "test", how["data"])
        words = [*words, how["data"]]
    extractor = {"EXTRACTOR_MISSING": tmp_path / "nowhere.pt",
                 "EXTRACTOR_REFERENCE": work / "data/reference.pt"}
    if how.get("extractor") in extractor:
        how["extractor"] = extractor[how["extractor"]]
    test_bytes = (work / "data/test.pt").read_bytes()
    if how.get("outs") == "SAME":
        how["outs"] = [out / "a.pt", out / "a.pt"]
    elif how.get("outs") == "DATA":
        how["outs"] = [work / "data/test.pt"]
    assert_refused(run(*_completion_args(work, out, **how)), capsys, words, out, calls)
    assert (work / "data/test.pt").read_bytes() == test_bytes


def test_a_failure_after_the_first_completion_leaves_nothing(work, tmp_path, capsys, monkeypatch):
    """The second (mask, method) fails while sampling: no completion, inputs or metrics file."""
    import scoresde.controllable

    real, done = scoresde.controllable.inpaint, []

    def failing(*args, **kwargs):
        if done:
            raise FloatingPointError("inpaint produced non-finite values")
        done.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(scoresde.controllable, "inpaint", failing)
    out = tmp_path / "out"
    code = run(*_completion_args(work, out, masks=("centre", "left")))
    assert_refused(code, capsys, ["non-finite"], out)
    assert done == [1]


def test_metrics_json_is_strict(tmp_path):
    """An undefined metric (NaN, e.g. the FID of fewer than 4 images) is written as null."""
    path = tmp_path / "m.json"
    write_json(path, {"rows": [{"fid": math.nan, "kid": math.inf, "psnr": 20.5}]})

    def refuse(name):
        raise AssertionError(f"non-standard JSON constant {name}")

    rows = json.loads(path.read_text(), parse_constant=refuse)["rows"]
    assert rows == [{"fid": None, "kid": None, "psnr": 20.5}]


# --------------------------------------------------------------------------- import-official


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    d = tmp_path_factory.mktemp("official")
    config, _, _ = save_official(d / "checkpoint_7.pth", "vp")
    (d / "model.json").write_text(json.dumps(config))
    return d


IMPORT_CASES = [
    (["--levels", "0"], ["levels=0", ">= 2"]),
    (["--levels", "1"], ["levels=1"]),
    (["--levels", "-3"], ["levels=-3"]),
    (["--image-size", "0"], ["image_size=0"]),
    (["--image-size", "15"], ["image_size=15", "multiple of 4"]),
    (["--image-size", "32"], ["image_size=32"]),  # a valid size, not the checkpoint's
    (["--num-channels", "0"], ["num_channels=0"]),
    ([], ["--image-size"]),  # forgotten with --model-config
]


@pytest.mark.parametrize("extra, words", IMPORT_CASES)
def test_import_official_refuses(released, tmp_path, capsys, extra, words):
    out = tmp_path / "out"
    size = [] if not extra or extra[0] == "--image-size" else ["--image-size", "16"]
    code = run("import-official", "--checkpoint", released / "checkpoint_7.pth", "--model-config",
               released / "model.json", "--sde", "vp", "--out", out / "best.pt", *size, *extra)
    assert_refused(code, capsys, words, out)


def test_import_official_preset_with_another_image_size(released, tmp_path, capsys):
    out = tmp_path / "out"
    code = run("import-official", "--checkpoint", released / "checkpoint_7.pth", "--preset",
               "vp/cifar10_ddpmpp_continuous", "--image-size", "16", "--out", out / "best.pt")
    assert_refused(code, capsys, ["--image-size 16", "32"], out)


@pytest.mark.parametrize("kwargs, words", [
    (dict(config=None), ["config=None"]),
    (dict(config=[1, 2]), ["config=[1, 2]"]),
    (dict(image_size=0), ["image_size=0"]),
    (dict(image_size=16.0), ["image_size=16.0"]),
    (dict(num_channels=-1), ["num_channels=-1"]),
    (dict(sde="vpsde"), ["sde='vpsde'"]),
])
def test_load_official_refuses(released, kwargs, words):
    args = {"config": tiny("vp"), "sde": "vp", "image_size": 16, **kwargs}
    with pytest.raises(ValueError) as err:
        official.load_official(released / "checkpoint_7.pth", **args)
    for w in words:
        assert w in str(err.value), (w, str(err.value))


def test_import_official_library_refuses_levels(released, tmp_path):
    with pytest.raises(ValueError, match=r"levels=0 must be an integer >= 2"):
        official.import_official(released / "checkpoint_7.pth", tmp_path / "best.pt",
                                 config=tiny("vp"), sde="vp", image_size=16, levels=0)
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------- library: samplers and inpainting

def _library_cases():
    from scoresde import VPSDE, ode_sample, pc_sample, sde_sample, solve_inverse
    from scoresde.controllable import inpaint

    sde, shape = VPSDE(), (4, 2)
    y, mask = torch.zeros(4, 2), torch.tensor([[1.0, 0.0]]).expand(4, 2).contiguous()
    nan, inf = torch.full(shape, float("nan")), torch.full(shape, float("inf"))
    A = torch.tensor([[1.0, 0.0]])
    return {
        "pc steps 2.7": ("steps", lambda s: pc_sample(s, sde, shape, steps=2.7)),
        "pc steps 0": ("steps", lambda s: pc_sample(s, sde, shape, steps=0)),
        "pc corrector_steps 1.5": ("corrector_steps", lambda s: pc_sample(
            s, sde, shape, steps=3, corrector_steps=1.5)),
        "pc snr nan": ("snr", lambda s: pc_sample(s, sde, shape, steps=3, snr=float("nan"))),
        "pc snr -0.1": ("snr", lambda s: pc_sample(s, sde, shape, steps=3, snr=-0.1)),
        "pc x_T nan": ("x_T", lambda s: pc_sample(s, sde, shape, steps=3, x_T=nan)),
        "pc eps 2": ("eps", lambda s: pc_sample(s, sde, shape, steps=3, eps=2.0)),
        "ode rtol -1": ("rtol", lambda s: ode_sample(s, sde, shape, method="rk45", rtol=-1)),
        "ode rtol 0": ("rtol", lambda s: ode_sample(s, sde, shape, method="rk45", rtol=0, atol=0)),
        "ode x_T inf": ("x_T", lambda s: ode_sample(s, sde, shape, method="heun", steps=3, x_T=inf)),
        "ode steps 2.7": ("steps", lambda s: ode_sample(s, sde, shape, method="heun", steps=2.7)),
        "ode method": ("ode-heun", lambda s: ode_sample(s, sde, shape, method="ode-heun", steps=3)),
        "sde steps 2.7": ("steps", lambda s: sde_sample(s, sde, shape, "edm", 2.7)),
        "sde x_T nan": ("x_T", lambda s: sde_sample(s, sde, shape, "edm", 3, x_T=nan)),
        "sde S_churn -1": ("S_churn", lambda s: sde_sample(s, sde, shape, "edm", 3, S_churn=-1.0)),
        "sde eta 2": ("eta", lambda s: sde_sample(s, sde, shape, "dpmpp-2m-sde", 3, eta=2.0)),
        "sde option typo": ("etta", lambda s: sde_sample(s, sde, shape, "dpmpp-2m-sde", 3, etta=0.5)),
        "inpaint snr -1": ("snr", lambda s: inpaint(s, sde, y, mask, 3, snr=-1.0)),
        "inpaint snr nan": ("snr", lambda s: inpaint(s, sde, y, mask, 3, snr=float("nan"))),
        "inpaint steps 2.7": ("steps", lambda s: inpaint(s, sde, y, mask, 2.7)),
        "inpaint y nan": ("y", lambda s: inpaint(s, sde, nan, mask, 3)),
        "inpaint particles 2.7": ("particles", lambda s: inpaint(
            s, sde, y, mask, 3, method="smc", particles=2.7)),
        "inpaint smc typo": ("particls", lambda s: inpaint(s, sde, y, mask, 3, method="smc",
                                                           particls=2)),
        "inpaint jump 0": ("jump", lambda s: inpaint(s, sde, y, mask, 3, method="repaint", jump=0)),
        "inpaint method": ("smcc", lambda s: inpaint(s, sde, y, mask, 3, method="smcc")),
        "inverse noise_std -1": ("noise_std", lambda s: solve_inverse(
            s, sde, torch.zeros(4, 1), A, -1.0, 3)),
        "inverse particles 0": ("particles", lambda s: solve_inverse(
            s, sde, torch.zeros(4, 1), A, 0.1, 3, method="smc", particles=0)),
    }


LIBRARY_CASES = _library_cases()


@pytest.mark.parametrize("case", sorted(LIBRARY_CASES))
def test_library_refuses_bad_arguments_before_any_score_evaluation(case):
    name, call = LIBRARY_CASES[case]
    calls = []

    def score(x, t):
        calls.append(1)
        return -x

    with pytest.raises(ValueError, match=name) as err:
        call(score)
    assert calls == [], f"{case}: {len(calls)} score evaluations before the refusal"
    assert "\n" not in str(err.value)


# --------------------------------------------------------------------------- outputs (CLI)

def _sample_args(checkpoint, out, meta, *extra):
    return ["sample", "--checkpoint", checkpoint, "--sampler", "pc", "--steps", "2", "--denoise",
            "tweedie", "--out", out, "--meta", meta, "--device", "cpu", *extra]


OUTPUT_CASES = {
    "sample --out is the checkpoint": (
        lambda d: _sample_args(d / "in.pt", d / "in.pt", d / "s.json"), ["--out", "in.pt",
                                                                        "is also an input"]),
    "sample --out is the checkpoint, another spelling": (
        lambda d: _sample_args(d / "in.pt", d / "sub/../in.pt", d / "s.json"), ["is also an input",
                                                                               "--checkpoint"]),
    "likelihood --out is --data": (
        lambda d: ["likelihood", "--checkpoint", d / "ck.pt", "--data", d / "in.pt", "--out",
                   d / "in.pt"], ["in.pt", "is also an input", "--data"]),
    "fid --out is --samples": (
        lambda d: ["fid", "--samples", d / "in.pt", "--meta", d / "m.json", "--reference",
                   d / "r.pt", "--extractor", d / "e.pt", "--train", d / "tr.pt", "--test",
                   d / "te.pt", "--out", d / "in.pt"],
        ["is also an input", "--samples"]),
    "sample --out equals --meta": (
        lambda d: _sample_args(d / "ck.pt", d / "s.pt", d / "s.pt"), ["--out", "--meta",
                                                                     "name one file twice"]),
    "sample-cases --out twice": (
        lambda d: ["sample-cases", "--checkpoint", d / "ck.pt", "--cases", "pc_2_none", "p_2_none",
                   "--out", d / "a.pt", d / "a.pt", "--meta", d / "a.json", d / "b.json"],
        ["a.pt", "name one file twice"]),
    "fid --out twice": (
        lambda d: ["fid", "--samples", d / "x.pt", d / "y.pt", "--meta", d / "x.json", d / "y.json",
                   "--reference", d / "r.pt", "--extractor", d / "e.pt", "--train", d / "tr.pt",
                   "--test", d / "te.pt", "--out", d / "o.json", d / "o.json"],
        ["o.json", "name one file twice"]),
    "--out an existing directory": (
        lambda d: _sample_args(d / "ck.pt", d / "adir", d / "s.json"), ["--out", "adir",
                                                                       "existing directory"]),
    "--out under a file": (
        lambda d: _sample_args(d / "ck.pt", d / "afile/s.pt", d / "s.json"), ["afile/s.pt",
                                                                             "is a file, not a directory"]),
    "train --out-dir a file": (
        lambda d: ["train", "--data", d / "in.pt", "--sde", "vp", "--out-dir", d / "afile",
                   "--log-csv", d / "log.csv", "--config-out", d / "c.json"],
        ["--out-dir", "afile", "not a directory"]),
}


@pytest.mark.parametrize("case", sorted(OUTPUT_CASES))
def test_outputs_that_would_overwrite_or_cannot_be_written_are_refused(tmp_path, capsys, case):
    """Before any work: exit 2, one error line naming the path; inputs unchanged, no output."""
    make, words = OUTPUT_CASES[case]
    (tmp_path / "in.pt").write_bytes(b"input bytes")
    (tmp_path / "afile").write_text("a file")
    (tmp_path / "adir").mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    assert run(*make(tmp_path)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    for w in words:
        assert w in err[0], (w, err[0])
    assert (tmp_path / "in.pt").read_bytes() == b"input bytes"
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not list((tmp_path / "adir").iterdir())


def test_a_full_disk_is_one_error_line_naming_the_output(tmp_path, capsys, monkeypatch):
    """torch.save failing part-way (ENOSPC, or torch's own 'file write failed'): one line naming
    the output, never the temporary name; no partial file left."""
    import errno

    import scoresde.stages.common

    params = tmp_path / "params.yaml"
    params.write_text(TINY)
    args = ["prepare-data", "--params", params, "--train-out", tmp_path / "out/train.pt",
            "--test-out", tmp_path / "out/test.pt", "--reference-out", tmp_path / "out/ref.pt"]
    for failure in (OSError(errno.ENOSPC, "No space left on device"),
                    RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")):
        def full(obj, f, failure=failure):
            with open(f, "wb") as handle:
                handle.write(b"partial")
            raise failure

        monkeypatch.setattr(scoresde.stages.common.torch, "save", full)
        assert run(*args) == 2
        line = _error(capsys)
        assert "cannot write" in line and "train.pt" in line and ".tmp-" not in line, line
        assert ("No space left on device" if isinstance(failure, OSError) else "free space") in line, line
        assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]


def test_failed_write_names_a_directory_in_the_way(tmp_path):
    from scoresde.stages.common import write_json

    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OSError, match=r"cannot write .*adir: it is an existing directory"):
        write_json(tmp_path / "adir", {})
    with pytest.raises(OSError, match=r"afile is a file, not a directory"):
        write_json(tmp_path / "afile/m.json", {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir", "afile"]


def test_train_writes_no_header_only_log(work, tmp_path, capsys, monkeypatch):
    """A training run that fails before its first snapshot leaves no log.csv behind."""
    import scoresde.stages.train.loop as loop

    def fail(*args, **kwargs):
        raise FloatingPointError("training loss became nan at step 1")

    monkeypatch.setattr(loop, "train_step", fail)
    out = tmp_path / "out"
    code = run("train", "--params", work / "params.yaml", "--data", work / "data/train.pt", "--sde",
               "vp", "--out-dir", out / "ck", "--log-csv", out / "log.csv", "--config-out",
               out / "config.json", "--threads", "1")
    assert code == 2 and "nan" in _error(capsys)
    assert not (out / "log.csv").exists()


# --------------------------------------------------------------------------- sample files

def test_sample_cases_writes_nothing_until_every_case_is_drawn(work, tmp_path, capsys, monkeypatch):
    """The second trajectory fails: the first's files are not written either."""
    import scoresde.stages.sample as sample

    real, done = sample.draw_trajectory, []

    def failing(*args, **kwargs):
        if done:
            raise FloatingPointError("pc_sample produced non-finite values")
        done.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(sample, "draw_trajectory", failing)
    out = tmp_path / "out"
    code = run("sample-cases", "--params", work / "params.yaml", "--checkpoint",
               work / "ck/vp/step_2.pt", "--cases", "p_2_none", "pc_2_none", "--out",
               out / "a.pt", out / "b.pt", "--meta", out / "a.json", out / "b.json", "--device", "cpu")
    assert_refused(code, capsys, ["non-finite"], out)
    assert done == [1]


@pytest.fixture(scope="module")
def two_cases(work, tmp_path_factory):
    """Two sample cases of the VP model (pc and p, 2 steps, no denoising)."""
    d = tmp_path_factory.mktemp("cases")
    assert run("sample-cases", "--params", work / "params.yaml", "--checkpoint",
               work / "ck/vp/step_2.pt", "--cases", "pc_2_none", "p_2_none", "--out", d / "pc.pt",
               d / "p.pt", "--meta", d / "pc.json", d / "p.json", "--device", "cpu") == 0
    return d


def _fid_args(work, samples, meta, out):
    return ["fid", "--params", work / "params.yaml", "--samples", samples, "--meta", meta,
            "--reference", work / "data/reference.pt", "--extractor", work / "ck/fid_features.pt",
            "--train", work / "data/train.pt", "--test", work / "data/test.pt",
            "--out", out, "--device", "cpu"]


def test_fid_refuses_a_sidecar_of_another_case(work, two_cases, tmp_path, capsys):
    out = tmp_path / "out"
    code = run(*_fid_args(work, two_cases / "pc.pt", two_cases / "p.json", out / "fid.json"))
    assert_refused(code, capsys, ["p.json", "pc.pt", "another case", "sampler 'pc' vs 'p'"], out)


def test_fid_refuses_a_sample_file_without_images(work, two_cases, tmp_path, capsys):
    blob = torch.load(two_cases / "pc.pt", weights_only=True)
    empty = tmp_path / "empty.pt"
    torch.save({**blob, "images": blob["images"][:0]}, empty)
    out = tmp_path / "out"
    code = run(*_fid_args(work, empty, two_cases / "pc.json", out / "fid.json"))
    assert_refused(code, capsys, ["empty.pt", "no images", "(0, 1, 8, 8)"], out)


# --------------------------------------------------------------------------- parameter files

PARAM_FILE_CASES = [
    ("train: {n_iters: 3}\ntrain: {lr: 0.1}\n", ["bad.yaml", "'train' is given twice",
                                                 "lines 1 and 2"]),
    ("sample:\n  snr: {vp: 0.1}\n  snr: {ve: 0.2}\n", ["'snr' is given twice"]),
    (b"\x80\x03binary\x00\xff", ["bad.yaml", "not a text (YAML) file"]),
    ("sde: {names: [vp]}\ncontrollable: {sdes: [ve]}\n", ["controllable.sdes", "sde.names",
                                                          "skipped"]),
]


@pytest.mark.parametrize("text, words", PARAM_FILE_CASES)
def test_parameter_files_with_duplicates_or_bytes_are_refused(tmp_path, capsys, text, words):
    path = tmp_path / "bad.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    assert_refused(run("validate-config", path), capsys, words, tmp_path / "out")


def test_params_json_with_a_key_twice_is_refused():
    with pytest.raises(cfg.ConfigError, match=r"--params-json: the key 'lr' is given twice"):
        cfg.resolve(params_json='{"train": {"lr": 0.1, "lr": 0.2}}')
