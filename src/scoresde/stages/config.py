"""Pipeline parameters: load `params.yaml`, merge overrides, validate against the JSON schema.

`workflow/schemas/params.schema.yaml` is the single definition of every key (type, range,
default, description); the Snakefile validates Snakemake's `config` with it and every CLI
stage validates its parameters with :func:`resolve`. A wrong key or value raises
:class:`ConfigError` with one line naming the key, e.g.
``params: train.n_iters: -5 is less than the minimum of 1``.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path

import yaml

SCHEMA_RELPATH = Path("workflow/schemas/params.schema.yaml")
SDE_NAMES = ("ve", "vp", "subvp")
GROUPS = ("data", "model", "sde", "train", "select", "sample", "eval", "report", "controllable")


class ConfigError(ValueError):
    """A parameter file or value is invalid; the message names the key and the fix."""


def schema_path() -> Path:
    """The schema: $SCORESDE_SCHEMA, else the repository's (editable install), else ./workflow."""
    env = os.environ.get("SCORESDE_SCHEMA")
    candidates = [Path(env)] if env else []
    candidates += [Path(__file__).resolve().parents[3] / SCHEMA_RELPATH, Path.cwd() / SCHEMA_RELPATH]
    for path in candidates:
        if path.is_file():
            return path
    raise ConfigError(f"cannot find the parameter schema {SCHEMA_RELPATH}; run from the "
                      "repository root or set SCORESDE_SCHEMA to its path")


@lru_cache(maxsize=4)
def _load_schema(path: str) -> dict:
    return yaml.safe_load(Path(path).read_text())


def load_schema() -> dict:
    """The parsed parameter schema (a fresh copy)."""
    return copy.deepcopy(_load_schema(str(schema_path())))


def _validator(schema: dict):
    """A Draft 2020-12 validator that fills in defaults (deep copies) while it descends."""
    from jsonschema import Draft202012Validator, validators

    check_properties = Draft202012Validator.VALIDATORS["properties"]

    def properties(validator, props, instance, schema):
        if isinstance(instance, dict):
            for key, sub in props.items():
                if "default" in sub and key not in instance:
                    instance[key] = copy.deepcopy(sub["default"])
        yield from check_properties(validator, props, instance, schema)

    return validators.extend(Draft202012Validator, {"properties": properties})(schema)


def _key(path: Iterable) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def explain(error) -> str:
    """One line naming the key of a jsonschema ValidationError and what is wrong with it."""
    where = _key(error.absolute_path)
    if error.validator == "additionalProperties":
        known = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(known))
        prefix = f"{where}." if error.absolute_path else ""
        under = f"under {where}" if error.absolute_path else "at the top level"
        return (f"{prefix}{extra[0]}: unknown key (valid keys {under}: {', '.join(known)})")
    message = error.message
    if error.validator == "type" and isinstance(error.instance, str):
        if re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+", error.instance.strip()):
            text = error.instance.strip()
            message += (f" (YAML reads numbers like {text} as text; write {yaml_float(text)}: "
                        "a point in the mantissa and a signed exponent)")
        elif re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)", error.instance.strip()):
            wanted = error.validator_value
            wanted = [wanted] if isinstance(wanted, str) else list(wanted)
            whole = re.fullmatch(r"[+-]?\d+", error.instance.strip())
            if "number" in wanted or ("integer" in wanted and whole):  # else the quotes are not all
                message += " (a number given as text; drop the quotes)"
    return f"{where}: {message}"


def yaml_float(text: str) -> str:
    """The YAML 1.1 spelling of a number in exponent form: ``1e-5`` -> ``1.0e-5``,
    ``1e30`` -> ``1.0e+30`` (PyYAML reads a float only with a point and a signed exponent)."""
    mantissa, exponent = re.split("[eE]", text.strip())
    if "." not in mantissa:
        mantissa += ".0"
    if exponent[0] not in "+-":
        exponent = "+" + exponent
    return f"{mantissa}e{exponent}"


