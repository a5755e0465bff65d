#!/usr/bin/env python3
"""Check, before any job is submitted, that a SLURM profile can work on this cluster.

    python scripts/slurm/preflight.py profiles/slurm          # partitions etc. from the profile
    python scripts/slurm/preflight.py --partition gpu main    # or given directly

Without it the first sign of a wrong partition is an sbatch error when the first job of the
rule that uses it is submitted (possibly hours into a run), and a missing SLURM is a bare
"No such file or directory: 'sacct'". Each problem is one line on stderr; exit status 1.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

TOOLS = ("sbatch", "squeue", "sinfo", "scontrol")
DEFAULT_INIT_SECONDS = 40  # the plugin's default slurm-init-seconds-before-status-checks


def read_profile(profile: Path) -> dict:
    """The profile's YAML (config.yaml or profile.yaml in a folder, or the file itself)."""
    if profile.is_dir():
        for name in ("profile.yaml", "config.yaml"):
            if (profile / name).is_file():
                profile = profile / name
                break
    return yaml.safe_load(profile.read_text()) or {}


def profile_partitions(profile: dict) -> set[str]:
    """slurm_partition values under default-resources and every rule of set-resources."""
    tables = [profile.get("default-resources") or {}]
    tables += list((profile.get("set-resources") or {}).values())
    return {str(t["slurm_partition"]).strip("'\"") for t in tables if t.get("slurm_partition")}


def run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def cluster_config() -> dict[str, str]:
    """`scontrol show config` as a dict (empty when it fails)."""
    proc = run("scontrol", "show", "config")
    pairs = (line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    return {key.strip(): value.strip() for key, value in pairs} if proc.returncode == 0 else {}


def seconds(value: str) -> int | None:
    match = re.match(r"(\d+)\s*([a-z]*)", value.lower())
    if not match:
        return None
    return int(match.group(1)) * (3600 if match.group(2).startswith("h") else 1)


def check(partitions: set[str], status_command: str, init_seconds: int) -> list[str]:
    """Problems found, one sentence each (empty list: all good)."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return [f"SLURM not found: {', '.join(missing)} not on PATH. Run on the cluster's login "
                "node, or `make test-slurm` for a one-node cluster on this machine."]
    proc = run("sinfo", "--noheader", "--format=%R")
    if proc.returncode != 0:
        reason = (proc.stderr.strip().splitlines() or ["no reason given"])[0]
        return [f"SLURM controller not reachable (sinfo failed: {reason})."]
    available = sorted(set(proc.stdout.split()))
    problems = [
        f"SLURM partition '{name}' does not exist on this cluster (partitions: "
        f"{', '.join(available) or 'none'}). Set slurm_partition under default-resources in "
        "the profile (profiles/slurm/config.yaml)."
        for name in sorted(partitions - set(available))
    ]
    config = cluster_config()
    no_accounting = config.get("AccountingStorageType", "").endswith("/none")
    min_job_age = seconds(config.get("MinJobAge", ""))
    if status_command == "sacct" and no_accounting:
        problems.append("slurm-status-command is sacct but this cluster keeps no accounting "
                        "(AccountingStorageType=accounting_storage/none); use squeue.")
    if status_command == "squeue" and no_accounting and min_job_age is not None \
            and min_job_age < 3 * init_seconds:
        problems.append(f"MinJobAge={min_job_age}s is below 3 x slurm-init-seconds-before-"
                        f"status-checks ({init_seconds}s): squeue forgets finished jobs before "
                        "Snakemake asks and the run never ends. Lower that setting.")
    return problems


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("profile", nargs="?", type=Path, help="profile folder or YAML file")
    parser.add_argument("--partition", nargs="*", default=[], help="partitions jobs ask for")
    parser.add_argument("--status-command", choices=("squeue", "sacct"), default=None)
    parser.add_argument("--init-seconds", type=int, default=None)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    profile = read_profile(args.profile) if args.profile else {}
    partitions = profile_partitions(profile) | set(args.partition)
    status_command = args.status_command or profile.get("slurm-status-command", "squeue")
    init_seconds = args.init_seconds or int(profile.get(
        "slurm-init-seconds-before-status-checks", DEFAULT_INIT_SECONDS))
    problems = check(partitions, status_command, init_seconds)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if not problems:
        print(f"SLURM preflight ok: partitions {', '.join(sorted(partitions)) or '(default)'}, "
              f"job state via {status_command}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
