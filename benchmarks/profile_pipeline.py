"""Where a pipeline run spends its time: stage by stage, and the hot operations inside each stage.

    python benchmarks/profile_pipeline.py RUN_DIR [--before OLD_RUN_DIR] [--cores N] [--profile]

RUN_DIR is a folder where `snakemake` ran (it holds logs/benchmarks/, samples/, checkpoints/).
The stage table sums Snakemake's benchmark files per rule (wall seconds of every job, and their
CPU seconds); with --before, an older run's table is printed beside it with the ratio of CPU
seconds (robust to other load on the machine, unlike wall time). For the
sample rule it also splits job time into drawing samples (the `seconds` in the sample JSONs, one
trajectory per job) and the rest (starting Python, importing torch, loading the checkpoint,
writing outputs). --profile runs the torch profiler on one unit of work of the three heaviest
stages with the run's own VP checkpoint and prints the top operators by self CPU time.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sys
from pathlib import Path


def stage_times(run: Path) -> dict[str, dict]:
    """{rule: {"jobs", "wall", "cpu"}} from logs/benchmarks/<rule>/**/*.tsv."""
    stages = {}
    for rule_dir in sorted((run / "logs/benchmarks").iterdir()):
        rows = []
        for tsv in rule_dir.rglob("*.tsv"):
            with open(tsv) as f:
                rows += list(csv.DictReader(f, delimiter="\t"))
        stages[rule_dir.name] = {"jobs": len(rows), "wall": sum(float(r["s"]) for r in rows),
                                 "cpu": sum(float(r["cpu_time"]) for r in rows)}
    return stages


def drawing_seconds(run: Path) -> float:
    """Seconds the sample jobs spent drawing samples (the `seconds` of the sample JSONs)."""
    trajectories = {}
    for meta in run.glob("samples/*/*/*.json"):
        d = json.loads(meta.read_text())
        key = (d["sde"], d["sampler"], d["steps"], tuple(d.get("trajectory_shared_by", [meta])))
        trajectories[key] = d["seconds"]  # the pair of a shared trajectory counts once
    return sum(trajectories.values())


def sampling_split(run: Path) -> tuple[float, float]:
    """(seconds drawing samples, seconds of sample-job wall time) for the sample rule."""
    return drawing_seconds(run), stage_times(run).get("sample", {}).get("wall", 0.0)


def _json_seconds(run: Path, pattern: str) -> float:
    return sum(float(json.loads(f.read_text()).get("seconds", 0.0)) for f in run.glob(pattern))


def timed_work(run: Path) -> dict[str, float]:
    """{rule: seconds its jobs spent in their own timed work}, from the run's outputs: the
    training loops (train config.json), drawing samples, the likelihood ODE solves (nll.json)
    and the snapshots' sampling (selection.csv). The rest of a job's time is starting Python,
    imports, loading and writing files, and FID / feature work these files do not time."""
    select = 0.0
    for table in run.glob("checkpoints/*/*/selection.csv"):
        with open(table) as f:
            select += sum(float(r["seconds"]) for r in csv.DictReader(f))
    return {"train": _json_seconds(run, "checkpoints/*/*/config.json"),
            "sample": drawing_seconds(run),
            "likelihood": _json_seconds(run, "metrics/*/*/nll.json"),
            "select_checkpoint": select}


def snakemake_wall(run: Path) -> float | None:
    """Elapsed seconds of the run's newest Snakemake log (None if it has none)."""
    logs = sorted((run / ".snakemake/log").glob("*.snakemake.log"))
    found = re.findall(r"Elapsed time: (\d+):(\d+):([\d.]+)", logs[-1].read_text()) if logs else []
    return None if not found else 3600 * int(found[-1][0]) + 60 * int(found[-1][1]) + float(found[-1][2])


def print_floor(run: Path, cores: int) -> None:
    """Jobs' seconds split into timed work and the rest, and the wall-time floor of the work."""
    stages, work = stage_times(run), timed_work(run)
    print("\n| rule | jobs' s | timed work s | rest s |\n|---|---|---|---|")
    for rule, s in sorted(stages.items(), key=lambda kv: -kv[1]["wall"]):
        w = work.get(rule, 0.0)
        print(f"| {rule} | {s['wall']:.0f} | {w:.0f} | {s['wall'] - w:.0f} |")
    total, done = sum(s["wall"] for s in stages.values()), sum(work.values())
    print(f"| total | {total:.0f} | {done:.0f} | {total - done:.0f} |")
    wall = snakemake_wall(run)
    print(f"\n- floor on {cores} cores (the timed work alone, perfectly packed): {done / cores:.0f} s; "
          f"all jobs packed with no idle core: {total / cores:.0f} s"
          + (f"; this run's wall time: {wall:.0f} s" if wall else ""))


