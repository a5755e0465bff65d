"""Reading the pipeline's results: one row per FID case and per likelihood result.

FID JSON fields (``metrics/{dataset}/{sde}/fid/{case}.json``): ``dataset, sde, sampler,
predictor, corrector, steps, denoise, nfe, fid`` required; ``kid, kid_std, seconds,
n_samples, feature_extractor``, the bootstrap (``fid_ci_low, fid_ci_high, fid_bootstrap,
bootstrap_n, bootstrap_seed, n_reference``), ``denoise_is_tweedie`` (false: the case's
final denoising is not a Tweedie step, so it is left out of the Tweedie ordering) and
``seed_index`` (seed k of ``report.seeds``; the seeds of a case are merged into one row by
:func:`scoresde.report.seeds.merge_seeds`, with ``seeds`` and ``fid_seed_sd``) optional.
Likelihood JSON (``metrics/{dataset}/{sde}/nll.json``): ``dataset, sde, bpd`` required;
``bpd_sem, nfe, n_images, divergence, n_probes, rtol, atol``, ``bpd_per_image`` and ``bounds``
(one entry per bound on log P(k), :mod:`scoresde.report.bounds`) optional.
Every field is read from the files' contents, never parsed out of names.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from scoresde.report.formatting import is_none, missing
from scoresde.report.seeds import FIGURES, merge_seeds

FID_COLUMNS = [
    "dataset", "sde", "sampler", "predictor", "corrector", "steps", "denoise", "nfe", "fid",
    "kid", "kid_std", "seconds", "feature_extractor", "n_samples", "fid_ci_low", "fid_ci_high",
    "seeds", "fid_seed_sd", "kid_ci_low", "kid_ci_high",
    *(f"{key}{end}" for key in FIGURES for end in ("", "_ci_low", "_ci_high")),
    "memorised_heldout", "copy_z",
]  # fmt: skip
FIGURE_COLUMNS = FID_COLUMNS[FID_COLUMNS.index("kid_ci_low"):]  # numbers of the fid stage's new figures
NLL_COLUMNS = [
    "dataset", "sde", "bpd", "bpd_sem", "nfe", "n_images", "divergence", "n_probes", "rtol",
    "atol",
]  # fmt: skip
FID_REQUIRED = FID_COLUMNS[:9]
NLL_REQUIRED = NLL_COLUMNS[:3]
# kept beside the tidy columns (not written to metrics.csv): what the orderings need
FID_EXTRA = ["fid_bootstrap", "bootstrap_n", "bootstrap_seed", "n_reference", "denoise_is_tweedie"]
FID_READ = ["seed_index", "fid_ci_level"]  # read for merging seeds, not kept
NLL_EXTRA = ["bpd_per_image", "bounds"]  # bounds: one entry per method (report.bounds)
SDE_ORDER = ("ve", "vp", "subvp")  # the paper's order, used for rows and panels
SDE_LABEL = {"ve": "VE", "vp": "VP", "subvp": "sub-VP"}


def read_json(path, required) -> dict:
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read results file {path}: {err}") from err
    missing = [k for k in required if k not in record]
    if missing:
        raise ValueError(f"results file {path} lacks the field(s) {', '.join(missing)}")
    return record


def as_bool(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def load_fid_results(files: Sequence) -> pd.DataFrame:
    """One row per case (columns FID_COLUMNS + FID_EXTRA + ``case``, ``kind``), sorted; a case
    given for several seeds (``seed_index``) is one row, merged by ``merge_seeds``."""
    rows = []
    for path in files:
        rec = read_json(path, FID_REQUIRED)
        row = {c: rec.get(c) for c in [*FID_COLUMNS, *FID_EXTRA, *FID_READ]}
        row["denoise"] = as_bool(row["denoise"])
        row["feature_extractor"] = row["feature_extractor"] or "unknown"
        row["case"] = Path(path).stem
        row["kind"] = sampler_kind(row)
        rows.append(row)
    df = pd.DataFrame(merge_seeds(rows), columns=[*FID_COLUMNS, *FID_EXTRA, "case", "kind"])
    for col in ("steps", "n_samples", "bootstrap_n", "bootstrap_seed", "n_reference", "seeds"):
        df[col] = pd.array([None if missing(v) else int(v) for v in df[col]], dtype="Int64")
    for col in ("nfe", "fid", "kid", "kid_std", "seconds", "fid_ci_low", "fid_ci_high",
                "fid_seed_sd", *FIGURE_COLUMNS):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    if (df["nfe"].dropna() % 1 == 0).all():
        df["nfe"] = df["nfe"].astype("Int64")
    df["denoise"] = df["denoise"].astype(bool)
    keys = ["dataset", "sde", "sampler", "predictor", "corrector", "steps", "denoise"]
    return _sorted(df, keys)


def load_nll_results(files: Sequence) -> pd.DataFrame:
    """One row per likelihood JSON (columns NLL_COLUMNS + NLL_EXTRA), sorted by dataset and SDE."""
    cols = [*NLL_COLUMNS, *NLL_EXTRA]
    rows = [{c: read_json(p, NLL_REQUIRED).get(c) for c in cols} for p in files]
    df = pd.DataFrame(rows, columns=cols)
    for col in ("bpd", "bpd_sem", "nfe", "rtol", "atol"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    return _sorted(df, ["dataset", "sde"])


def sde_key(sde) -> tuple:
    return (SDE_ORDER.index(sde) if sde in SDE_ORDER else len(SDE_ORDER), str(sde))


def sde_label(sde) -> str:
    return SDE_LABEL.get(sde, str(sde))


def _sorted(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    def key(col):
        return col.map(lambda s: sde_key(s)[0]) if col.name == "sde" else col

    df = df.sort_values(keys, na_position="last", kind="stable", key=key)
    return df.reset_index(drop=True)


def _method_kind(row: dict) -> str | None:
    """"ode" / "sde" for a method of the sampling table (by sampler prefix or predictor field)."""
    from scoresde.sampling import METHODS

    sampler = str(row["sampler"]).lower()
    for prefix in ("ode", "sde"):
        if sampler == prefix or (sampler.startswith(prefix) and sampler[3] in "-_:"):
            return prefix
    method = METHODS.get(str(row["predictor"]))
    return method.kind if method is not None and is_none(row["corrector"]) else None


def sampler_kind(row: dict) -> str:
    """"ode", "sde" (a fast reverse-SDE method), "pc", "predictor" (P-only), "corrector"
    (C-only) or "unknown" from the fields."""
    kind = _method_kind(row)
    if kind is not None:
        return kind
    p_none, c_none = is_none(row["predictor"]), is_none(row["corrector"])
    if p_none and c_none:
        return "unknown"
    return "corrector" if p_none else "predictor" if c_none else "pc"


def ode_method(row: dict) -> str:
    from scoresde.sampling import ODE_METHODS

    if str(row["predictor"]) in ODE_METHODS:
        return str(row["predictor"])
    return str(row["sampler"]).lower().removeprefix("ode").strip("_-:") or "rk45"


def case_text(r: dict) -> str:
    """A case in words, without dataset and SDE."""
    how = {"ode": f"{r['predictor']} ODE solver", "sde": f"{r['predictor']} SDE solver"}.get(
        r["kind"], f"{r['predictor']} + {r['corrector']}")
    steps = "adaptive steps" if missing(r["steps"]) else f"{r['steps']} steps"
    return f"{r['sampler']} ({how}), {steps}, {'Tweedie' if r['denoise'] else 'no'} denoising"


def describe(r: dict) -> str:
    steps = "adaptive" if missing(r["steps"]) else r["steps"]
    tweedie = ", Tweedie" if r["denoise"] else ""
    return f"{r['dataset']}/{r['sde']} {r['sampler']} ({r['predictor']}, {r['corrector']}, {steps}{tweedie})"


@dataclass
class ReportData:
    """Everything a section or figure builder may read (loaded once by ``build_report``).

    ``inputs``: further named input files for added sections (e.g. ``{"controllable":
    Path("reports/controllable.csv")}``); builders skip what is absent.
    """

    fid: pd.DataFrame
    nll: pd.DataFrame
    out_dir: Path
    confidence: float = 0.95
    checkpoints_dir: Path | None = None
    samples_dir: Path | None = None
    config: dict | None = None
    inputs: dict[str, Path] = field(default_factory=dict)

    def datasets(self) -> list[str]:
        return sorted(set(self.fid["dataset"]) | set(self.nll["dataset"]))

    def of(self, dataset: str) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The FID and likelihood rows of one dataset."""
        return self.fid[self.fid["dataset"] == dataset], self.nll[self.nll["dataset"] == dataset]
