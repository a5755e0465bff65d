"""FID-vs-NFE figure and the fast-sampler goal table on a small synthetic metrics table."""

import pandas as pd
from matplotlib.figure import Figure

from scoresde.report.nfe import (
    goal_table,
    goal_table_text,
    plot_fid_vs_nfe,
    plot_fid_vs_nfe_panels,
    reference,
)

COLUMNS = ["dataset", "sde", "sampler", "predictor", "corrector", "steps", "denoise", "nfe", "fid"]
ROWS = [
    ("digits", "vp", "pc", "reverse_diffusion", "langevin", 1000, True, 2001, 10.0),
    ("digits", "vp", "pc", "reverse_diffusion", "langevin", 1000, False, 2000, 12.0),
    ("digits", "vp", "pc", "reverse_diffusion", "langevin", 10, True, 21, 40.0),
    ("digits", "vp", "ode-dpmpp-2m", "dpmpp-2m", "none", 10, False, 10, 17.0),   # 1.7x: held
    ("digits", "vp", "ode-dpmpp-2m", "dpmpp-2m", "none", 10, True, 11, 15.0),    # 11 NFE: not within 10
    ("digits", "vp", "ode-dpm-solver-3", "dpm-solver-3", "none", 6, True, 19, 12.5),  # 1.25x: missed
    ("digits", "ve", "ode-edm-heun", "edm-heun", "none", 5, False, 10, 30.0),    # no PC: unknown
]


def table():
    return pd.DataFrame(ROWS, columns=COLUMNS)


def test_reference_is_the_longest_pc_run_at_its_better_setting():
    ref = reference(table(), "vp")
    assert (ref["steps"], ref["fid"]) == (1000, 10.0)
    assert reference(table(), "ve") is None


def test_goal_table_per_sde_and_budget():
    goals = goal_table(table()).set_index(["sde", "NFE budget"])
    vp10, vp20 = goals.loc[("vp", 10)], goals.loc[("vp", 20)]
    assert vp10["best case"] == "ode-dpmpp-2m_10_none" and vp10["FID / reference"] == 1.7
    assert bool(vp10["held"]) is True
    assert vp20["best case"] == "ode-dpm-solver-3_6_tweedie" and vp20["FID / reference"] == 1.25
    assert bool(vp20["held"]) is False
    assert goals.loc[("ve", 10)]["held"] is None


def test_goal_table_text_formats_numbers_and_fills_every_verdict():
    """Numbers as the sweep table's (4 significant digits), a verdict in words in every row."""
    rows = [*ROWS, ("digits", "vp", "sde-dpmpp-2m-sde", "dpmpp-2m-sde", "none", 9, True, 10,
                    16.123456789)]
    text = goal_table_text(pd.DataFrame(rows, columns=COLUMNS)).set_index(["sde", "NFE budget"])
    vp10 = text.loc[("vp", 10)]
    assert vp10["best case"] == "sde-dpmpp-2m-sde_9_tweedie" and vp10["best FID"] == "16.12"
    assert vp10["FID / reference"] == "1.612" and vp10["held"] == "held"
    assert text.loc[("vp", 20)]["held"] == "not held"
    assert text.loc[("ve", 10)]["held"] == "no PC reference"
    assert text.loc[("ve", 10)]["reference FID"] == "n/a"
    assert text["held"].map(lambda v: isinstance(v, str) and v != "").all()


def test_plot_draws_every_sampler_and_the_reference_level():
    fig = plot_fid_vs_nfe(table(), "vp", "vp SDE")
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    labels = [line.get_label() for line in ax.get_lines()]
    assert any(lab.startswith("PC1000") for lab in labels)
    ref_line = next(line for line in ax.get_lines() if line.get_label().startswith("PC1000"))
    assert list(ref_line.get_ydata()) == [10.0, 10.0]
    data_lines = [line for line in ax.get_lines() if not line.get_label().startswith(("PC1000", "1."))]
    drawn = {(float(x), float(y)) for line in data_lines for x, y in zip(*line.get_data(), strict=True)}
    assert drawn == {(21.0, 40.0), (10.0, 17.0), (11.0, 15.0), (19.0, 12.5)}
    assert len(plot_fid_vs_nfe_panels(table(), "FID vs NFE").axes) == 2


def _with_replicates(fid_of_ref: float, fid_of_best: float, spread: float, n: int = 200):
    """Two cases resampled on the same indices: replicate j of both shares the noise e_j."""
    import numpy as np

    e = np.random.default_rng(0).normal(0.0, spread, n)
    common = {"bootstrap_seed": 0, "n_samples": 400, "n_reference": 1500, "dataset": "digits",
              "feature_extractor": "x"}
    rows = [("digits", "vp", "pc", "reverse_diffusion", "langevin", 200, True, 401, fid_of_ref),
            ("digits", "vp", "ode-dpmpp-2m", "dpmpp-2m", "none", 10, False, 10, fid_of_best)]
    df = pd.DataFrame(rows, columns=COLUMNS)
    for k, v in common.items():
        df[k] = v
    # the shared noise cancels in FID_best - 1.8 FID_ref only through pairing; a small own noise
    own = np.random.default_rng(1).normal(0.0, 0.01, n)
    df["fid_bootstrap"] = [list(fid_of_ref + e), list(fid_of_best + 1.8 * e + own)]
    return df


def test_goal_verdict_comes_from_the_paired_bootstrap_interval():
    held = goal_table(_with_replicates(1.0, 1.70, spread=0.5)).set_index(["sde", "NFE budget"])
    assert bool(held.loc[("vp", 10)]["held"]) is True    # 1.70 < 1.8 beyond the paired noise
    close = goal_table(_with_replicates(1.0, 1.799, spread=0.5)).set_index(["sde", "NFE budget"])
    assert close.loc[("vp", 10)]["held"] is None         # within the noise: undecided
    missed = goal_table(_with_replicates(1.0, 1.90, spread=0.5)).set_index(["sde", "NFE budget"])
    verdict = missed.loc[("vp", 10)]["held"]
    assert verdict is not None and not bool(verdict)  # not held (a numpy bool in an all-bool column)
    interval = held.loc[("vp", 10)]["[95% interval]"]
    lo, hi = (float(v) for v in interval.strip("[]").split(","))
    assert lo < 1.70 < hi
