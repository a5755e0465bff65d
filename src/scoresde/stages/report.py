"""report: tables, figures and the paper's orderings, through `scoresde.report.build_report`."""

from __future__ import annotations

from scoresde.stages.common import log


def run(params: dict, fid_files: list[str], nll_files: list[str], out_dir: str,
        checkpoints_dir: str | None = None, samples_dir: str | None = None,
        benchmark_files: list[str] = (), controllable_files: list[str] = (),
        check_files: list[str] = ()) -> dict:
    from scoresde.report import build_report

    result = build_report(fid_files, nll_files, out_dir, checkpoints_dir=checkpoints_dir,
                          samples_dir=samples_dir, config=params,
                          benchmark_files=benchmark_files, title=params["report"]["title"],
                          confidence=params["report"]["confidence"],
                          controllable_files=controllable_files,
                          inputs={"metric_checks": check_files[0]} if check_files else None)
    for statement, held, evidence in result["orderings"]:
        verdict = {True: "held", False: "not held", None: "undecided"}[held]
        log(f"{statement}: {verdict}. {evidence}")
    log(f"report written to {result['html']}")
    return result
