#!/usr/bin/env python3
"""Compare the result tables of two runs of the pipeline (a local run and a SLURM run).

    python scripts/slurm/compare_reports.py LOCAL/reports SLURM/reports

Fails (exit 1, one line per difference) unless reports/metrics.csv and
reports/likelihood.csv exist in both with the same columns and the same row keys (the case
columns: dataset, sde, sampler, steps, denoise, ...). Differences in the numbers themselves
are reported but allowed: thread counts and timing may differ between the two machines.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

TABLES = ("metrics.csv", "likelihood.csv")
KEY_COLUMNS = ("dataset", "sde", "sampler", "predictor", "corrector", "steps", "denoise")
VALUE_COLUMNS = ("fid", "kid", "bpd", "nfe")


def read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def keyed(columns: list[str], rows: list[dict[str, str]]) -> dict[tuple, dict[str, str]]:
    keys = [c for c in KEY_COLUMNS if c in columns]
    return {tuple(row[c] for c in keys): row for row in rows}


def compare(name: str, local_dir: Path, slurm_dir: Path) -> tuple[list[str], list[str]]:
    """(differences that fail the check, notes) for one table."""
    paths = {"local": local_dir / name, "slurm": slurm_dir / name}
    absent = [f"{label} run has no {path}" for label, path in paths.items() if not path.is_file()]
    if absent:
        return absent, []
    (cols_a, rows_a), (cols_b, rows_b) = read(paths["local"]), read(paths["slurm"])
    if cols_a != cols_b:
        return [f"{name}: columns differ: local {cols_a} vs slurm {cols_b}"], []
    if not rows_a:
        return [f"{name}: the local run's table is empty"], []
    a, b = keyed(cols_a, rows_a), keyed(cols_b, rows_b)
    errors = [f"{name}: row {key} only in the local run" for key in sorted(a.keys() - b.keys())]
    errors += [f"{name}: row {key} only in the SLURM run" for key in sorted(b.keys() - a.keys())]
    if len(rows_a) != len(rows_b):
        errors.append(f"{name}: {len(rows_a)} rows locally, {len(rows_b)} through SLURM")
    same = sum(all(a[k][c] == b[k][c] for c in VALUE_COLUMNS if c in cols_a) for k in a.keys() & b.keys())
    notes = [f"{name}: {len(rows_a)} rows x {len(cols_a)} columns match; "
             f"{same}/{len(a)} rows have identical {'/'.join(c for c in VALUE_COLUMNS if c in cols_a)}"]
    return errors, notes


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    local_dir, slurm_dir = map(Path, argv)
    failed = False
    for name in TABLES:
        errors, notes = compare(name, local_dir, slurm_dir)
        for line in errors:
            print(f"error: {line}", file=sys.stderr)
        for line in notes:
            print(line, file=sys.stderr)
        failed |= bool(errors)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
