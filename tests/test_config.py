"""Parameter schema and loader: defaults, descriptions, and one clear message per bad value."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from scoresde.stages import cases
from scoresde.stages import config as cfg

ROOT = Path(__file__).resolve().parents[1]


def _walk(schema: dict, defs: dict, path: str = ""):
    """Yield (dotted key, property schema with $ref resolved) for every key of the schema."""
    for key, sub in schema.get("properties", {}).items():
        full = f"{path}.{key}" if path else key
        resolved = {**defs.get(sub.get("$ref", "").split("/")[-1], {}), **sub}
        yield full, resolved
        yield from _walk(resolved, defs, full)


def test_params_yaml_equals_schema_defaults():
    shipped = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert cfg.validate(shipped) == shipped
    assert cfg.defaults() == shipped


def test_every_key_has_a_description_and_objects_are_closed():
    schema = cfg.load_schema()
    assert schema["additionalProperties"] is False
    keys = list(_walk(schema, schema["$defs"]))
    assert len(keys) > 80
    for key, sub in keys:
        assert sub.get("description"), f"{key} has no description"
        if sub.get("type") == "object":
            assert sub.get("additionalProperties") is False, key
    top = [k for k, _ in keys if "." not in k]
    assert top == list(cfg.GROUPS)


def test_user_facing_names_exist():
    d = cfg.defaults()
    assert isinstance(d["sample"]["steps"], list) and len(d["sample"]["steps"]) >= 2  # issue 13: [10, 20]
    for key in ("n_iters", "snapshot_every", "seed"):
        assert key in d["train"]
    assert "seed" in d["sample"]


@pytest.mark.parametrize(
    "params, key, words",
    [
        ({"train": {"n_iter": 5}}, "train.n_iter", "unknown key"),
        ({"trian": {}}, "trian", "unknown key"),
        ({"train": {"n_iters": "many"}}, "train.n_iters", "not of type 'integer'"),
        ({"train": {"n_iters": 0}}, "train.n_iters", "minimum"),
        ({"train": {"lr": -1.0}}, "train.lr", "less than or equal"),
        ({"train": {"ema_decay": {"vp": 1.5}}}, "train.ema_decay.vp", "maximum"),
        ({"sample": {"steps": []}}, "sample.steps", "non-empty"),
        ({"sample": {"steps": [10, 0]}}, "sample.steps.1", "minimum"),
        ({"sample": {"samplers": ["pc", "dpm"]}}, "sample.samplers.1", "is not one of"),
        ({"sde": {"names": ["ve", "ve"]}}, "sde.names", "non-unique"),
        ({"sample": {"snr": {"ve": -0.1}}}, "sample.snr.ve", "minimum"),
        ({"data": {"dataset": "imagenet"}}, "data.dataset", "is not one of"),
        ({"train": {"eps": "1e-5"}}, "train.eps", "write 1.0e-5"),
        ({"sde": {"ve": {"sigma_min": 60.0}}}, "sde.ve.sigma_min", "smaller than"),
        ({"eval": {"likelihood": {"n_probes": 0}}}, "eval.likelihood.n_probes", "minimum"),
        ({"train": {"resources": {"gpus": 1}}}, "train.resources.gpus", "unknown key"),
        ({"train": {"weighting": "snr"}}, "train.weighting", "is not one of"),
        ({"train": {"parameterization": "v"}}, "train.parameterization", "is not one of"),
        ({"train": {"sigma_data": 0.0}}, "train.sigma_data", "less than or equal"),
    ],
)
def test_bad_values_name_the_key(params, key, words):
    with pytest.raises(cfg.ConfigError) as info:
        cfg.validate(params)
    message = str(info.value)
    assert "\n" not in message
    assert re.search(rf"(^|\W){re.escape(key)}(\W|$)", message), message
    assert words in message, message


def test_snakemake_validate_uses_the_same_schema():
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    good = {}
    validate(good, str(cfg.schema_path()))
    assert good["train"]["n_iters"] == cfg.defaults()["train"]["n_iters"]
    with pytest.raises(WorkflowError):
        validate({"train": {"n_iter": 3}}, str(cfg.schema_path()))


@pytest.mark.parametrize("name", [".test/params.yaml", "config/cifar10.yaml",
                                  "config/fashion_mnist.yaml"])
def test_shipped_configs_are_valid(name):
    merged = cfg.merge(cfg.load_file(ROOT / "params.yaml"), cfg.load_file(ROOT / name))
    resolved = cfg.validate(merged)
    assert cfg.resolve(str(ROOT / name)) == resolved  # partial files fill in the same defaults


def test_cifar10_config_has_paper_settings():
    c = cfg.resolve(str(ROOT / "config/cifar10.yaml"))
    assert c["model"]["channels"] == 128 and c["model"]["channel_mult"] == [1, 2, 2, 2]
    assert c["model"]["num_res_blocks"] == 4 and c["model"]["attn_resolutions"] == [16]
    assert c["model"]["dropout"] == 0.1 and c["sde"]["N"] == 1000
    assert c["train"]["batch_size"] == 128 and c["train"]["n_iters"] == 1_300_000
    assert c["train"]["snapshot_every"] == 50_000 and c["sample"]["n_samples"] == 50_000
    assert c["eval"]["inception_weights"] and c["data"]["root"]


def test_resolve_merges_file_json_and_sets(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("train:\n  n_iters: 50\n  lr: 1.0e-3\n")
    c = cfg.resolve(str(path), '{"train": {"n_iters": 60}}', ["train.seed=7", "sample.steps=[5, 6]"])
    assert (c["train"]["n_iters"], c["train"]["lr"], c["train"]["seed"]) == (60, 1e-3, 7)
    assert c["sample"]["steps"] == [5, 6]
    assert c["train"]["batch_size"] == cfg.defaults()["train"]["batch_size"]


@pytest.mark.parametrize(
    "content, words",
    [(None, "does not exist"), ("train: [1, 2", "cannot be read as YAML"), ("- 1\n", "mapping")],
)
def test_bad_parameter_files(tmp_path, content, words):
    path = tmp_path / "p.yaml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(cfg.ConfigError, match=words):
        cfg.resolve(str(path))


def test_bad_set_and_json():
    with pytest.raises(cfg.ConfigError, match="KEY=VALUE"):
        cfg.resolve(sets=["train.n_iters"])
    with pytest.raises(cfg.ConfigError, match="not valid JSON"):
        cfg.resolve(params_json="{nope")


def test_narrow_keeps_one_sde_and_dotted_keys():
    d = cfg.defaults()
    n = cfg.narrow(d, ["data", "sde", "train", "eval.fid"], sde="vp")
    assert n["data"]["centered"] == {"vp": True}
    assert n["sde"]["names"] == ["vp"] and "ve" not in n["sde"] and "vp" in n["sde"]
    assert n["train"]["ema_decay"] == {"vp": d["train"]["ema_decay"]["vp"]}
    assert n["eval"] == {"fid": d["eval"]["fid"]}
    assert cfg.validate(n)["data"]["centered"]["vp"] is True  # a narrowed config is valid


def test_snapshot_steps():
    assert cfg.snapshot_steps(100, 30) == [30, 60, 90, 100]
    assert cfg.snapshot_steps(90, 30) == [30, 60, 90]
    assert cfg.snapshot_steps(10, 50) == [10]


def test_case_names_and_exact_wildcards():
    names = cases.sweep(["pc", "ode-rk45", "ode-heun"], [10, 100], ["tweedie", "none"])
    assert names[:2] == ["pc_10_tweedie", "pc_10_none"]
    assert "ode-rk45_adaptive_tweedie" in names and len(names) == 2 * 2 + 2 + 2 * 2
    w = cases.wildcard_constraints()
    pattern = re.compile(rf"(?P<sampler>{w['sampler']})_(?P<steps>{w['steps']})_"
                         rf"(?P<denoise>{w['denoise']})")
    for name in names + ["c_5_none", "em_1_tweedie", "ancestral_7_none", "ode-euler_3_none"]:
        assert pattern.fullmatch(name), name
    for bad in ["ode-rk45_10_none", "pc_adaptive_none", "pc_0_none", "pc_10_yes", "dpm_10_none",
                "pc_010_none"]:
        assert not pattern.fullmatch(bad), bad


@pytest.mark.parametrize(
    "sampler, steps, words",
    [("dpm", 10, "unknown sampler"), ("ode-rk45", 10, "adaptive"), ("pc", "adaptive", "positive"),
     ("p", 0, "positive")],
)
def test_bad_cases(sampler, steps, words):
    with pytest.raises(ValueError, match=words):
        cases.parse_steps(sampler, steps)
    with pytest.raises(ValueError, match="unknown denoise"):
        cases.parse_denoise("yes")


def test_job_params_leave_out_runtime_and_sweep_keys():
    d = cfg.defaults()
    train = cfg.job_params(d, "train", sde="ve")
    assert set(train) == {"data", "model", "sde", "train"} and train["data"] == {"centered": {"ve": False}}
    assert "resources" not in train["train"] and "device" not in train["train"]
    sample = cfg.job_params(d, "sample", sde="vp")
    assert not {"samplers", "steps", "denoise", "resources", "device"} & set(sample["sample"])
    assert sample["sample"]["snr"] == {"vp": d["sample"]["snr"]["vp"]}
    assert cfg.job_params(d, "report") == d
    for stage in cfg.STAGE_KEYS:  # every job's parameters are themselves a valid config
        cfg.validate(cfg.job_params(d, stage))


@pytest.mark.parametrize("configfile", ["params.yaml", ".test/params.yaml",
                                        "config/fashion_mnist_cpu.yaml"])
def test_every_jobs_own_parameters_validate(configfile):
    """What a rule passes a job (``job_params``: one SDE in sde.names, no controllable.sdes) is
    valid on its own, for every stage and SDE: the cross-key checks apply to given keys only."""
    root = Path(__file__).parents[1]
    full = yaml.safe_load((root / "params.yaml").read_text())
    if configfile != "params.yaml":
        full = cfg.merge(full, yaml.safe_load((root / configfile).read_text()))
    full = cfg.validate(full)
    for stage in cfg.STAGE_KEYS:  # the report is one job for the whole run
        for sde in [None] if stage == "report" else full["sde"]["names"]:
            cfg.validate(cfg.job_params(full, stage, sde), f"{stage} job for {sde}")
