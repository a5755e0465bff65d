"""The report's sections, in order: each built by one function from the loaded data.

A section builder is ``(data: ReportData, built: Built) -> Section | None`` (None: nothing to
show). ``SECTION_BUILDERS`` lists them in the order of the page; both the HTML and the
Markdown renderer walk the same sections. To add a section, write a builder (in its own module if
it is large) and put it into that tuple where it should appear, or pass
``build_report(..., sections=(*SECTION_BUILDERS, my_builder))``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from scoresde.report import nfe
from scoresde.report.bounds import bound_rows, bounds_table, tightest_text
from scoresde.report.load import ReportData
from scoresde.report.paper import PAPER_TAG, paper_reference_table
from scoresde.report.tables import (
    fid_column,
    kv_table,
    orderings_table,
    sweep_table,
)


@dataclass
class Section:
    """A heading (None: continues the previous section) and blocks, each ``(kind, payload)``:
    ``("text", str)``, ``("table", DataFrame)``, ``("pre", str)`` or ``("figures", [figure])``."""

    heading: str | None
    blocks: list[tuple[str, object]] = field(default_factory=list)


@dataclass
class Built:
    """What ``build_report`` computed before the sections: orderings, figures, provenance."""

    orderings: list
    figures: list[dict]
    provenance: dict


def _extractors(fid: pd.DataFrame) -> str:
    return ", ".join(sorted(set(fid["feature_extractor"]))) or "n/a"


def intro_section(data: ReportData, built: Built) -> Section:
    text = (
        "Song et al., Score-Based Generative Modeling through Stochastic Differential Equations "
        "(ICLR 2021), reproduced at a small scale. Every number is from this run except those "
        f"marked '{PAPER_TAG}': the paper's own CIFAR-10 results, quoted for orientation; "
        "dataset, network and training budget differ, so compare orderings, not values. FID and "
        f"KID are computed in the features of: {_extractors(data.fid)}. Intervals are "
        f"{data.confidence:.0%} intervals.")  # fmt: skip
    return Section(None, [("text", text)])


def orderings_section(data: ReportData, built: Built) -> Section:
    level = f"{data.confidence:.0%}"
    note = (
        "Qualitative claims of the paper (its CIFAR-10 experiments), checked on this run's numbers "
        "with their uncertainty. Each comparable pair of cases is decided from the "
        f"{level} interval of its difference: for FID a paired bootstrap (the two cases' FIDs "
        "recomputed on the same resamples of their samples and of the reference set), for "
        "bits/dim the per-image standard errors. held: every pair's interval excludes zero in the "
        "paper's direction; not held: at least one pair's interval excludes zero the other way; "
        "undecided: the remaining pairs' intervals contain zero, i.e. this run cannot tell the "
        "cases apart (more samples would), or there are no comparable cases. ✓ held, ✗ not "
        "held, ? undecided.")  # fmt: skip
    return Section("Paper orderings", [("text", note), ("table", orderings_table(built.orderings))])


def sweep_section(data: ReportData, built: Built) -> Section:
    fid, extractors = data.fid, _extractors(data.fid)
    table, paper_col = sweep_table(fid, data.confidence), f"FID ({PAPER_TAG})"
    text = (
        "One row per case (SDE x sampler x steps x final Tweedie denoising). FID and KID: lower "
        f"is better, in the features of {extractors}. {fid_column(data.confidence)}: the "
        "bootstrap interval (samples and reference set resampled, the replicates recentred on "
        "the estimate); KID is the mean ± standard deviation over subsets. Precision and density "
        "(fidelity), recall and coverage (diversity), memorised (near-copies of training "
        "images) with their bootstrap / Wilson intervals: see 'What the metrics see' for what "
        "each figure detects. NFE: score-network "
        "evaluations per sample. Sampling time: wall time to draw all samples of the case; the "
        "Tweedie on / off pair of a sampler and step count comes from one trajectory, so both "
        "rows show that run's time.")  # fmt: skip
    if fid["feature_extractor"].nunique() == 1:  # named above instead of in every row
        table = table.drop(columns="feature extractor")
    if len(table) and table[paper_col].astype(bool).any():
        text += (" The 'paper' column is the paper's CIFAR-10 FID (Table 1) where the paper has "
                 "the same SDE, sampler and step count.")  # fmt: skip
    elif len(table):
        table = table.drop(columns=paper_col)
        text += (" No case here has the SDE, sampler and step count of a case in the paper's "
                 "Table 1 (N = 1000 or 2000 steps), so no paper FID sits beside ours; the "
                 "paper's numbers are listed below.")  # fmt: skip
    return Section("Sampler sweep", [("text", text), ("table", table)])


def metric_checks_section(data: ReportData, built: Built) -> Section | None:
    """What the metrics see: held-out images with known defects (the check-metrics stage)."""
    from scoresde.report.figures_of_merit import QUESTIONS_TEXT, checks_table

    path = data.inputs.get("metric_checks")
    if path is None:
        return None
    table, result = checks_table(path)
    text = (
        f"{len(table) - 1} known defects applied to {result['rows'][0]['n']} held-out test images "
        f"of {result['dataset']}, each set scored like a sample set against the reference set "
        f"({result['n_reference']} images, less any equal to a held-out one), in the features of "
        f"{result['feature_extractor']}. A figure 'sees' a defect when its interval lies apart "
        "from the held-out images' own. Speckle: salt-and-pepper on 15% of the pixels of 30% of "
        "the images; blur: Gaussian, 0.6 px; contrast scaled by 0.7; classes missing: about 30% "
        "of the classes left out, the same count drawn from the others; training copies: "
        "training images. "
        + QUESTIONS_TEXT)  # fmt: skip
    return Section("What the metrics see", [("text", text), ("table", table)])


def goal_section(data: ReportData, built: Built) -> Section | None:
    """The fast-sampler goal: the best case within 10 / 20 NFE against the longest PC run."""
    if not len(data.fid):
        return None
    text = nfe.__doc__.split("\n\n")[1].replace("\n", " ") + (
        " 'held' is decided from the paired-bootstrap interval of FID_best - factor x FID_ref "
        "(undecided: the interval contains 0).")
    return Section("Fast samplers against the longest PC run",
                   [("text", text), ("table", nfe.goal_table_text(data.fid, data.confidence))])


def likelihood_section(data: ReportData, built: Built) -> Section:
    """Every bound on the test set's log P(k) per SDE (:mod:`scoresde.report.bounds`)."""
    note = (
        "Test-set negative log-likelihood in bits/dim (lower is better) from the probability-flow "
        "ODE: each row is an upper bound on -log2 P(k) / D, so the lowest is the tightest. "
        "uniform: the paper's uniform dequantisation; importance-weighted: the log of the mean "
        "importance weight of the same uniform draws (tighter as draws grow); truncated normal: "
        "i-DODE's training-free dequantisation, a bound on the discrete model of x(t0) / a(t0), "
        f"t0 in the JSON. ± one standard error over the test images, the {data.confidence:.0%} "
        "normal interval, and the difference to uniform paired over the same images; NFE: "
        "score-network evaluations per batch of the ODE solve (importance shares uniform's draws, "
        "solve and seconds). With a Hutchinson divergence the importance weights carry the probe "
        "noise, which biases that row low (exp of a noisy log-density overestimates the density): "
        "it is a guaranteed bound only with the exact divergence or many probes (docs/likelihood.md). "
        "The 'paper' column is the paper's CIFAR-10 uniform value for the same SDE (Table 2).")  # fmt: skip
    rows = bound_rows(data.nll, data.confidence)
    blocks = [("text", note), ("table", bounds_table(rows, data.confidence))]
    tightest = tightest_text(rows, data.confidence)
    return Section("Likelihood", blocks + ([("text", tightest)] if tightest else []))


