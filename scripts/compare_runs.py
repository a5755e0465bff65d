"""Compare two pipeline runs (folders where `snakemake` ran): the same per-case files and metrics,
and how long their jobs took.

    python scripts/compare_runs.py RUN_A RUN_B

Checks that both runs hold the same sample files (images equal), FID JSONs, nll.json files and
report tables, ignoring only what measures time or names a path (``seconds``, ``config``, the
tables' ``seconds`` column); prints the first differences and exits 1 if there are any. Then
sums each run's Snakemake benchmark TSVs by rule (jobs, wall s, CPU s).
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import torch

TIMING = {"seconds", "config", "device"}


def _json(path: Path) -> dict:
    return {k: v for k, v in json.loads(path.read_text()).items() if k not in TIMING}


def _table(path: Path) -> list[dict]:
    with open(path) as f:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]


def differences(a: Path, b: Path) -> list[str]:
    bad = []
    for sub, pattern in (("samples", "**/*.pt"), ("samples", "**/*.json"),
                         ("metrics", "**/*.json")):
        files_a = {p.relative_to(a) for p in (a / sub).glob(pattern)}
        files_b = {p.relative_to(b) for p in (b / sub).glob(pattern)}
        bad += [f"only in one run: {p}" for p in sorted(files_a ^ files_b)]
        for rel in sorted(files_a & files_b):
            if rel.suffix == ".pt":
                same = torch.equal(*(torch.load(r / rel, weights_only=True)["images"]
                                     for r in (a, b)))
            else:
                same = _json(a / rel) == _json(b / rel)
            if not same:
                bad.append(f"differs: {rel}")
    for name in ("metrics.csv", "likelihood.csv"):
        if _table(a / "reports" / name) != _table(b / "reports" / name):
            bad.append(f"differs: reports/{name}")
    return bad


def stage_times(run: Path) -> dict[str, list[float]]:
    """{rule: [jobs, wall s, CPU s]} from logs/benchmarks/<rule>/**/*.tsv."""
    out: dict[str, list[float]] = {}
    for tsv in sorted((run / "logs/benchmarks").rglob("*.tsv")):
        rule = tsv.relative_to(run / "logs/benchmarks").parts[0]
        with open(tsv) as f:
            row = list(csv.DictReader(f, delimiter="\t"))[-1]
        t = out.setdefault(rule, [0, 0.0, 0.0])
        t[0] += 1
        t[1] += float(row["s"])
        t[2] += float(row["cpu_time"])
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    a, b = map(Path, argv)
    bad = differences(a, b)
    n = sum(1 for _ in (a / "samples").glob("**/*.pt"))
    print(f"{n} sample files, their FID JSONs, nll.json and the report tables: "
          + ("identical" if not bad else f"{len(bad)} differences"))
    for line in bad[:20]:
        print("  " + line)
    times = [stage_times(r) for r in (a, b)]
    print("| rule | jobs A | wall s A | CPU s A | jobs B | wall s B | CPU s B |")
    print("|---|---|---|---|---|---|---|")
    for rule in sorted(set(times[0]) | set(times[1]), key=lambda r: -times[0].get(r, [0, 0, 0])[2]):
        ta, tb = (t.get(rule, [0, 0.0, 0.0]) for t in times)
        print(f"| {rule} | {ta[0]} | {ta[1]:.0f} | {ta[2]:.1f} | {tb[0]} | {tb[1]:.0f} | {tb[2]:.1f} |")
    ta, tb = ([sum(v[i] for v in t.values()) for i in range(3)] for t in times)
    print(f"| total | {ta[0]} | {ta[1]:.0f} | {ta[2]:.1f} | {tb[0]} | {tb[1]:.0f} | {tb[2]:.1f} |")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