def _check_finite(node, path: tuple = ()) -> None:
    """Every number in the parameters is finite: NaN and +-Inf (YAML ``.nan``, ``.inf``; JSON
    ``NaN``, ``Infinity``) pass JSON Schema's ``minimum`` / ``maximum``, so they are refused
    here, for every key at once."""
    if isinstance(node, dict):
        for key, value in node.items():
            _check_finite(value, (*path, key))
    elif isinstance(node, list | tuple):
        for i, value in enumerate(node):
            _check_finite(value, (*path, i))
    elif isinstance(node, float) and not math.isfinite(node):
        raise ConfigError(f"{_key(path)}: {node} is not a finite number; give a finite value "
                          "(see the key's range in workflow/schemas/params.schema.yaml)")


def _check_samplers(cfg: dict) -> None:
    """Sampler names and extra cases through the sweep's own parser (``stages.cases``), so a
    name the samplers do not know fails here, naming the key, rather than when the sweep is
    built."""
    from scoresde.stages import cases

    named = [("select.sampler", cfg["select"]["sampler"])]
    named += [(f"sample.samplers[{i}]", s) for i, s in enumerate(cfg["sample"]["samplers"])]
    for key, sampler in named:
        try:
            cases.check_sampler(sampler)
        except ValueError as err:
            raise ConfigError(f"{key}: {err}") from None
    listed = [("sample.extra_cases", cfg["sample"]["extra_cases"]),
              ("controllable.conditional.samplers", cfg["controllable"]["conditional"]["samplers"])]
    for key, names in listed:
        for i, case in enumerate(names):
            sampler, _, steps = str(case).rpartition("_")
            try:
                cases.check_sampler(sampler)
                cases.parse_steps(sampler, steps)
            except ValueError as err:
                raise ConfigError(f"{key}[{i}]: {case!r}: {err}") from None


def _semantic_checks(cfg: dict, given: dict) -> None:
    """Cross-key rules the schema cannot express. ``controllable.sdes`` is checked against
    ``sde.names`` only where it was given: a job's own parameters (``job_params``) hold one SDE
    in ``sde.names`` and no ``controllable.sdes``, whose default must not be held against them."""
    sde = cfg["sde"]
    ctrl = cfg["controllable"]
    missing = [s for s in ctrl["sdes"] or () if s not in sde["names"]]
    if ctrl["enabled"] and missing and "sdes" in (given.get("controllable") or {}):
        raise ConfigError(f"controllable.sdes {ctrl['sdes']} names {', '.join(missing)}, not among "
                          f"sde.names {sde['names']}, so it would be skipped; add it to sde.names, "
                          "set controllable.sdes to null (all of sde.names) or "
                          "controllable.enabled to false")
    if sde["ve"]["sigma_min"] >= sde["ve"]["sigma_max"]:
        raise ConfigError("sde.ve.sigma_min must be smaller than sde.ve.sigma_max")
    for name in ("vp", "subvp"):
        if sde[name]["beta_min"] >= sde[name]["beta_max"]:
            raise ConfigError(f"sde.{name}.beta_min must be smaller than sde.{name}.beta_max")
    train = cfg["train"]
    if train["batch_size"] % train["processes"]:
        raise ConfigError(f"train.batch_size {train['batch_size']} must be a multiple of "
                          f"train.processes {train['processes']} (each process takes an "
                          "equal share of the global batch)")
    if train["resources"]["gpu"] > train["processes"]:
        raise ConfigError(f"train.resources.gpu asks for {train['resources']['gpu']} GPUs but "
                          f"train.processes is {train['processes']}: training runs one process "
                          f"per GPU; set train.processes: {train['resources']['gpu']}")


def validate(params: dict | None, source: str = "params") -> dict:
    """Return a deep copy of `params` with defaults filled in; ConfigError on any problem."""
    from jsonschema.exceptions import best_match

    cfg = copy.deepcopy(params) if params is not None else {}
    if not isinstance(cfg, dict):
        raise ConfigError(f"{source}: the parameters must be a mapping of groups "
                          f"({', '.join(GROUPS)}), got {type(cfg).__name__}")
    try:
        _check_finite(cfg)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None
    validator = _validator(load_schema())
    error = best_match(validator.iter_errors(cfg))
    if error is not None:
        raise ConfigError(f"{source}: {explain(error)}")
    try:
        _check_samplers(cfg)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None
    _semantic_checks(cfg, params or {})
    return cfg


