"""The Snakemake workflow: lint, formatting, dry runs of the shipped configs, bad parameters,
report captions, and (slow) the smoke configuration end to end with `snakemake --report`."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from scoresde import report
from scoresde.stages import cases
from scoresde.stages import config as cfg

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
WORKFLOW_FILES = ("Snakefile", "params.yaml", "workflow", ".test", "config", "profiles")


def snakemake(*args: str, cwd: Path = ROOT, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run snakemake from this interpreter's environment (its `python` first on PATH)."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def workdir(tmp_path) -> Path:
    """A copy of the workflow (not the results) in a fresh folder."""
    for name in WORKFLOW_FILES:
        src = ROOT / name
        if not src.exists():
            continue
        if src.is_dir():
            shutil.copytree(src, tmp_path / name, ignore=shutil.ignore_patterns("out"))
        else:
            shutil.copy2(src, tmp_path / name)
    return tmp_path


def test_lint_is_clean():
    proc = snakemake("--lint")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Lints for" not in proc.stdout + proc.stderr


def test_snakefmt_is_clean():
    snakefmt = shutil.which("snakefmt", path=str(BIN)) or shutil.which("snakefmt")
    if snakefmt is None:
        pytest.skip("snakefmt is not installed")
    proc = subprocess.run([snakefmt, "--check", "Snakefile", "workflow/rules"], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_rule_takes_the_shared_block_from_common_smk():
    """Log, benchmark, conda environment, resources and command line of every rule come from
    common.smk's helpers (the report has no benchmark: it lists the others')."""
    rules = {}
    for path in sorted((ROOT / "workflow/rules").glob("*.smk")):
        text = path.read_text()
        starts = [(m.start(), m[1]) for m in re.finditer(r"^\s*rule (\w+):", text, re.M)]
        ends = [s for s, _ in starts[1:]] + [len(text)]
        for (a, name), b in zip(starts, ends[:len(starts)], strict=True):
            rules[name] = text[a:b]
    assert {"train", "sample", "fid", "likelihood", "report"} <= set(rules)
    for name, block in rules.items():
        for helper in ("log_file(", "benchmark_file(", "ENV", "job_resources(", "scoresde("):
            if name == "report" and helper in ("log_file(", "benchmark_file("):
                continue
            assert helper in block, f"rule {name} does not use {helper.rstrip('(')}"
        assert "python -m scoresde" not in block and '"logs/benchmarks' not in block, name


def test_every_report_caption_is_used():
    """Each workflow/report/*.rst captions an output marked for the report, or describes the
    workflow (Snakefile `report:`); every caption named exists."""
    text = "\n".join(p.read_text() for p in [ROOT / "Snakefile", *ROOT.glob("workflow/rules/*.smk")])
    used = set(re.findall(r"report/(\w+)\.rst", text))
    assert used == {p.stem for p in (ROOT / "workflow/report").glob("*.rst")}


def _job_counts(stdout: str) -> dict[str, int]:
    counts, on = {}, False
    for line in stdout.splitlines():
        if line.startswith("job ") and "count" in line:
            on = True
        elif on and line.strip() and not line.startswith("---"):
            name, number = line.split()[0], line.split()[-1]
            if name == "total":
                break
            counts[name] = int(number)
    return counts


@pytest.mark.parametrize("configfile", [None, ".test/params.yaml", "config/cifar10.yaml",
                                        "config/fashion_mnist.yaml"])
def test_dry_run_plans_the_whole_dag(workdir, configfile):
    args = ["-n", "--cores", "2"] + (["--configfile", configfile] if configfile else [])
    proc = snakemake(*args, cwd=workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    merged = cfg.load_file(workdir / "params.yaml")
    if configfile:
        merged = cfg.merge(merged, cfg.load_file(workdir / configfile))
    c = cfg.validate(merged)
    n_sde = len(c["sde"]["names"])
    n_case = len(cases.sweep(c["sample"]["samplers"], c["sample"]["steps"],
                             c["sample"]["denoise"], c["sample"]["extra_cases"]))
    counts = _job_counts(proc.stdout)
    ctrl = c["controllable"]  # one guide per method, conditional-sample and inpaint job per SDE
    n_ctrl = ctrl["enabled"] * len(set(ctrl["sdes"] or c["sde"]["names"]) & set(c["sde"]["names"]))
    rgb = c["data"]["dataset"] in ("cifar10", "image_folder")  # and colorize on colour data
    guides = {"classifier": "train_classifier", "free": "train_conditional"}
    rules = (*(guides[m] for m in ctrl["conditional"]["guidance"]), "conditional_sample", "inpaint",
             *(["colorize"] if rgb else []))
    controllable = {r: n_ctrl for r in rules if n_ctrl}
    per_case = c["sample"]["jobs"] == "per_case"  # one job per (sampler, steps), else per SDE
    n_sample = n_sde * (n_case // len(c["sample"]["denoise"]) if per_case else 1)
    n_inverse = n_ctrl if ctrl["inverse"]["tasks"] and ctrl["inverse"]["methods"] else 0
    controllable.update({"inverse": n_inverse} if n_inverse else {})  # one per SDE: every case
    assert counts == {"all": 1, "fid": n_sde, "likelihood": n_sde, "prepare_data": 1,
                      "report": 1, "sample": n_sample, "select_checkpoint": n_sde,
                      "train": n_sde, "train_features": 1, "metric_checks": 1,
                      **controllable}, proc.stdout
    if configfile == ".test/params.yaml":  # the job count the smoke config and README state
        total = sum(counts.values())
        assert f"{total} jobs on digits" in (workdir / configfile).read_text()
        assert f"the report; {total} jobs)" in (ROOT / "README.md").read_text()
        assert f"(the smoke test, {total} jobs)" in (workdir / "params.yaml").read_text()


def test_make_clean_keeps_the_raw_data(tmp_path):
    """`make clean` deletes the DAG's outputs, never data/raw/ (where datasets live)."""
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    for folder in ("data/raw/shapes/train/a", "data/processed/digits", "checkpoints", "reports",
                   "controllable/digits", "logs"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "data/raw/shapes/train/a/0.png").write_bytes(b"png")
    subprocess.run(["make", "clean"], cwd=tmp_path, check=True, capture_output=True)
    assert (tmp_path / "data/raw/shapes/train/a/0.png").read_bytes() == b"png"
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_dir())
    assert left == ["data", "data/raw", "data/raw/shapes", "data/raw/shapes/train",
                    "data/raw/shapes/train/a"]


@pytest.mark.parametrize(
    "override, key",
    [({"train": {"n_iter": 10}}, "train.n_iter"), ({"sample": {"steps": [0]}}, "sample.steps.0"),
     ({"sde": {"names": ["ve", "vpsde"]}}, "sde.names.1")],
)
def test_bad_parameters_fail_before_any_job(workdir, override, key):
    (workdir / "bad.yaml").write_text(yaml.safe_dump(override))
    proc = snakemake("-n", "--cores", "1", "--configfile", "bad.yaml", cwd=workdir)
    assert proc.returncode != 0
    assert key in proc.stdout + proc.stderr
    assert not (workdir / "data").exists()


def test_nested_config_overrides_are_typed_by_the_schema(workdir):
    """--config reads nested values as text; they are typed by the schema before validation,
    so nested numbers, bools and null can be overridden."""
    proc = snakemake("-n", "--cores", "1", "--config",
                     'train={"snapshot_every":10,"n_iters":20,"lr":2e-4}',
                     'controllable={"enabled":false}', cwd=workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "step_10.pt" in proc.stdout and "step_20.pt" in proc.stdout
    assert "train_classifier" not in proc.stdout
    proc = snakemake("-n", "--cores", "1", "--config", 'train={"n_iters":"10.5"}', cwd=workdir)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "train.n_iters: '10.5' is not of type 'integer'" in out, out
    assert "drop the quotes" not in out
    proc = snakemake("-n", "--cores", "1", "--config", 'sde={"names":["vp"]}',
                     'controllable={"sdes":["ve"]}', cwd=workdir)
    assert proc.returncode != 0 and "controllable.sdes" in proc.stdout + proc.stderr


def test_a_config_file_with_a_key_twice_is_refused(workdir):
    (workdir / "twice.yaml").write_text("train:\n  n_iters: 10\ntrain:\n  lr: 0.1\n")
    proc = snakemake("-n", "--cores", "1", "--configfile", "twice.yaml", cwd=workdir)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "'train' is given twice" in out, out
    assert not (workdir / "data").exists()


def _rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_smoke_config_end_to_end(workdir):
    start = time.perf_counter()
    proc = snakemake("--cores", "2", "--configfile", ".test/params.yaml", cwd=workdir)
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    c = cfg.resolve(str(workdir / ".test/params.yaml"))
    sdes = c["sde"]["names"]
    n_case = len(cases.sweep(c["sample"]["samplers"], c["sample"]["steps"],
                             c["sample"]["denoise"], c["sample"]["extra_cases"]))

    metrics = _rows(workdir / "reports/metrics.csv")
    assert len(metrics) == len(sdes) * n_case
    assert {"dataset", "sde", "sampler", "steps", "denoise", "nfe", "fid", "kid",
            "seconds", "feature_extractor"} <= set(metrics[0])
    assert {r["sde"] for r in metrics} == set(sdes)
    assert all(float(r["fid"]) > 0 and float(r["nfe"]) > 0 for r in metrics)

    nll = _rows(workdir / "reports/likelihood.csv")
    methods = c["eval"]["likelihood"]["dequantization"]  # one row per SDE and bound
    assert sorted((r["sde"], r["method"]) for r in nll) == sorted(
        (s, m) for s in sdes for m in methods)
    assert {"dataset", "sde", "bpd", "nfe"} <= set(nll[0])
    assert all(0 < float(r["bpd"]) < 20 for r in nll)
    assert (workdir / "reports/report.html").stat().st_size > 1000
    for sde in sdes:  # the resolved parameters sit beside the outputs
        assert (workdir / f"checkpoints/digits/{sde}/config.json").is_file()
        assert (workdir / f"checkpoints/digits/{sde}/best.pt").is_file()
    print(f"smoke DAG: {seconds:.0f} s")  # ~1-2 minutes on 2 idle cores

    again = snakemake("-n", "--cores", "2", "--configfile", ".test/params.yaml", cwd=workdir)
    assert "Nothing to be done" in again.stdout + again.stderr

    # every figure and table of the report comes from this run
    page = (workdir / "reports/report.html").read_text()
    figures = sorted(p.name for p in (workdir / "reports/figures").glob("*.png"))
    tweedie = len(set(c["sample"]["denoise"])) > 1
    expected = report.expected_figures(c["data"]["dataset"], sdes, tweedie)
    ctrl = c["controllable"]
    ctrl_sdes = [s for s in (ctrl["sdes"] or sdes) if s in sdes] if ctrl["enabled"] else []
    expected_ctrl = [f"{kind}_{c['data']['dataset']}_{s}.png" for s in ctrl_sdes
                     for kind in ("controllable", "guidance",
                                  *(["inverse"] if ctrl["inverse"]["tasks"] else []))]
    assert expected_ctrl, "the smoke config runs the controllable rules"
    assert figures == sorted([f"{name}.png" for name, _, _ in expected] + expected_ctrl)
    assert page.count("data:image/png;base64,") == len(figures)
    # orderings, sweep, what the metrics see, fast-sampler goal, likelihood, paper, controllable x 2
    # (class-conditional, the others), provenance x 3
    assert page.count("<table>") == 12 and "(no data)" not in page and "(no figures)" not in page
    assert (workdir / "reports/controllable.csv").stat().st_size > 100

    # Snakemake's report: the figures, tables and both reports, each with its caption
    proc = snakemake("--configfile", ".test/params.yaml", "--report",
                     "reports/snakemake-report.html", cwd=workdir)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    smk = " ".join((workdir / "reports/snakemake-report.html").read_text()
                   .replace("\\n", " ").split())
    for name in [*figures, "metrics.csv", "likelihood.csv", "train_loss.csv", "selection.csv",
                 "report.html", "report.md"]:
        assert name in smk, name
    for rst in sorted((workdir / "workflow/report").glob("*.rst")):
        assert " ".join(rst.read_text().split()[:4]) in smk, f"caption {rst.name} not shown"

    # report.seeds: a second seed of every VP case, on top of the run above (only the new
    # sample_seed / fid_seed jobs and the report run: the VP jobs' parameters are unchanged);
    # each case's FID is the mean of the two
    (workdir / "seeds.yaml").write_text(
        "sde: {names: [vp]}\nreport: {seeds: 2}\ncontrollable: {enabled: false}\n")
    args = ("--cores", "2", "--configfile", ".test/params.yaml", "seeds.yaml")
    plan = snakemake("-n", *args, cwd=workdir)
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", plan.stdout + plan.stderr, re.M))
    n_seed_jobs = n_case // len(c["sample"]["denoise"]) if c["sample"]["jobs"] == "per_case" else 1
    assert jobs == {"sample_seed": str(n_seed_jobs), "fid_seed": "1",
                    "report": "1", "all": "1", "total": jobs.get("total")}, plan.stdout
    proc = snakemake(*args, cwd=workdir)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    merged = _rows(workdir / "reports/metrics.csv")
    assert len(merged) == n_case and all(r["seeds"] == "2" for r in merged)
    means = []
    for case in cases.sweep(c["sample"]["samplers"], c["sample"]["steps"],
                            c["sample"]["denoise"], c["sample"]["extra_cases"]):
        fids = [json.loads((workdir / f"metrics/digits/vp/fid/{sub}{case}.json").read_text())["fid"]
                for sub in ("", "seed1/")]
        assert fids[0] != fids[1], case  # seed 1 draws other samples
        means.append(sum(fids) / 2)
    assert sorted(float(r["fid"]) for r in merged) == pytest.approx(sorted(means))


SHAPES = {"cross": (220, 40, 40), "square": (40, 220, 40), "stripes": (40, 40, 220)}


def _shapes_folder(root: Path, counts: dict[str, dict[str, int]]) -> None:
    """root/<split>/<class>/<i>.png: 8x8 RGB, each class its own colour (+- 20 noise)."""
    import numpy as np
    from PIL import Image

    rng = np.random.RandomState(0)
    for split, classes in counts.items():
        for name, n in classes.items():
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = np.array(SHAPES[name]) + rng.randint(-20, 21, (8, 8, 3))
                Image.fromarray(pixels.astype(np.uint8)).save(root / split / name / f"{i}.png")


def _plan(*args: str, cwd: Path) -> dict[str, int]:
    proc = snakemake("-n", "--cores", "2", *args, cwd=cwd)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    if "Nothing to be done" in proc.stdout + proc.stderr:
        return {}
    return _job_counts(proc.stdout)


IMAGE_FOLDER_RUN = """\
data: {dataset: image_folder, root: data/raw/shapes, n_test: 6, n_reference: 20}
sde: {names: [vp]}
select: {n_samples: 16}
sample: {samplers: [pc], steps: [2], extra_cases: [], n_samples: 16}
controllable:
  sdes: [vp]
  inpaint: {masks: [centre], methods: [replace]}
  inverse: {tasks: []}
"""


@pytest.mark.slow
def test_an_rgb_image_folder_end_to_end_then_reruns_when_its_data_changes(workdir):
    """A tiny RGB image folder (three classes, one absent from test) through the smoke DAG:
    test labels follow the training split's class map, data.n_test is a stratified subset, and
    a changed parameter, a changed raw file and a switch of data.dataset each rerun what they
    affect."""
    import torch

    _shapes_folder(workdir / "data/raw/shapes", {"train": {"cross": 8, "square": 6, "stripes": 4},
                                                 "test": {"cross": 4, "stripes": 3}})
    (workdir / "shapes.yaml").write_text(IMAGE_FOLDER_RUN)
    config = ("--configfile", ".test/params.yaml", "shapes.yaml")
    proc = snakemake("--cores", "2", *config, cwd=workdir)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    processed = workdir / "data/processed/image_folder"
    train, test = (torch.load(processed / f"{s}.pt", weights_only=True) for s in ("train", "test"))
    assert train["classes"] == test["classes"] == ["cross", "square", "stripes"]
    assert train["x"].shape == (18, 3, 8, 8)
    for split in (train, test):  # every image's colour is its class's colour
        colours = split["x"].float().mean((2, 3))
        for colour, label in zip(colours, split["labels"].tolist(), strict=True):
            expected = torch.tensor(SHAPES[split["classes"][label]], dtype=torch.float)
            assert (colour - expected).abs().max() < 10
    # n_test 6 of 4 cross + 3 stripes: 3 + 3 (largest remainder), interleaved; stripes keeps 2
    assert test["labels"].tolist() == [0, 2, 0, 2, 0, 2]
    assert (workdir / "reports/figures/controllable_image_folder_vp.png").is_file()
    conditional = _rows(workdir / "reports/controllable.csv")
    assert [r["class_name"] for r in conditional if r["task"] == "conditional"][:3] == list(SHAPES)
    assert {r["class"] for r in conditional if r["task"] == "conditional"} == {"0", "1", "2", ""}
    page = (workdir / "reports/report.html").read_text()
    assert "image_folder classifier" in page and "digits classifier" not in page
    assert "rows: 0 = cross, 1 = square, 2 = stripes" in page  # the figure's caption

    assert _plan(*config, cwd=workdir) == {}  # up to date
    (workdir / "lr.yaml").write_text("train: {lr: 0.001}\n")  # a parameter of train
    plan = _plan(*config, "lr.yaml", cwd=workdir)
    assert plan["train"] == 1 and plan["report"] == 1 and "prepare_data" not in plan, plan

    extra = workdir / "data/raw/shapes/train/square/extra.png"  # a raw file added, then edited
    extra.write_bytes((workdir / "data/raw/shapes/train/square/0.png").read_bytes())
    plan = _plan(*config, cwd=workdir)
    assert plan["prepare_data"] == 1 and plan["train"] == 1 and plan["report"] == 1, plan
    (workdir / "data/raw/shapes/train/square/0.png").write_bytes(b"corrupt")
    extra.unlink()
    assert _plan(*config, cwd=workdir)["prepare_data"] == 1
    proc = snakemake("--cores", "1", *config, "--until", "prepare_data", cwd=workdir)
    assert proc.returncode != 0 and "square/0.png cannot be read" in proc.stdout + proc.stderr
    shutil.copy(workdir / "data/raw/shapes/train/square/1.png",
                workdir / "data/raw/shapes/train/square/0.png")

    plan = _plan("--configfile", ".test/params.yaml", cwd=workdir)  # data.dataset: digits
    assert plan["prepare_data"] == 1 and plan["report"] == 1, plan
