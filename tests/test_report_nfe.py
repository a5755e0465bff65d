"""FID-vs-NFE figure and the fast-sampler goal table on a small synthetic metrics table."""

import pandas as pd
from matplotlib.figure import Figure

from scoresde.report.nfe import goal_table, plot_fid_vs_nfe, plot_fid_vs_nfe_panels, reference

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