def print_stage_table(run: Path, before: Path | None) -> None:
    now = stage_times(run)
    old = stage_times(before) if before else {}
    total = sum(s["wall"] for s in now.values())
    head = "| stage | jobs | job wall s (sum) | CPU s | share |"
    sep = "|---|---|---|---|---|"
    if old:
        head += " before: jobs | before: wall s | before: CPU s | CPU now / before |"
        sep += "---|---|---|---|"
    print(head + "\n" + sep)
    for rule, s in sorted(now.items(), key=lambda kv: -kv[1]["wall"]):
        line = f"| {rule} | {s['jobs']} | {s['wall']:.0f} | {s['cpu']:.0f} | {s['wall'] / total:.0%} |"
        if old and rule in old:
            o = old[rule]
            line += f" {o['jobs']} | {o['wall']:.0f} | {o['cpu']:.0f} | {s['cpu'] / o['cpu']:.2f} |"
        print(line)
    line = f"| total | {sum(s['jobs'] for s in now.values())} | {total:.0f} | " \
           f"{sum(s['cpu'] for s in now.values()):.0f} | 100% |"
    if old:
        old_cpu, cpu = (sum(s["cpu"] for s in d.values()) for d in (old, now))
        line += f" {sum(s['jobs'] for s in old.values())} | " \
                f"{sum(s['wall'] for s in old.values()):.0f} | {old_cpu:.0f} | {cpu / old_cpu:.2f} |"
    print(line)
    for name, folder in (("this run", run), ("before", before)):
        if folder is None:
            continue
        drawing, wall = sampling_split(folder)
        jobs = stage_times(folder).get("sample", {}).get("jobs", 0)
        if wall:
            print(f"\n- sample rule, {name}: {wall:.0f} s of job time, {drawing:.0f} s drawing samples, "
                  f"{wall - drawing:.0f} s ({(wall - drawing) / max(jobs, 1):.1f} s per job) starting "
                  "Python, importing torch, loading the checkpoint and writing outputs")


def profile(run: Path, top: int = 6) -> None:
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from scoresde import dsm_loss, log_likelihood, pc_sample, uniform_dequantize
    from scoresde.data import load_dataset
    from scoresde.stages.common import checkpoint_score_fn, load_score_model

    torch.set_num_threads(1)
    model, sde, meta = load_score_model(run / "checkpoints/digits/vp/best.pt", torch.device("cpu"))
    score_fn = checkpoint_score_fn(sde, model, meta)
    k = load_dataset("digits", "test").x[:100]
    x = 2 * uniform_dequantize(k, 17, torch.Generator().manual_seed(0)) - 1
    train_net = model.train().requires_grad_(True)
    opt = torch.optim.Adam(train_net.parameters(), lr=1e-4)
    batch = x[torch.arange(128) % len(x)]

    def train_steps():
        for _ in range(5):
            loss = dsm_loss(train_net, sde, batch, generator=torch.Generator().manual_seed(1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(train_net.parameters(), 1.0)
            opt.step()

    def sample():
        model.eval().requires_grad_(False)
        with torch.no_grad():
            pc_sample(score_fn, sde, (400, 1, 8, 8), steps=5, generator=torch.Generator().manual_seed(2))

    def likelihood():
        log_likelihood(score_fn, sde, x, rtol=1e-3, atol=1e-3, generator=torch.Generator().manual_seed(3))

    for name, work in (("train: 5 steps, batch 128", train_steps),
                       ("sample: PC, 5 steps, 400 samples", sample),
                       ("likelihood: 100 test images, rtol 1e-3", likelihood)):
        work()  # warm-up
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            work()
        events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
        total = sum(e.self_cpu_time_total for e in events)
        print(f"\n### {name}: top operators by self CPU time\n")
        print("| operator | calls | self CPU ms | share |\n|---|---|---|---|")
        for e in events[:top]:
            print(f"| {e.key} | {e.count} | {e.self_cpu_time_total / 1e3:.1f} | "
                  f"{e.self_cpu_time_total / total:.0%} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="folder of a finished snakemake run")
    ap.add_argument("--before", type=Path, help="an older run of the same config, for comparison")
    ap.add_argument("--cores", type=int, default=os.cpu_count(),
                    help="cores the run had, for the floor (default: this machine's)")
    ap.add_argument("--profile", action="store_true", help="torch profiler on train / sample / likelihood")
    args = ap.parse_args(argv)
    if not (args.run / "logs/benchmarks").is_dir():
        print(f"error: {args.run}/logs/benchmarks does not exist; run snakemake there first",
              file=sys.stderr)
        return 2
    print_stage_table(args.run, args.before)
    print_floor(args.run, args.cores)
    if args.profile:
        profile(args.run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
