"""The report stage: tidy tables, figures, the paper's orderings (with uncertainty), provenance.

Entry point: :func:`build_report`. Its parts, one module each:

* :mod:`~scoresde.report.load`: reading the FID and likelihood JSONs (fields listed there),
  :class:`~scoresde.report.load.ReportData` (what every builder reads);
* :mod:`~scoresde.report.uncertainty`: intervals of FIDs and bits/dim and of their differences
  (paired bootstrap), and the held / not held / undecided rule;
* :mod:`~scoresde.report.orderings`: the paper's orderings decided with those intervals;
* :mod:`~scoresde.report.tables`, :mod:`~scoresde.report.paper`: the tables, the paper's numbers;
  :mod:`~scoresde.report.bounds`: the likelihood table of every bound on log P(k);
* :mod:`~scoresde.report.plots`, :mod:`~scoresde.report.figures`: the figures (``FIGURE_BUILDERS``);
* :mod:`~scoresde.report.sections`: the page's sections in order (``SECTION_BUILDERS``);
* :mod:`~scoresde.report.render`: HTML through the Jinja2 template ``templates/report.html.j2``
  and Markdown; :mod:`~scoresde.report.provenance`; :mod:`~scoresde.report.outputs` (CSV / DVC).

Optional inputs, located from the JSONs' ``dataset`` and ``sde`` fields under the documented
layout: ``{checkpoints_dir}/{dataset}/{sde}/train_log.csv`` (step, loss, ...),
``{checkpoints_dir}/{dataset}/{sde}/selection.csv`` (step, fid, best) and
``{samples_dir}/{dataset}/{sde}/{case}.pt`` (``{"images": uint8 (N, C, H, W)}``), ``case`` being
the FID JSON's file stem; Snakemake ``benchmark:`` TSVs (column ``s``). Missing optional files only
drop their figure.

Outputs in ``out_dir``: ``metrics.csv``, ``likelihood.csv``, ``report.html`` (self-contained,
figures embedded as base64 PNG), ``report.md`` (links ``figures/*.png``) and ``figures/``; and,
for ``dvc exp show`` / ``dvc plots``, ``metrics.json`` (flat: ``{dataset}/{sde}/{case}/fid``,
``.../kid`` and ``{dataset}/{sde}/bpd``), ``fid_vs_steps.csv`` and ``train_loss.csv``.

Adding a section: a function ``(data: ReportData, built: Built) -> Section | list | None`` added
to ``sections.SECTION_BUILDERS`` (or passed as ``build_report(sections=...)``). Adding a figure:
a function ``(data: ReportData, dataset) -> {name: (Figure, caption)}`` added to
``figures.FIGURE_BUILDERS`` (or ``build_report(figures=...)``), and its names to
``figures.expected_figures`` when the workflow should declare them as outputs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from scoresde.report.bounds import LIKELIHOOD_COLUMNS, bound_rows, bounds_table
from scoresde.report.figures import (
    FIGURE_BUILDERS,
    expected_figures,
    figure_name,
    make_figures,
)
from scoresde.report.load import (
    FID_COLUMNS,
    NLL_COLUMNS,
    ReportData,
    load_fid_results,
    load_nll_results,
    sampler_kind,
)
from scoresde.report.orderings import (
    ordering_corrector_only_worst,
    ordering_ode_fewer_nfe,
    ordering_pc_beats_predictor,
    ordering_subvp_lowest_bpd,
    ordering_tweedie_lowers_fid,
    paper_orderings,
    tweedie_pairs,
)
from scoresde.report.outputs import flat_metrics, train_loss_table, write_csvs, write_dvc_files, write_text
from scoresde.report.paper import PAPER_TAG, paper_bpd, paper_fid, paper_reference_table
from scoresde.report.provenance import git_commit, hardware, package_versions, provenance, stage_times
from scoresde.report.render import render_html, render_markdown
from scoresde.report.sections import SECTION_BUILDERS, Built, Section, build_sections
from scoresde.report.tables import likelihood_table, md_table, sweep_table

__all__ = [
    "FID_COLUMNS", "FIGURE_BUILDERS", "LIKELIHOOD_COLUMNS", "NLL_COLUMNS", "PAPER_TAG",
    "SECTION_BUILDERS", "Built", "ReportData", "Section", "bound_rows", "bounds_table",
    "build_report", "expected_figures", "figure_name", "flat_metrics", "git_commit", "hardware",
    "likelihood_table", "load_fid_results", "load_nll_results", "make_figures", "md_table",
    "ordering_corrector_only_worst", "ordering_ode_fewer_nfe", "ordering_pc_beats_predictor",
    "ordering_subvp_lowest_bpd", "ordering_tweedie_lowers_fid", "package_versions", "paper_bpd",
    "paper_fid", "paper_orderings", "paper_reference_table", "provenance", "render_html",
    "render_markdown", "sampler_kind", "stage_times", "sweep_table", "train_loss_table",
    "tweedie_pairs",
]  # fmt: skip


def build_report(
    fid_files: Sequence[str | os.PathLike],
    nll_files: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    checkpoints_dir: str | os.PathLike | None = None,
    samples_dir: str | os.PathLike | None = None,
    config: dict | None = None,
    benchmark_files: Sequence[str | os.PathLike] = (),
    title: str = "Score-SDE reproduction report",
    repo_dir: str | os.PathLike | None = None,
    confidence: float = 0.95,
    inputs: dict | None = None,
    controllable_files: Sequence[str | os.PathLike] = (),
    sections=SECTION_BUILDERS,
    figures=FIGURE_BUILDERS,
) -> dict:
    """Write metrics.csv, likelihood.csv, report.html, report.md and figures/ into ``out_dir``.

    ``fid_files`` / ``nll_files``: the per-case FID JSONs and per-SDE likelihood JSONs (fields:
    :mod:`scoresde.report.load`). ``checkpoints_dir`` / ``samples_dir``: roots of the documented
    layout, for training-loss, checkpoint-selection and sample-grid figures. ``config``: the
    resolved configuration (shown verbatim). ``benchmark_files``: Snakemake benchmark TSVs for
    wall time per stage. ``repo_dir``: where to ask git for the commit. ``confidence``: level of
    every interval and ordering decision. ``inputs``: further named files for added sections.
    ``controllable_files``: the controllable stages' metrics JSONs (:mod:`scoresde.report.controllable`:
    reports/controllable.csv, its figures and a section before the figures).
    ``sections`` / ``figures``: the builders to run (default: all of the report's).
    Also writes the DVC files ``metrics.json``, ``fid_vs_steps.csv`` and ``train_loss.csv``.
    Returns the paths written plus the orderings as ``(statement, verdict, evidence)``, verdict
    True (held), False (not held) or None (undecided).
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence} must lie strictly between 0 and 1 (e.g. 0.95)")
    out_dir = Path(out_dir)
    data = ReportData(
        fid=load_fid_results(fid_files), nll=load_nll_results(nll_files), out_dir=out_dir,
        confidence=confidence, checkpoints_dir=checkpoints_dir, samples_dir=samples_dir,
        config=config, inputs={k: Path(v) for k, v in (inputs or {}).items()},
    )  # fmt: skip
    metrics_csv, likelihood_csv = write_csvs(data.fid, data.nll, out_dir, confidence)
    dvc_files = write_dvc_files(data.fid, data.nll, out_dir, checkpoints_dir)
    built = Built(orderings=paper_orderings(data.fid, data.nll, confidence),
                  figures=make_figures(data, out_dir / "figures", figures),
                  provenance=provenance(config, benchmark_files, repo_dir))  # fmt: skip
    page = build_sections(data, built, sections)
    if controllable_files:
        from scoresde.report.controllable import controllable_section

        extra = controllable_section(controllable_files, out_dir)
        at = next((i for i, sec in enumerate(page) if sec.heading == "Figures"), len(page))
        page.insert(at, extra["section"])
        built.figures += extra["figures"]
    html_path, md_path = out_dir / "report.html", out_dir / "report.md"
    write_text(html_path, render_html(page, title))
    write_text(md_path, render_markdown(page, title, "figures"))
    return {
        "metrics_csv": metrics_csv, "likelihood_csv": likelihood_csv, "html": html_path,
        "markdown": md_path, "figures": [f["path"] for f in built.figures],
        "orderings": built.orderings, **dvc_files,
    }  # fmt: skip
