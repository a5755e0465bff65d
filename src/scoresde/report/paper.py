"""The paper's numbers (Song et al., ICLR 2021, CIFAR-10), quoted beside ours only for the same case."""

from __future__ import annotations

import pandas as pd

from scoresde.report.formatting import is_none, missing
from scoresde.report.load import ode_method

PAPER_TAG = "paper, CIFAR-10, different scale"

# Song et al. 2021, Table 1: CIFAR-10 FID, DDPM-size nets, N = 1000 (as in DESIGN.md).
# (sde, kind, predictor or ODE method, corrector, steps, FID, the paper's name for the case)
PAPER_FID = (
    ("ve", "predictor", "reverse_diffusion", "none", 1000, 4.79, "reverse diffusion P1000"),
    ("ve", "predictor", "reverse_diffusion", "none", 2000, 4.74, "reverse diffusion P2000"),
    ("ve", "pc", "reverse_diffusion", "langevin", 1000, 3.60, "reverse diffusion PC1000"),
    ("ve", "corrector", "none", "langevin", 2000, 20.43, "corrector only C2000"),
    # "probability flow P1000": the PF ODE discretised in N steps; our closest case is the
    # fixed-step Euler ODE sampler with 1000 steps. PF PC1000 has no counterpart here.
    ("ve", "ode", "euler", "none", 1000, 15.41, "probability flow P1000"),
    ("ve", "ode_pc", "euler", "langevin", 1000, 3.51, "probability flow PC1000"),
    ("vp", "predictor", "reverse_diffusion", "none", 1000, 3.21, "reverse diffusion P1000"),
    ("vp", "pc", "reverse_diffusion", "langevin", 1000, 3.18, "reverse diffusion PC1000"),
    ("vp", "ode", "euler", "none", 1000, 3.59, "probability flow P1000"),
    ("vp", "ode_pc", "euler", "langevin", 1000, 3.06, "probability flow PC1000"),
)
# Table 2: CIFAR-10 NLL (bits/dim); (sde, bpd, model). Table 3: FID of the deep models.
PAPER_BPD = (("vp", 3.16, "DDPM++ cont."), ("subvp", 3.02, "DDPM++ cont."),
             ("subvp", 2.99, "DDPM++ cont. (deep)"))  # fmt: skip
PAPER_FID_DEEP = (("ve", 2.20, "NCSN++ cont. (deep)"), ("vp", 2.41, "DDPM++ cont. (deep)"),
                  ("subvp", 2.41, "DDPM++ cont. (deep)"))  # fmt: skip



def paper_fid(row: dict) -> tuple[float, str] | None:
    """The paper's Table 1 (FID, case name) for the same SDE/sampler/steps, or None."""
    kind = row["kind"]
    pred = ode_method(row) if kind == "ode" else str(row["predictor"])
    corr = "none" if is_none(row["corrector"]) else str(row["corrector"])
    for sde, pkind, ppred, pcorr, steps, fid, name in PAPER_FID:
        same = (sde, pkind, ppred, pcorr) == (row["sde"], kind, pred, corr)
        if same and not missing(row["steps"]) and int(row["steps"]) == steps:
            return fid, name
    return None


def paper_bpd(sde: str) -> tuple[float, str] | None:
    """The paper's Table 2 bits/dim for the same SDE (the non-deep model), or None."""
    return next(((b, m) for s, b, m in PAPER_BPD if s == sde), None)



def paper_reference_table() -> pd.DataFrame:
    """The paper's CIFAR-10 numbers quoted in DESIGN.md (Tables 1-3), for reference."""
    def row(table, sde, case, metric, value):
        return {"paper table": table, "SDE": sde, "case / model": case, "metric": metric,
                "value (paper, CIFAR-10)": value}  # fmt: skip

    rows = [row("Table 1", s, n, "FID", v) for s, _, _, _, _, v, n in PAPER_FID]
    rows += [row("Table 2", s, m, "bits/dim", v) for s, v, m in PAPER_BPD]
    rows += [row("Table 3", s, m, "FID", v) for s, v, m in PAPER_FID_DEEP]
    return pd.DataFrame(rows)
