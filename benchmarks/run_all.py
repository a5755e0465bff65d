"""Run every benchmark and write benchmarks/results.md (machine, versions, date, tables, targets).

    python benchmarks/run_all.py [--quick] [--threads 1] [--out benchmarks/results.md] [--only ode,training]

What ``make bench`` runs. Each comparison is measured side by side in one run (alternating,
best-of-N) and reported as a ratio ours / reference (below 1: we are faster).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import bench_ddp
import bench_fast_solvers
import bench_layout
import bench_likelihood
import bench_ode
import bench_overhead
import bench_sde_samplers
import bench_stochastic_samplers
import bench_training
import torch
from benchlib import Check, Report, checks_table, version

HERE = Path(__file__).resolve().parent
BENCHES = {
    "overhead": bench_overhead,
    "sde_samplers": bench_sde_samplers,
    "ode": bench_ode,
    "fast_solvers": bench_fast_solvers,
    "stochastic_samplers": bench_stochastic_samplers,
    "likelihood": bench_likelihood,
    "training": bench_training,
    "layout": bench_layout,
    "ddp": bench_ddp,
}
PACKAGES = ("torch", "torchdiffeq", "numpy", "scipy", "diffusers", "torchsde", "k-diffusion")
OVERHEAD_TARGETS = (("issue 8", 1.05), ("issue 2", 1.15))
WHY_OVERHEAD = ("the ratio divides two timed quantities (median of back-to-back rounds), each +-10% on "
                "this shared machine; the samplers' own cost measured directly (## overhead) is the "
                "noise-free figure")


def machine() -> list[str]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return [f"date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}",
            f"machine: {platform.system()} {platform.release()}, {cpu}, {os.cpu_count()} cores, GPU: {gpu}",
            f"python {platform.python_version()}; " + ", ".join(f"{p} {version(p)}" for p in PACKAGES),
            f"torch threads: {torch.get_num_threads()}"]


def sampler_overhead(quick: bool, threads: int) -> Report:
    """The lead's ``sampler_overhead.py``, run as it is; its table is kept verbatim."""
    args = ["--batch", "4", "--steps", "3", "--repeats", "1"]
    if not quick:
        args = ["--batch", "256", "--steps", "20", "--repeats", "6"]
    cmd = [sys.executable, str(HERE / "sampler_overhead.py"), "--threads", str(threads), *args]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    report = Report("sampler_overhead")
    ratios = [(m.group(1).strip(), float(m.group(2))) for m in
              re.finditer(r"^(\w+\s+\S.*?)\s+\d+\s+[\d.]+\s+[\d.]+\s+([\d.]+)\s*$", out, re.M)]
    report.preformatted = ("### Sampler overhead: wall / (NFE x one forward), benchmarks/sampler_overhead.py "
                            f"{' '.join(args)}\n\n```\n{out.strip()}\n```\n")
    if ratios:
        worst = max(ratios, key=lambda r: r[1])
        for issue, target in OVERHEAD_TARGETS:
            report.checks.append(Check(f"sampler overhead, worst case ({issue})", worst[1], target,
                                       f"worst: {' '.join(worst[0].split())}", if_missed=WHY_OVERHEAD))
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny settings (smoke test)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(HERE / "results.md"))
    ap.add_argument("--only", default="", help="comma-separated subset of: sampler_overhead, "
                                                + ", ".join(BENCHES))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    only = {s for s in args.only.split(",") if s}
    load0, t0 = os.getloadavg()[0], time.perf_counter()
    reports = []
    if not only or "sampler_overhead" in only:
        print("== sampler_overhead", flush=True)
        reports.append(sampler_overhead(args.quick, args.threads))
    for name, mod in BENCHES.items():
        if only and name not in only:
            continue
        print(f"== {name}", flush=True)
        reports.append(mod.run(quick=args.quick))
    load1 = os.getloadavg()[0]
    head = ["# Benchmarks" + (" (--quick: smoke settings, numbers meaningless)" if args.quick else ""), ""]
    head += [f"- {line}" for line in machine()]
    head += [f"- load average (1 min) at start {load0:.2f}, at end {load1:.2f}; "
             f"total {time.perf_counter() - t0:.0f} s",
             "- ratio = ours / reference wall time, measured side by side in one run "
             "(alternating, best-of-N): below 1 we are faster",
             "- the default pipeline stage by stage, with its hot spots: benchmarks/pipeline.md "
             "(benchmarks/profile_pipeline.py on a finished run)", ""]
    checks = [c for r in reports for c in r.checks]
    body = [checks_table(checks, "Summary: measured ratios against targets").markdown()]
    for r in reports:
        body += [f"## {r.name}", "", r.preformatted, *(t.markdown() for t in r.tables)]
    text = "\n".join(head + body).rstrip() + "\n"
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