def paper_section(data: ReportData, built: Built) -> Section:
    note = (
        "Every number in this table is the paper's (Song et al. 2021, CIFAR-10, 32x32 RGB, "
        "networks of 30-60M parameters trained for 1.3M steps), not ours: quoted for orientation "
        "only. Table 1: N = 1000 steps (P2000, C2000: 2000); Table 3: the deep continuous models.")
    return Section("The paper's CIFAR-10 numbers (different scale)",
                   [("text", note), ("table", paper_reference_table())])  # fmt: skip


def figures_section(data: ReportData, built: Built) -> Section:
    return Section("Figures", [("figures", built.figures)])


def provenance_sections(data: ReportData, built: Built) -> list[Section]:
    prov = built.provenance
    return [
        Section("Provenance", [("table", kv_table({"generated": prov["generated"],
                                                   "git commit": prov["git commit"]}))]),  # fmt: skip
        Section("Package versions", [("table", kv_table(prov["packages"]))]),
        Section("Hardware", [("table", kv_table(prov["hardware"]))]),
        Section("Wall time per job", [("table", prov["stage times"])]),
        Section("Resolved configuration", [("pre", prov["config"])]),
    ]


# The page, top to bottom. Add a section builder here.
SECTION_BUILDERS = (intro_section, orderings_section, sweep_section, metric_checks_section,
                    goal_section, likelihood_section, paper_section, figures_section,
                    provenance_sections)  # fmt: skip


def build_sections(data: ReportData, built: Built, builders=SECTION_BUILDERS) -> list[Section]:
    out = []
    for builder in builders:
        made = builder(data, built)
        out += [] if made is None else made if isinstance(made, list) else [made]
    return out
