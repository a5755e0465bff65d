"""DVC over the Snakemake pipeline: dvc.yaml stays in step with the Snakemake DAG (outputs,
cross-stage inputs, params, code), the report writes DVC's files, and (slow) experiments,
a no-op `dvc repro` and a push / pull round trip on the smoke configuration."""

from __future__ import annotations

import filecmp
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest
import yaml

from scoresde.stages import config as cfg

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
       "DVC_NO_ANALYTICS": "1", "GIT_TERMINAL_PROMPT": "0"}  # fmt: skip
SDE_NAMES = set(cfg.SDE_NAMES)
SHARED_DEPS = ("src/scoresde/cli", "src/scoresde/stages/common.py",
               "src/scoresde/stages/config.py", "src/scoresde/stages/exits.py",
               "workflow/rules/common.smk")  # fmt: skip
COPY = ("Snakefile", "params.yaml", "workflow", "profiles", "dvc.yaml", ".dvc", ".dvcignore")


def run(*args: str, cwd: Path, timeout: float = 900, check: bool = True) -> str:
    proc = subprocess.run(args, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    if check:
        assert proc.returncode == 0, f"{' '.join(args)} failed:\n{out[-4000:]}"
    return out


def dvc(*args: str, cwd: Path, **kw) -> str:
    return run(sys.executable, "-m", "dvc", *args, cwd=cwd, **kw)


# --------------------------------------------------------------------------- dvc.yaml


def dvc_stages(root: Path = ROOT) -> dict[str, dict]:
    """Stages as DVC resolves them: rules (--allowed-rules), target, deps, params, outs."""
    from dvc.repo import Repo

    stages = {}
    with Repo(str(root)) as repo:
        for st in repo.index.stages:
            argv = shlex.split(st.cmd)
            i = argv.index("--allowed-rules")
            allowed = []
            for token in argv[i + 1:]:
                if token.startswith("-"):
                    break
                allowed.append(token)
            params = [(d.def_path, d.params) for d in st.deps if type(d).__name__ == "ParamsDependency"]
            stages[st.name] = {
                "argv": argv, "allowed": allowed, "target": argv[argv.index("--") + 1:],
                "deps": [d.def_path for d in st.deps if type(d).__name__ != "ParamsDependency"],
                "params": params, "outs": {o.def_path: o.use_cache for o in st.outs},
                "persist": [o.def_path for o in st.outs if o.persist],
            }  # fmt: skip
    return stages


def covers(parent: str, path: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


# --------------------------------------------------------------------------- Snakemake DAG


def copy_workflow(dest: Path) -> Path:
    for name in COPY:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("tmp", "cache"))
        elif src.exists():
            shutil.copy2(src, dest / name)
    return dest


def dry_run_jobs(workdir: Path, targets: Iterable[str]) -> list[dict]:
    """Every job of ``snakemake -s workflow/dvc.smk -n -p --forceall <targets>``, parsed."""
    out = run(sys.executable, "-m", "snakemake", "-s", "workflow/dvc.smk", "-n", "-p", "--forceall",
              "--cores", "1", *targets, cwd=workdir, timeout=300)  # fmt: skip
    jobs: list[dict] = []
    for line in out.splitlines():
        if m := re.match(r"^(?:local)?rule (\w+):$", line):
            jobs.append({"rule": m[1], "input": [], "output": [], "log": [], "benchmark": [],
                         "shell": ""})  # fmt: skip
        elif jobs and (m := re.match(r"^    (input|output|log|benchmark): (.*)$", line)):
            jobs[-1][m[1]] = [p.strip() for p in m[2].split(",") if p.strip()]
        elif jobs and line.startswith("Shell command: "):
            jobs[-1]["shell"] = line.removeprefix("Shell command: ")
    assert jobs, out[-3000:]
    return jobs


def upstream(jobs: list[dict], start: list[dict], rules: set[str]) -> list[dict]:
    """Jobs of `rules` that `start` needs, following inputs through `rules` only."""
    producer = {f: j for j in jobs for f in j["output"]}
    seen, todo = [], list(start)
    while todo:
        job = todo.pop()
        if any(job is s for s in seen):
            continue
        seen.append(job)
        todo += [producer[f] for f in job["input"] if f in producer and producer[f]["rule"] in rules]
    return seen


def _leaves(node, prefix: str = "") -> set[str]:
    if isinstance(node, dict) and node:
        return set().union(*(_leaves(v, f"{prefix}{k}.") for k, v in node.items()))
    return {prefix.rstrip(".")}


def generic(keys: Iterable[str]) -> set[str]:
    """Keys with SDE names as ``*``: a job for one SDE reads that SDE's entry of each group."""
    return {".".join("*" if p in SDE_NAMES else p for p in k.split(".")) for k in keys}


def rule_sources() -> dict[str, tuple[str, str]]:
    """rule name -> (its .smk file, the text of its block)."""
    out = {}
    for path in sorted((ROOT / "workflow" / "rules").glob("*.smk")):
        text = path.read_text()
        starts = [(m.start(), m[1]) for m in re.finditer(r"^\s*rule (\w+):", text, re.M)] + [(len(text), "")]
        for (a, name), (b, _) in zip(starts, starts[1:], strict=False):
            out[name] = (str(path.relative_to(ROOT)), text[a:b])
    return out


def job_params(job: dict, source: str) -> set[str]:
    """Parameter keys a job reads: its --params-json, config["g"]["k"], res("g", "k") and
    job_resources("g") (common.smk: g.resources.mem_mb, runtime and gpu) in its rule."""
    argv = shlex.split(job["shell"]) if job["shell"] else []
    keys = set()
    if "--params-json" in argv:
        keys |= _leaves(json.loads(argv[argv.index("--params-json") + 1]))
    keys |= {f"{g}.{k}" for g, k in re.findall(r'config\["(\w+)"\]\["(\w+)"\]', source)}
    keys |= {f"{g}.resources.{k}" for g, k in re.findall(r'res\("(\w+)", "(\w+)"\)', source)}
    keys |= {f"{g}.resources.{k}" for g in re.findall(r'job_resources\("(\w+)"', source)
             for k in ("mem_mb", "runtime", "gpu")}
    if "train_gpus()" in source:  # common.smk: train.resources.gpu, device and processes
        keys |= {"train.resources.gpu", "train.device", "train.processes"}
    return keys


def declared_params(stage: dict, params: dict) -> set[str]:
    keys = set()
    for path, names in stage["params"]:
        assert path == "params.yaml", f"params from {path}: Snakemake reads params.yaml only"
        if not names:  # the whole file
            keys |= _leaves(params)
        for name in names or []:
            node = params
            for part in name.split("."):
                assert isinstance(node, dict) and part in node, f"{name} is not in params.yaml"
                node = node[part]
            keys |= _leaves(node, f"{name}.")
    return keys


def cli_modules() -> dict[str, list[str]]:
    """`python -m scoresde <stage>` -> the scoresde.stages modules its cmd_ function imports."""
    text = "\n".join(f.read_text() for f in sorted((ROOT / "src/scoresde/cli").glob("*.py")))
    funcs = dict(re.findall(r'add_parser\("([\w-]+)".*?set_defaults\(func=(\w+)', text, re.S))
    bodies = {m[1]: m[2] for m in re.finditer(r"^def (\w+)\(.*?\n((?:    .*\n|\n)*)", text, re.M)}
    return {sub: re.findall(r"from scoresde\.stages import (\w+)", bodies[f]) for sub, f in funcs.items()}


def module_path(module: str) -> str:
    rel = "src/" + module.replace(".", "/")
    return rel + ".py" if (ROOT / f"{rel}.py").is_file() else rel


def direct_imports(path: str) -> set[str]:
    """Files of the scoresde modules a file (or a package's files) imports, at any depth."""
    files = sorted((ROOT / path).glob("*.py")) if (ROOT / path).is_dir() else [ROOT / path]
    text = "\n".join(f.read_text() for f in files)
    found = set()
    pattern = r"^\s*from (scoresde(?:\.\w+)*) import (?:\(([^)]*)\)|([\w, ]+))"
    for pkg, grouped, names in re.findall(pattern, text, re.M):
        if pkg == "scoresde":  # the package's __init__ (its version string) only
            continue
        for name in (n.strip() for n in (grouped or names).split(",") if n.strip()):
            sub = f"{pkg}.{name}"  # `from scoresde.stages import fid` imports a module
            found.add(sub if (ROOT / module_path(sub)).exists() else pkg)
    return {module_path(m) for m in found}


# jobs only with report.seeds > 1 / on an RGB dataset
OPTIONAL_RULES = {"sample_seed", "fid_seed", "colorize"}


@pytest.fixture(scope="module")
def dag(tmp_path_factory):
    stages = dvc_stages()
    targets = ["all"] + [t for s in stages.values() for t in s["target"]]
    jobs = dry_run_jobs(copy_workflow(tmp_path_factory.mktemp("dag")), targets)
    return stages, jobs


def test_stages_run_snakemake_on_their_own_rules(dag):
    stages, jobs = dag
    pipeline = upstream(jobs, [j for j in jobs if j["rule"] == "all"], {j["rule"] for j in jobs})
    rules = {j["rule"] for j in pipeline} - {"all"}
    owner = {}
    for name, st in stages.items():
        assert st["argv"][:4] == ["PYTHONPATH=src", "snakemake", "-s", "workflow/dvc.smk"], name
        assert "--forceall" in st["argv"] and not st["persist"], name
        assert len(st["target"]) == 1 and st["target"][0] in st["allowed"], name
        for rule in set(st["allowed"]) - {st["target"][0]} | ({st["target"][0]} & rules):
            assert rule not in owner, f"rule {rule} runs in stages {owner.get(rule)} and {name}"
            owner[rule] = name
    unknown = set(owner) - rules - OPTIONAL_RULES  # rules without jobs in the default DAG
    assert rules <= set(owner) and not unknown, f"rules of no stage: {rules - set(owner)}; unknown: {unknown}"
    extra = [j["rule"] for j in jobs if j["rule"] in rules and not any(j is p for p in pipeline)]
    assert not extra, f"dvc.smk targets ask for jobs outside the pipeline's DAG: {extra}"
    for name, st in stages.items():  # the target asks for every job of the stage's rules
        mine = set(st["allowed"])
        want = [j for j in pipeline if j["rule"] in mine]
        got = upstream(jobs, [j for j in jobs if j["rule"] == st["target"][0]], mine)
        missing = [j["output"][:1] for j in want if not any(j is g for g in got)]
        assert not missing, f"stage {name}: target {st['target'][0]} misses jobs {missing}"


def test_every_file_a_rule_writes_is_an_out_of_its_stage(dag):
    stages, jobs = dag
    owner = {r: n for n, st in stages.items() for r in st["allowed"]}
    outs = {o: n for n, st in stages.items() for o in st["outs"]}
    used = set()
    for job in (j for j in jobs if j["rule"] in owner):
        for f in job["output"] + job["log"] + job["benchmark"]:
            hits = [o for o in outs if covers(o, f)]
            assert len(hits) == 1, f"{f} (rule {job['rule']}) is in DVC outs {hits}, not exactly one"
            assert outs[hits[0]] == owner[job["rule"]], (
                f"{f} is written by rule {job['rule']} (stage {owner[job['rule']]}) "
                f"but is an out of stage {outs[hits[0]]}")
            used.add(hits[0])
    assert set(outs) == used, f"DVC outs no Snakemake rule writes: {sorted(set(outs) - used)}"


def test_cross_stage_inputs_are_deps(dag):
    stages, jobs = dag
    owner = {r: n for n, st in stages.items() for r in st["allowed"]}
    producer = {f: j["rule"] for j in jobs for f in j["output"]}
    for job in (j for j in jobs if j["rule"] in owner and not j["rule"].startswith("dvc_")):
        stage = owner[job["rule"]]
        for f in job["input"]:
            if owner.get(producer.get(f)) == stage:
                continue
            assert any(covers(d, f) for d in stages[stage]["deps"]), (
                f"stage {stage}: input {f} of rule {job['rule']} is not a dep")


def test_report_declares_every_file_it_reads(dag):
    """The report lists every job's time (benchmark TSVs) and draws sample grids from the
    sweep's sample files: all of them are inputs of the report job, so Snakemake (and the
    DVC deps) see them."""
    _, jobs = dag
    (report,) = [j for j in jobs if j["rule"] == "report"]
    benchmarks = {f for j in jobs if j is not report for f in j["benchmark"]}
    samples = {f for j in jobs if j["rule"] == "sample" for f in j["output"]
               if f.endswith(".pt") and "/seed" not in f}  # fmt: skip
    assert benchmarks and samples
    assert not benchmarks - set(report["input"]), sorted(benchmarks - set(report["input"]))[:5]
    assert not samples - set(report["input"]), sorted(samples - set(report["input"]))[:5]
    argv = shlex.split(report["shell"])
    listed = argv[argv.index("--benchmarks") + 1:]
    assert set(listed[:len(benchmarks)]) == benchmarks  # the files themselves, not a folder


DAG_SHAPE_KEYS = {"sample.samplers", "sample.steps", "sample.denoise", "sample.extra_cases",
                  "sample.jobs", "report.seeds"}


def test_stage_params_are_the_keys_its_rules_read(dag):
    stages, jobs = dag
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    missing_in_file = _leaves(cfg.validate(params)) - _leaves(params)
    assert not missing_in_file, f"params.yaml lacks keys DVC cannot then track: {missing_in_file}"
    sources = rule_sources()
    for name, st in stages.items():
        read = set()
        for job in (j for j in jobs if j["rule"] in st["allowed"] and j["rule"] in sources):
            read |= job_params(job, sources[job["rule"]][1])
            if job["rule"] == "sample":  # the sweep's keys decide which sample jobs exist (common.smk)
                read |= DAG_SHAPE_KEYS
        declared = generic(declared_params(st, params))
        assert generic(read) == declared, (
            f"stage {name}: rules read but not in dvc.yaml params: {sorted(generic(read) - declared)}; "
            f"in dvc.yaml but read by no rule: {sorted(declared - generic(read))}")


def test_stage_deps_include_the_code_that_runs(dag):
    stages, jobs = dag
    sources, modules = rule_sources(), cli_modules()
    for name, st in stages.items():
        need = set(SHARED_DEPS)
        for job in (j for j in jobs if j["rule"] in st["allowed"] and j["rule"] in sources):
            need.add(sources[job["rule"]][0])
            argv = shlex.split(job["shell"])
            sub = argv[argv.index("scoresde") + 1]
            for mod in modules[sub]:
                path = module_path(f"scoresde.stages.{mod}")
                need |= {path} | direct_imports(path)
        missing = sorted(p for p in need if not any(covers(d, p) for d in st["deps"]))
        assert not missing, f"stage {name} lacks code deps {missing}"
        for dep in st["deps"]:
            assert (ROOT / dep).exists() or dep in {"data/raw"} or any(
                covers(o, dep) or covers(dep, o) for s in stages.values() for o in s["outs"]
            ), f"stage {name}: dep {dep} is neither in the repository nor an out"


def test_top_level_metrics_and_plots_are_uncached_report_outs():
    doc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    outs = dvc_stages()["report"]["outs"]
    files = list(doc["metrics"])
    for plot in doc["plots"]:
        (definition,) = plot.values()
        files += list(definition["y"])
        template = definition.get("template", "linear")
        assert template in ("linear", "scatter") or (ROOT / ".dvc/plots" / f"{template}.json").is_file()
    for f in files:
        assert outs.get(f) is False, f"{f} must be an out of the report stage with cache: false"
    ignored = subprocess.run(["git", "check-ignore", *files], cwd=ROOT, capture_output=True, text=True)
    assert ignored.returncode == 1, f"git ignores {ignored.stdout.split()}: they must be committed"


def test_report_writes_the_dvc_files(tmp_path):
    from scoresde import report

    cases = [("pc", 4, True, 8, 30.0), ("ode-rk45", None, False, 40, 25.0)]
    fid_files = []
    for sampler, steps, denoise, nfe, fid in cases:
        name = f"{sampler}_{steps or 'adaptive'}_{'tweedie' if denoise else 'none'}"
        path = tmp_path / "metrics" / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({
            "dataset": "digits", "sde": "ve", "sampler": sampler, "predictor": "x", "corrector": "none",
            "steps": steps, "denoise": denoise, "nfe": nfe, "fid": fid, "kid": fid / 100}))  # fmt: skip
        fid_files.append(path)
    nll = tmp_path / "nll.json"
    nll.write_text(json.dumps({"dataset": "digits", "sde": "ve", "bpd": 3.5}))
    logs = tmp_path / "checkpoints" / "digits" / "ve"
    logs.mkdir(parents=True)
    (logs / "train_log.csv").write_text("step,loss,lr,seconds\n5,1.0,0.1,1\n10,0.5,0.1,2\n")
    out = report.build_report(fid_files, [nll], tmp_path / "reports",
                              checkpoints_dir=tmp_path / "checkpoints")
    assert json.loads(out["metrics_json"].read_text()) == {
        "digits/ve/pc_4_tweedie/fid": 30.0, "digits/ve/pc_4_tweedie/kid": 0.3,
        "digits/ve/ode-rk45_adaptive_none/fid": 25.0, "digits/ve/ode-rk45_adaptive_none/kid": 0.25,
        "digits/ve/bpd": 3.5}  # fmt: skip
    assert out["train_loss_csv"].read_text().splitlines() == ["step,ve", "5,1.0", "10,0.5"]
    rows = out["fid_vs_steps_csv"].read_text().splitlines()
    assert rows[0] == "dataset,sde,sampler,denoise,series,case,steps,nfe,fid,kid"
    assert "digits,ve,pc,True,ve/pc/tweedie,pc_4_tweedie,4,8,30.0,0.3" in rows