def coerce(cfg: dict, given: dict | None = None) -> dict:
    """A copy of `cfg` with text turned into the number, bool or null the schema asks for, at the
    keys present in `given` (None: everywhere). Snakemake's ``--config 'train={"snapshot_every":
    10}'`` reads nested values as text ('10'); this types them as a YAML file would. Text that
    does not parse, or where the schema accepts text, is left for validation to name."""
    schema = load_schema()

    def typed(text: str, types: list):
        word = text.strip()
        lower = word.lower()
        if "boolean" in types and lower in ("true", "false"):
            return lower == "true"
        if "null" in types and lower in ("null", "~", "none", ""):
            return None
        if "integer" in types and re.fullmatch(r"[+-]?\d+", word):
            return int(word)
        if "number" in types:
            try:
                number = float(word)
            except ValueError:
                return text
            return int(word) if re.fullmatch(r"[+-]?\d+", word) else number
        return text

    def walk(node, sub, scope):
        """``scope``: True = type the text here and below; a dict = only under its keys."""
        types = sub.get("type", [])
        types = [types] if isinstance(types, str) else list(types)
        if isinstance(node, str):
            fits = scope is True and types and "string" not in types and "enum" not in sub
            return typed(node, types) if fits else node
        if isinstance(node, dict):
            props, inner = sub.get("properties", {}), scope if isinstance(scope, dict) else {}
            return {k: walk(v, props.get(k, {}), True if scope is True else
                            inner[k] if isinstance(inner.get(k), dict) else k in inner)
                    for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, sub.get("items", {}), scope is True) for v in node]
        return node

    return walk(copy.deepcopy(cfg), schema, True if given is None else given)


def defaults() -> dict:
    """Every parameter at its schema default (equal to the shipped params.yaml)."""
    return validate({})


class DuplicateKey(yaml.YAMLError):
    """A mapping of a YAML file gives one key twice."""


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader refusing a key given twice in one mapping (which it would otherwise
    resolve silently in favour of the last)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise DuplicateKey(f"the key {key!r} is given twice (lines {seen[key] + 1} and "
                                   f"{key_node.start_mark.line + 1}); keep one of them")
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def _unique_pairs(pairs: list) -> dict:
    keys = [k for k, _ in pairs]
    twice = [k for k in keys if keys.count(k) > 1]
    if twice:
        raise DuplicateKey(f"the key {twice[0]!r} is given twice; keep one of them")
    return dict(pairs)


def load_file(path: str | os.PathLike) -> dict:
    """Parse a YAML (or JSON) parameter file; ConfigError when missing, not text, malformed or
    with a key given twice."""
    path = Path(path)
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=UniqueKeyLoader)  # noqa: S506
    except FileNotFoundError:
        raise ConfigError(f"parameter file {path} does not exist; pass an existing "
                          "--params file (e.g. params.yaml)") from None
    except IsADirectoryError:
        raise ConfigError(f"parameter file {path} is a directory; pass a YAML file") from None
    except DuplicateKey as err:
        raise ConfigError(f"parameter file {path}: {err}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"parameter file {path} is not a text (YAML) file: byte "
                          f"{err.object[err.start]:#04x} at offset {err.start} is not UTF-8; "
                          "pass a YAML parameter file such as params.yaml") from None
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"parameter file {path} cannot be read as YAML: "
                          f"{' '.join(str(err).split())}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"parameter file {path} must hold a mapping of groups "
                          f"({', '.join(GROUPS)}), not a {type(data).__name__}")
    return data


def merge(base: dict, override: dict) -> dict:
    """Recursive dict merge (as Snakemake merges config files); lists are replaced."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def set_dotted(cfg: dict, assignment: str) -> dict:
    """Apply one ``group.key=value`` override (value parsed as YAML) to a copy of `cfg`."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set {assignment!r}: expected KEY=VALUE, e.g. train.n_iters=100")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    out = copy.deepcopy(cfg)
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: {part} is not a group of parameters")
    node[parts[-1]] = value
    return out


