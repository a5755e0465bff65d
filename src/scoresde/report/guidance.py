"""The report's class-conditional part (conditional-sample's JSON): the per-class table of each
guidance method at its chosen strength beside the unconditional samples, one line of verdicts
per method, and a figure per SDE of the sweep (accuracy and held-out FID against strength for
every sampler, the chosen strength marked), the noise-conditional classifier's accuracy against t
and the guidance term's size against the score's along the first sampler's trajectory."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

TABLE_COLUMNS = ["sde", "method", "class", "class_name", "n", "nfe", "strength", "accuracy",
                 "accuracy_ci_low", "accuracy_ci_high", "fid", "fid_ci_low", "fid_ci_high",
                 "fid_unconditional", "fid_excess_ci_low", "fid_excess_ci_high", "precision",
                 "recall"]


def load(files) -> list[dict]:
    """The conditional-sample JSONs among the controllable files (those with a sweep)."""
    out = []
    for path in files:
        obj = json.loads(Path(path).read_text())
        if "sweep" in obj:
            out.append({**obj, "path": Path(path)})
    return out


def table(results: list[dict]) -> pd.DataFrame:
    """One row per (SDE, method, class) and per method over all classes."""
    rows = [r for obj in results for r in obj["rows"]]
    df = pd.DataFrame(rows)
    for col in TABLE_COLUMNS:
        if col not in df:
            df[col] = None
    df["class"] = df["class"].astype("Int64")
    return df[TABLE_COLUMNS].dropna(axis=1, how="all").round(3)


def verdicts(results: list[dict]) -> str:
    """Per (dataset, SDE, method): accuracy at the chosen strength against the target, with its
    Wilson interval, and in how many classes FID is not worse than the unconditional samples'."""
    lines = []
    for obj in results:
        target = obj["target_accuracy"]
        for r in obj["rows"]:
            if not r["case"].endswith("all classes"):
                continue
            classes = sum(1 for x in obj["rows"] if x["method"] == r["method"] and
                          x.get("class") is not None and x.get("fid_not_worse") is not None)
            held = "held" if r["accuracy"] >= target else "not held"
            lines.append(
                f"{r['dataset']}, {r['sde']}, {r['method']} guidance (strength {r['strength']:g}, "
                f"{r['nfe']} NFE): accuracy {r['accuracy']:.3f} [{r['accuracy_ci_low']:.3f}, "
                f"{r['accuracy_ci_high']:.3f}] against the target {target:g}: {held}; per-class "
                f"FID not worse than the unconditional samples' (the difference's 95% interval "
                f"reaches 0) in {r['not_worse_classes']} of {classes} classes.")
    return " ".join(lines)


def plot(obj: dict):
    """Five panels: accuracy and held-out FID against strength (methods by colour, samplers by
    line style), the classifier's accuracy against t, the guidance ratio against t, and held-out
    precision (fidelity) and recall (diversity) against strength on the first
    sampler."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep = pd.DataFrame(obj["sweep"])
    fig, axes = plt.subplots(1, 5, figsize=(18.5, 3.4))
    styles = ["-", "--", ":", "-."]
    colours = {"classifier": "tab:blue", "free": "tab:orange"}
    samplers = list(dict.fromkeys(sweep["sampler"]))
    for method, sub in sweep.groupby("method", sort=False):
        for i, sampler in enumerate(samplers):
            line = sub[sub["sampler"] == sampler].sort_values("strength")
            label = f"{method}, {sampler}"
            for ax, col in ((axes[0], "accuracy"), (axes[1], "fid")):
                ax.plot(line["strength"], line[col], styles[i % 4], marker="o", ms=3,
                        color=colours.get(method), label=label)
        chosen = sub[(sub["sampler"] == samplers[0]) & (sub["strength"] == obj["chosen"][method])]
        for ax, col in ((axes[0], "accuracy"), (axes[1], "fid")):
            ax.plot(chosen["strength"], chosen[col], "*", ms=14, color=colours.get(method),
                    markeredgecolor="k")
    axes[0].axhline(obj["target_accuracy"], color="grey", lw=0.8)
    axes[0].set(xlabel="guidance strength (scale / w)", ylabel="accuracy (feature classifier)",
                title="accuracy (star: chosen)")
    axes[1].set(xlabel="guidance strength (scale / w)", ylabel="FID vs held-out test images",
                title="held-out FID")
    axes[0].legend(fontsize=6)
    first = sweep[sweep["sampler"] == samplers[0]]
    for method, sub in first.groupby("method", sort=False):
        sub = sub.sort_values("strength")
        for col, style in (("precision", "-"), ("recall", "--")):
            if col in sub:
                axes[4].plot(sub["strength"], sub[col], style, marker="o", ms=3,
                             color=colours.get(method), label=f"{method} {col}")
    axes[4].set(xlabel="guidance strength (scale / w)", ylabel="vs held-out test images",
                ylim=(0, 1.02), title="precision / recall (first sampler)")
    axes[4].legend(fontsize=6)
    by_t = obj.get("classifier_accuracy_by_time") or {}
    if by_t:
        ts = [float(k.split("=")[1]) for k in by_t]
        axes[2].plot(ts, list(by_t.values()), marker="o")
    axes[2].set(xlabel="t", ylabel="test accuracy on x(t)", ylim=(0, 1.02),
                title="noise-conditional classifier")
    ratios = pd.DataFrame(obj["ratios"])
    if not ratios.empty:
        for (method, strength), sub in ratios.groupby(["method", "strength"], sort=False):
            if strength == 0:
                continue
            axes[3].plot(sub["t"], sub["ratio"], color=colours.get(method),
                         alpha=0.3 + 0.7 * (strength / ratios["strength"].max()),
                         label=f"{method} {strength:g}")
        axes[3].set_yscale("log")
        axes[3].legend(fontsize=6)
    axes[3].set(xlabel="t", ylabel="|guidance term| / |score|", title="guidance against score")
    row = obj["rows"][0]
    fig.suptitle(f"{row['dataset']}, {row['sde']} SDE: class-conditional guidance "
                 f"({samplers[0]} reports)", fontsize=10)
    fig.tight_layout()
    return fig


def caption(obj: dict) -> str:
    row = obj["rows"][0]
    chosen = ", ".join(f"{m} {s:g}" for m, s in obj["chosen"].items())
    return (f"{row['dataset']}, {row['sde']} SDE: class-conditional accuracy and held-out FID "
            f"against guidance strength for each sampler (selection samples, not the reported "
            f"ones; star: the chosen strength, {chosen}; grey line: the target accuracy), the "
            "noise-conditional classifier's test accuracy on x(t), the guidance term's size "
            "against the unguided score along the first sampler's steps, and precision / recall "
            "against the held-out images by strength (stronger guidance: recall falls).")
