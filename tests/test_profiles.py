"""Snakemake profiles (profiles/default, profiles/slurm) and the SLURM preflight check.

Fast: no cluster needed. The real cluster path is `make test-slurm` (scripts/test_slurm.sh)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PROFILES = ROOT / "profiles"
PREFLIGHT = ROOT / "scripts" / "slurm" / "preflight.py"
GPU_RULES = ("train", "select_checkpoint", "sample", "likelihood", "fid", "train_features")


def load(name: str) -> dict:
    return yaml.safe_load((PROFILES / name / "config.yaml").read_text())


def rule_names() -> set[str]:
    text = "".join(p.read_text() for p in [ROOT / "Snakefile", *(ROOT / "workflow/rules").glob("*.smk")])
    return set(re.findall(r"^\s*rule (\w+):", text, flags=re.M))  # select_checkpoint is indented


def snakemake(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """The workflow and its profiles, copied (dry runs write .snakemake/)."""
    tmp = tmp_path_factory.mktemp("profiles")
    for name in ("Snakefile", "params.yaml", "workflow", ".test", "config", "profiles"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, tmp / name)
    return tmp


@pytest.mark.parametrize("name", ["default", "slurm"])
def test_profile_parses_as_snakemake_reads_it(name):
    from snakemake.profiles import ProfileConfigFileParser

    with open(PROFILES / name / "config.yaml") as stream:
        items = ProfileConfigFileParser().parse(stream)
    assert items, name


def test_slurm_profile_settings():
    profile = load("slurm")
    assert profile["executor"] == "slurm"
    assert profile["slurm-status-command"] == "squeue"  # clusters without accounting
    assert profile["jobs"] > 1 and profile["latency-wait"] >= 30
    defaults = profile["default-resources"]
    assert defaults["slurm_partition"]
    assert isinstance(defaults["runtime"], int) and isinstance(defaults["mem_mb"], int)


def test_slurm_set_resources_name_real_rules_and_plugin_keys():
    """A misspelt rule or resource name would be ignored silently."""
    set_resources = load("slurm")["set-resources"]
    assert set(set_resources) <= rule_names()
    assert {"train", "sample"} <= set(set_resources)
    plugin = Path(__import__("snakemake_executor_plugin_slurm").__file__).parent
    jobstep = Path(__import__("snakemake_executor_plugin_slurm_jobstep").__file__).parent
    source = "".join(p.read_text() for d in (plugin, jobstep) for p in d.glob("*.py"))
    keys = {key for table in set_resources.values() for key in table}
    keys |= set(load("slurm")["default-resources"])
    for key in keys - {"runtime", "mem_mb"}:
        assert f'"{key}"' in source, f"snakemake-executor-plugin-slurm does not read {key!r}"
    for rule in ("train", "sample"):
        assert set_resources[rule]["cpus_per_gpu"] == "threads"


def test_default_profile_does_not_shadow_the_slurm_profile():
    """profiles/default is loaded on every run and wins key by key over --profile."""
    default = load("default")
    assert not set(default) & set(load("slurm")), "keys here would override profiles/slurm"
    assert "cores" not in default  # would cap every cluster job's threads
    assert default["resources"]["gpu"] >= 1
    assert default["set-resource-scopes"]["gpu"] == "local"  # a per-job bound on a cluster


def test_dry_run_with_the_default_profile(workdir):
    proc = snakemake("-n", "--profile", "profiles/default", "--configfile", ".test/params.yaml",
                     cwd=workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "total" in proc.stdout


def test_dry_run_with_the_slurm_profile_shows_cluster_resources(workdir):
    # A dry run caps threads at --cores (1 if not given); a SLURM run has no cap.
    proc = snakemake("-n", "--cores", "64", "--profile", "profiles/slurm",
                     "--configfile", "config/cifar10.yaml", cwd=workdir)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "workflow specific profile profiles/default" in out
    train = out[out.index("rule train:"):].split("\n\n")[0]
    resources = re.search(r"^\s+resources: (.*)$", train, flags=re.M).group(1)
    assert "slurm_partition=main" in resources
    assert re.search(r"\bgpu=1\b", resources) and "cpus_per_gpu=8" in resources  # config/cifar10.yaml
    assert re.search(r"^\s+threads: 8$", train, flags=re.M)


def fake_slurm(tmp_path: Path, partitions=("main", "gpu"), min_job_age=300) -> Path:
    """Stand-ins for sinfo/scontrol/sbatch/squeue, enough for the preflight."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scripts = {
        "sinfo": "printf '%s\\n' " + " ".join(partitions),
        "scontrol": f"printf 'MinJobAge = {min_job_age} sec\\n"
                    "AccountingStorageType = accounting_storage/none\\n'",
        "sbatch": "exit 0",
        "squeue": "exit 0",
    }
    for name, body in scripts.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    return bin_dir


def preflight(*args: str, path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(PREFLIGHT), *args], capture_output=True, text=True,
                          env={**os.environ, "PATH": str(path)}, timeout=60)


def test_preflight_accepts_the_slurm_profile(tmp_path):
    proc = preflight(str(PROFILES / "slurm"), path=fake_slurm(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "partitions main" in proc.stderr


def test_preflight_names_a_partition_that_does_not_exist(tmp_path):
    bad = tmp_path / "bad.yaml"
    profile = load("slurm")
    profile["default-resources"]["slurm_partition"] = "nosuch"
    bad.write_text(yaml.safe_dump(profile))
    proc = preflight(str(bad), path=fake_slurm(tmp_path))
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "partition 'nosuch' does not exist" in lines[0] and "main, gpu" in lines[0].replace(
        "gpu, main", "main, gpu")


def test_preflight_without_slurm(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = preflight(str(PROFILES / "slurm"), path=empty)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: SLURM not found: sbatch") and proc.stderr.count("\n") == 1


def test_preflight_catches_squeue_forgetting_finished_jobs(tmp_path):
    proc = preflight(str(PROFILES / "slurm"), path=fake_slurm(tmp_path, min_job_age=20))
    assert proc.returncode == 1
    assert "MinJobAge=20s" in proc.stderr