def resolve(params_file: str | None = None, params_json: str | None = None,
            sets: Sequence[str] = (), overrides: dict | None = None) -> dict:
    """Defaults <- `params_file` <- `params_json` <- `overrides` <- ``--set``, validated."""
    cfg: dict = {}
    source = "params"
    if params_file:
        cfg = merge(cfg, load_file(params_file))
        source = f"params ({params_file})"
    if params_json:
        try:
            inline = json.loads(params_json, object_pairs_hook=_unique_pairs)
        except DuplicateKey as err:
            raise ConfigError(f"--params-json: {err}") from None
        except ValueError as err:
            raise ConfigError(f"--params-json is not valid JSON: {err}") from None
        if not isinstance(inline, dict):
            raise ConfigError("--params-json must be a JSON object of parameter groups")
        cfg = merge(cfg, inline)
    cfg = merge(cfg, overrides or {})
    for assignment in sets:
        cfg = set_dotted(cfg, assignment)
    return validate(cfg, source)


def narrow(cfg: dict, keys: Sequence[str], sde: str | None = None) -> dict:
    """The parameters under `keys` (groups or dotted paths such as ``eval.fid``) of `cfg`.

    With `sde`, entries for the other SDEs are dropped everywhere and ``sde.names`` becomes
    ``[sde]``. This is what a job for one (dataset, sde) depends on, so Snakemake reruns it
    only when a parameter it uses changes.
    """
    others = set(SDE_NAMES) - {sde} if sde else set()

    def strip(node):
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k not in others}
        return copy.deepcopy(node)

    out: dict = {}
    for key in keys:
        *parents, last = key.split(".")
        src, dst = cfg, out
        for part in parents:
            src, dst = src[part], dst.setdefault(part, {})
        dst[last] = strip(src[last])
    if sde and "names" in out.get("sde", {}):
        out["sde"]["names"] = [sde]
    return out


# What each stage's jobs compute their outputs from (groups or dotted keys).
STAGE_KEYS = {
    "prepare-data": ("data",),
    "train-features": ("eval.features",),
    "train": ("data.centered", "model", "sde", "train"),
    "select-checkpoint": ("select",),
    "sample": ("sample",),
    "fid": ("eval.fid", "eval.manifold", "eval.inception_weights"),
    "check-metrics": ("eval.fid", "eval.manifold", "eval.checks", "eval.inception_weights"),
    "likelihood": ("eval.likelihood",),
    "report": GROUPS,
    "train-conditional": ("data.centered", "model", "sde", "train", "controllable.free"),
    "train-classifier": ("data.centered", "model.fourier_scale", "sde", "train.dequantize",
                         "controllable.classifier"),
    "conditional-sample": ("controllable.conditional", "sample.sigma_min", "sample.sde_options",
                           "sample.snr"),
    "inpaint": ("controllable.inpaint", "sample.snr"),
    "colorize": ("controllable.inpaint", "sample.snr"),  # inpainting's methods, steps, options
    "inverse": ("controllable.inverse",),
}
# How a job runs rather than what it computes, and which cases exist rather than how one is
# drawn: left out of a job's parameters, so changing them reruns no finished job.
RUNTIME_KEYS = ("resources", "device")
SWEEP_KEYS = ("sample.samplers", "sample.steps", "sample.denoise", "sample.extra_cases",
              "sample.jobs")


def job_params(cfg: dict, stage: str, sde: str | None = None) -> dict:
    """The parameters one job of `stage` (for one SDE, if given) computes its outputs from.

    The Snakemake rules pass exactly this (so a job reruns only when one of them changes) and
    the stages write it beside their outputs. The report gets everything.
    """
    out = narrow(cfg, STAGE_KEYS[stage], sde)
    if stage == "report":
        return out
    for group in out.values():
        if isinstance(group, dict):
            for key in RUNTIME_KEYS:
                group.pop(key, None)
    for dotted in SWEEP_KEYS:
        group, key = dotted.split(".")
        out.get(group, {}).pop(key, None)
    return out


def free_iters(cfg: dict) -> int:
    """Training steps of the classifier-free guidance network (controllable.free.n_iters, or
    train.n_iters when null)."""
    return cfg["controllable"]["free"]["n_iters"] or cfg["train"]["n_iters"]


def to_json(cfg: dict) -> str:
    """Compact, key-sorted JSON (stable text for Snakemake's params change detection)."""
    return json.dumps(cfg, sort_keys=True, separators=(",", ":"))


def snapshot_steps(n_iters: int, every: int) -> list[int]:
    """The training steps at which `train` writes `step_{k}.pt`: every `every`, and the last."""
    steps = list(range(every, n_iters + 1, every))
    if not steps or steps[-1] != n_iters:
        steps.append(n_iters)
    return steps