def test_dvc_smk_is_formatted():
    snakefmt = shutil.which("snakefmt", path=str(BIN)) or shutil.which("snakefmt")
    if snakefmt is None:
        pytest.skip("snakefmt is not installed")
    proc = subprocess.run([snakefmt, "--check", "workflow/dvc.smk"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --------------------------------------------------------------------------- experiments


def make_repo(dest: Path) -> Path:
    """A git repository with this checkout's files and the smoke configuration as params.yaml."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
    for rel in filter(None, listed.split("\0")):
        if (ROOT / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    merged = run(sys.executable, "-m", "scoresde", "validate-config", "params.yaml",
                 ".test/params.yaml", "--print", cwd=dest)  # fmt: skip
    (dest / "params.yaml").write_text(merged)
    run("git", "init", "-q", cwd=dest)
    run("git", "config", "user.name", "scoresde test", cwd=dest)
    run("git", "config", "user.email", "test@scoresde.invalid", cwd=dest)
    dvc("config", "core.analytics", "false", cwd=dest)
    dvc("remote", "add", "-d", "local", str(dest.parent / "remote"), cwd=dest)
    run("git", "add", "-A", cwd=dest)
    run("git", "commit", "-qm", "smoke configuration", cwd=dest)
    return dest


def experiments(show: list) -> dict[str, dict]:
    """name -> {"params": flat params.yaml, "metrics": flat metrics.json} from exp show --json."""
    out = {}
    for row in show:
        for exp in row.get("experiments") or []:
            for rev in exp.get("revs") or []:
                data = rev["data"]
                out[rev["name"]] = {"params": data["params"]["params.yaml"]["data"],
                                    "metrics": data["metrics"]["reports/metrics.json"]["data"]}
    return out


def same_tree(a: Path, b: Path) -> list[str]:
    """Relative paths that differ (or exist on one side only) between two folders."""
    files_a = {p.relative_to(a) for p in a.rglob("*") if p.is_file()}
    files_b = {p.relative_to(b) for p in b.rglob("*") if p.is_file()}
    bad = sorted(str(p) for p in files_a ^ files_b)
    bad += [str(p) for p in sorted(files_a & files_b) if not filecmp.cmp(a / p, b / p, shallow=False)]
    return bad


@pytest.mark.slow
def test_experiments_noop_repro_and_remote_round_trip(tmp_path):
    repo = make_repo(tmp_path / "repo")
    sdes = yaml.safe_load((repo / "params.yaml").read_text())["sde"]["names"]

    dvc("exp", "run", "-n", "baseline", cwd=repo)
    log = dvc("exp", "run", "-n", "seed1", "-S", "train.seed=1", cwd=repo)
    assert "Stage 'prepare_data' didn't change, skipping" in log, log[-3000:]
    assert "Running stage 'train'" in log and "Running stage 'report'" in log

    exps = experiments(json.loads(dvc("exp", "show", "--json", cwd=repo)))
    assert {"baseline", "seed1"} <= set(exps), sorted(exps)
    base, seed = exps["baseline"], exps["seed1"]
    assert (base["params"]["train"]["seed"], seed["params"]["train"]["seed"]) == (0, 1)
    for m in (base["metrics"], seed["metrics"]):
        for sde in sdes:
            assert m[f"digits/{sde}/bpd"] > 0
            fids = [v for k, v in m.items() if k.startswith(f"digits/{sde}/") and k.endswith("/fid")]
            assert fids and all(v > 0 for v in fids)
    assert base["metrics"].keys() == seed["metrics"].keys()
    assert base["metrics"] != seed["metrics"], "a new training seed left every metric unchanged"

    plots = json.loads(dvc("plots", "diff", "baseline", "seed1", "--json", cwd=repo))
    assert "errors" not in plots, plots.get("errors")
    for name in ("Training loss (DSM) per SDE", "FID vs steps per sampler"):
        assert plots["data"][name][0]["revisions"] == ["baseline", "seed1"]

    again = dvc("repro", cwd=repo)
    assert "Running stage" not in again and "Data and pipelines are up to date." in again, again

    run("git", "add", "-A", cwd=repo)
    run("git", "commit", "-qm", "train.seed=1", cwd=repo)
    dvc("push", cwd=repo)
    clone = tmp_path / "clone"
    run("git", "clone", "-q", str(repo), str(clone), cwd=tmp_path)
    assert not (clone / "checkpoints").exists()
    dvc("pull", cwd=clone)
    for path in ("data/processed", "checkpoints", "samples", "metrics", "reports"):
        assert (clone / path).exists(), path
        assert not same_tree(repo / path, clone / path), f"{path}: {same_tree(repo / path, clone / path)}"
    assert "Data and pipelines are up to date." in dvc("status", cwd=clone)
