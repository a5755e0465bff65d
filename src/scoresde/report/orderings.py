"""The paper's qualitative claims, each decided on this run's numbers with their uncertainty.

Every ordering is a list of comparisons (see :mod:`scoresde.report.uncertainty`); each
comparison is held, not held or undecided. The ordering is **held** when every comparison is
held, **not held** when at least one is decided the other way, and **undecided** otherwise
(including when the run has no comparable cases). Each ordering function returns
``(statement, verdict, evidence)``, verdict True / False / None.
"""

from __future__ import annotations

import pandas as pd

from scoresde.report.formatting import fmt, missing, with_ci
from scoresde.report.load import describe
from scoresde.report.uncertainty import (
    HELD,
    NOT_HELD,
    UNDECIDED,
    bpd_difference,
    bpd_interval,
    fid_difference,
    fid_interval,
)

GROUP = ("dataset", "feature_extractor", "sde")
MARK = {HELD: "✓", NOT_HELD: "✗", UNDECIDED: "?"}
VERDICT_TEXT = {HELD: "held", NOT_HELD: "not held", UNDECIDED: "undecided"}


def combine(verdicts) -> bool | None:
    """held if all held; not held if any is decided against; undecided otherwise."""
    verdicts = list(verdicts)
    if any(v is NOT_HELD for v in verdicts):
        return NOT_HELD
    return HELD if verdicts and all(v is HELD for v in verdicts) else UNDECIDED


def _verdict(statement: str, checks: list[tuple[bool | None, str]], none_why: str):
    if not checks:
        return statement, UNDECIDED, f"not decidable: {none_why}"
    counts = {v: sum(c is v for c, _ in checks) for v in (HELD, NOT_HELD, UNDECIDED)}
    head = (f"{counts[HELD]} held, {counts[NOT_HELD]} not held, {counts[UNDECIDED]} undecided "
            f"of {len(checks)} comparisons:")  # fmt: skip
    text = "".join(f"\n{MARK[v]} {t}" for v, t in checks)
    return statement, combine(c for c, _ in checks), head + text


def _fid(r: dict, confidence: float) -> str:
    return f"FID {with_ci(r['fid'], *fid_interval(r, confidence))}"


def _diff(cmp: dict) -> str:
    d = with_ci(cmp["d"], cmp["lo"], cmp["hi"])
    return f"difference {'+' if cmp['d'] > 0 else ''}{d} ({cmp['how']})"


def _records(df: pd.DataFrame, **where) -> list[dict]:
    recs = df.to_dict("records")
    return [r for r in recs if all(r[k] == v for k, v in where.items()) and not missing(r["fid"])]


def _eq(x, y) -> bool:
    if missing(x) or missing(y):
        return missing(x) and missing(y)
    return bool(x == y)


def same(a: dict, b: dict, keys) -> bool:
    return all(_eq(a[k], b[k]) for k in keys)


def lower_fid(a: dict, b: dict, confidence: float) -> tuple[bool | None, str]:
    """Comparison "a has a lower FID than b", with both FIDs' and the difference's intervals."""
    cmp = fid_difference(a, b, confidence)
    text = (f"{describe(a)} {_fid(a, confidence)} vs {describe(b)} {_fid(b, confidence)}; "
            f"{_diff(cmp)}")  # fmt: skip
    return cmp["verdict"], text


def ordering_pc_beats_predictor(fid: pd.DataFrame, sde: str = "ve", confidence: float = 0.95):
    """Table 1: PC (corrector + predictor) has lower FID than P-only at equal steps."""
    statement = f"PC beats predictor-only at equal steps ({sde.upper()} SDE)"
    recs = _records(fid, sde=sde)
    keys = (*GROUP, "predictor", "steps", "denoise")
    checks = [lower_fid(c, p, confidence)
              for p in recs if p["kind"] == "predictor"
              for c in recs if c["kind"] == "pc" and same(p, c, keys)]  # fmt: skip
    return _verdict(statement, checks, f"no {sde.upper()} PC and P-only cases with equal steps")


def ordering_corrector_only_worst(fid: pd.DataFrame, confidence: float = 0.95):
    """Table 1: corrector-only has a higher FID than the worst P-only / PC case using no more NFE."""
    statement = "Corrector-only sampling is worst (at an equal or smaller NFE budget)"
    recs, checks = _records(fid), []
    for c in (r for r in recs if r["kind"] == "corrector"):
        rivals = [r for r in recs if r["kind"] in ("predictor", "pc") and same(r, c, GROUP)
                  and r["nfe"] <= c["nfe"]]  # fmt: skip
        if rivals:
            worst = max(rivals, key=lambda r: r["fid"])
            verdict, text = lower_fid(worst, c, confidence)
            checks.append((verdict, f"worst rival with NFE <= {fmt(c['nfe'])}: {text}"))
    return _verdict(statement, checks, "no corrector-only case with a P-only/PC rival")


def ordering_ode_fewer_nfe(fid: pd.DataFrame, confidence: float = 0.95):
    """The probability-flow ODE reaches its FID with fewer NFE than fixed-step samplers.

    For each ODE case: held when every fixed-step case using no more NFE has a decidedly higher
    FID (or none uses so few), not held when one has a decidedly lower FID, else undecided.
    """
    statement = "Probability-flow ODE needs fewer NFE for a given FID than fixed-step samplers"
    recs, checks = _records(fid), []
    for o in (r for r in recs if r["kind"] == "ode"):
        rivals = [r for r in recs if r["kind"] in ("predictor", "pc", "corrector")
                  and same(r, o, GROUP)]  # fmt: skip
        if not rivals:
            continue
        head = f"{describe(o)}: {_fid(o, confidence)} at NFE {fmt(o['nfe'])}"
        cheap = [r for r in rivals if r["nfe"] <= o["nfe"]]
        if not cheap:
            checks.append((HELD, f"{head}; every fixed-step case uses more NFE"))
            continue
        cmps = [(fid_difference(o, r, confidence), r) for r in cheap]
        best_cmp, best = min(cmps, key=lambda cr: cr[1]["fid"])
        text = (f"{head}; best fixed-step case with NFE <= that: {describe(best)} NFE "
                f"{fmt(best['nfe'])} {_fid(best, confidence)}; {_diff(best_cmp)}")  # fmt: skip
        checks.append((combine(c["verdict"] for c, _ in cmps), text))
    return _verdict(statement, checks, "no ODE case with fixed-step rivals")


def is_tweedie(r: dict) -> bool:
    """False only when the case's metadata says its denoising is not a Tweedie step."""
    flag = r.get("denoise_is_tweedie")
    return True if missing(flag) else bool(flag)


def tweedie_pairs(fid: pd.DataFrame) -> list[tuple[dict, dict]]:
    """(without, with) denoising records of the same dataset/SDE/sampler/steps whose denoising is
    a real Tweedie step (``denoise_is_tweedie`` not false)."""
    recs = _records(fid)
    keys = (*GROUP, "sampler", "predictor", "corrector", "steps")
    return [
        (off, on)
        for off in recs if not off["denoise"]
        for on in recs if on["denoise"] and is_tweedie(on) and same(on, off, keys)
    ]  # fmt: skip


def ordering_tweedie_lowers_fid(fid: pd.DataFrame, confidence: float = 0.95):
    """A final Tweedie denoising step lowers FID (same sampler, steps and SDE)."""
    statement = "Tweedie denoising lowers FID"
    checks = [lower_fid(on, off, confidence) for off, on in tweedie_pairs(fid)]
    skipped = sum(1 for r in _records(fid) if r["denoise"] and not is_tweedie(r))
    verdict = _verdict(statement, checks, "no case run both with and without denoising")
    if skipped:
        note = f"\n({skipped} case(s) left out: their final denoising is not a Tweedie step)"
        verdict = (*verdict[:2], verdict[2] + note)
    return verdict


def ordering_subvp_lowest_bpd(nll: pd.DataFrame, confidence: float = 0.95):
    """Table 2: the sub-VP SDE gives the lowest bits/dim (against every other SDE)."""
    statement = "Sub-VP has the lowest bits/dim"
    checks = []
    for dataset, group in nll.dropna(subset=["bpd"]).groupby("dataset", sort=True):
        recs = {r["sde"]: r for r in group.to_dict("records")}
        if "subvp" not in recs or len(recs) < 2:
            continue
        sub = recs["subvp"]
        for sde, other in sorted(recs.items()):
            if sde == "subvp":
                continue
            cmp = bpd_difference(sub, other, confidence)
            text = (f"{dataset}: subvp {with_ci(sub['bpd'], *bpd_interval(sub, confidence))} vs "
                    f"{sde} {with_ci(other['bpd'], *bpd_interval(other, confidence))}; {_diff(cmp)}")
            checks.append((cmp["verdict"], text))
    return _verdict(statement, checks, "no dataset with sub-VP and another SDE")


COPY_LIMIT = 0.05  # a run "does not copy" when every case's memorised share is below 5%


def ordering_no_copies(fid: pd.DataFrame, confidence: float = 0.95):
    """No case's samples are near-copies of training images (not a claim of the paper; the
    check FID cannot make): held when every case's memorised interval lies below 5%, not held
    when one lies above, undecided otherwise; None (no verdict) when no case has the share."""
    statement = f"Samples are new images, not copies of training images (memorised < {COPY_LIMIT:.0%})"
    checks = []
    for r in _records(fid):
        lo, hi = r.get("memorised_ci_low"), r.get("memorised_ci_high")
        if missing(r.get("memorised")) or missing(lo) or missing(hi):
            continue
        verdict = HELD if hi < COPY_LIMIT else NOT_HELD if lo > COPY_LIMIT else UNDECIDED
        checks.append((verdict, f"{describe(r)}: memorised {with_ci(r['memorised'], lo, hi)}"))
    return _verdict(statement, checks, "") if checks else None


def paper_orderings(fid: pd.DataFrame, nll: pd.DataFrame,
                    confidence: float = 0.95) -> list[tuple[str, bool | None, str]]:
    """All orderings the paper reports, each as (statement, verdict, evidence)."""
    return [
        ordering_pc_beats_predictor(fid, "ve", confidence),
        ordering_corrector_only_worst(fid, confidence),
        ordering_ode_fewer_nfe(fid, confidence),
        ordering_tweedie_lowers_fid(fid, confidence),
        ordering_subvp_lowest_bpd(nll, confidence),
    ] + [v for v in (ordering_no_copies(fid, confidence),) if v is not None]
