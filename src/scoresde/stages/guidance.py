"""conditional-sample: class-conditional generation (paper section 5, App. I.1) by classifier
guidance and by classifier-free guidance (Ho & Salimans 2022), each strength swept and one chosen
on held-out images, compared across samplers and against the unconditional samples.

For each method of ``controllable.conditional.guidance``:

* ``classifier``: s(x, t) + scale * grad_x log p_t(y | x) with the noise-conditional classifier of
  train-classifier (scale 1 = Bayes' rule; ``controllable.conditional_score``);
* ``free``: (1 + w) s(x, t | y) - w s(x, t) with the class-conditional network of
  ``train --class-conditional`` (``controllable.classifier_free_score``).

1. **Sweep**: every strength with every sampler of ``samplers`` draws ``selection_per_class``
   samples per class (``selection_seed``; every strength the same noise), scored against the
   held-out test images: accuracy by the pipeline's feature classifier, FID, precision and recall
   (k = 5). Along the first
   sampler's trajectory the guidance term's size against the unguided score is recorded per step.
2. **Choice**: on the first sampler, the lowest held-out FID among the strengths whose accuracy
   reaches ``target_accuracy``, else the most accurate strength.
3. **Reported samples**: ``n_per_class`` per class at the chosen strength (``seed``): per class
   the accuracy (Wilson interval), FID (bootstrap interval), precision and recall against that
   class's training images.
4. **Unconditional comparison**: the score model's own samples with the first sampler, labelled
   by the feature classifier, the first ``n_per_class`` of each class scored the same way; per
   class the interval of FID(guided) - FID(unconditional) (paired reference resamples) says
   whether guidance costs quality.
"""

from __future__ import annotations

import math

import torch

from scoresde.stages.common import (
    StageError,
    checkpoint_class_score_fn,
    checkpoint_score_fn,
    images_from_model,
    load_score_model,
    load_split,
    log,
    provenance,
    save_tensors,
    setup_torch,
    split_images,
    timer,
    write_json,
)
from scoresde.stages.inputs import check_class_data, check_data_fits
from scoresde.utils import seeded_generator

METHODS = ("classifier", "free")
N_BOOTSTRAP = 200
UNCONDITIONAL_DRAW = 1.5  # unconditional samples drawn per wanted sample (classes are uneven)
CONDITIONAL_STREAM = 100  # seed stream index of this stage's draws (inpainting uses 0)


# --- guided scores -------------------------------------------------------------------------------


class Guides:
    """The score model and the guides of one job: ``score(method, labels, strength)`` is the
    guided ``score_fn(x, t)``; with ``record`` it also logs, per call, the guidance term's size
    against the unguided score's, ||guided - plain|| / ||plain|| (mean over the batch), where
    plain is s(x, t) (classifier) or s(x, t | y) (free)."""

    def __init__(self, sde, base, classifier, free_score, num_classes: int,
                 classifier_config: dict | None = None):
        self.sde, self.base, self.classifier = sde, base, classifier
        self.classifier_config = classifier_config
        self.free_score, self.num_classes = free_score, num_classes

    def score(self, method: str, labels: torch.Tensor, strength: float, record: list | None = None):
        from scoresde.controllable import classifier_free_score, conditional_score
        from scoresde.models.classifier import class_log_prob

        last = {}

        def plain_base(x, t):
            last["plain"] = self.base(x, t)
            return last["plain"]

        def plain_class(x, t, y):
            out = self.free_score(x, t, y)
            last["plain"] = out[: len(labels)]
            return out

        if method == "classifier":
            guided = conditional_score(plain_base, class_log_prob(self.classifier, self.sde, labels),
                                       strength)
        else:
            guided = classifier_free_score(plain_class, labels, strength, self.num_classes)
        if record is None:
            return guided

        def score(x, t):
            out = guided(x, t)
            plain = last["plain"].flatten(1)
            ratio = (out.flatten(1) - plain).norm(dim=1) / plain.norm(dim=1).clamp(min=1e-12)
            record.append((float(t.reshape(-1)[0]), float(ratio.mean())))
            return out

        return score


# --- scoring ---------------------------------------------------------------------------------------


def fid_of(f_samples: torch.Tensor, f_reference: torch.Tensor) -> float:
    """torch-fidelity's FID of two feature sets (``metrics.fid_from_features``); NaN below 4."""
    from scoresde.metrics import fid_from_features

    if min(len(f_samples), len(f_reference)) < 4:
        return math.nan
    return fid_from_features(f_samples, f_reference)["fid"]


class ClassScorer:
    """Per-class figures against one class's reference features: FID with its bootstrap
    replicates (paired across sample sets: the same reference resamples), precision, recall."""

    def __init__(self, f_reference: torch.Tensor, seed: int, nearest_k: int = 5):
        from scoresde.metrics import BootstrapFID
        from scoresde.metrics.manifold import Manifold

        self.f_reference = f_reference
        self.bootstrap = BootstrapFID(f_reference, N_BOOTSTRAP, seed)
        self.manifold = Manifold(f_reference, nearest_k, 0, seed)

    def __call__(self, f: torch.Tensor) -> tuple[dict, torch.Tensor | None]:
        from scoresde.metrics import bootstrap_interval

        fid = fid_of(f, self.f_reference)
        reps = self.bootstrap.replicates(f) if len(f) >= 4 else None
        lo, hi = bootstrap_interval(fid, reps) if reps is not None else (math.nan, math.nan)
        m = self.manifold(f)
        return {"fid": fid, "fid_ci_low": lo, "fid_ci_high": hi, "precision": m["precision"],
                "recall": m["recall"]}, reps


# --- the stage -----------------------------------------------------------------------------------


def choose(sweep: list[dict], target: float) -> dict:
    """The chosen row of one method's sweep (first sampler): the lowest FID among the rows whose
    accuracy reaches ``target``, else the most accurate (ties: the weaker strength)."""
    good = [r for r in sweep if r["accuracy"] >= target]
    if good:
        return min(good, key=lambda r: (r["fid"] if math.isfinite(r["fid"]) else math.inf,
                                        r["strength"]))
    return max(sweep, key=lambda r: (r["accuracy"], -r["strength"]))


def _load_guides(cc: dict, classifier: str | None, free: str | None, meta: dict, sde, base,
                 device) -> Guides:
    """The guides ``guidance`` lists, refused unless given, trained for the score model's data
    and SDE, and agreeing on the number of classes."""
    from scoresde.stages.controllable import load_classifier

    methods = cc["guidance"]
    for method, path, what in (("classifier", classifier, "--classifier (train-classifier)"),
                               ("free", free, "--free (train --class-conditional)")):
        if method in methods and not path:
            raise StageError(f"controllable.conditional.guidance lists {method!r} but no {what} "
                             "checkpoint was given; pass it or drop the method")
    clf = free_score = ccfg = None
    classes = {}
    if "classifier" in methods:
        clf, ccfg = load_classifier(classifier, meta, device)
        classes["classifier " + str(classifier)] = int(ccfg["model"]["num_classes"])
    if "free" in methods:
        fmodel, fsde, fmeta = load_score_model(free, device, sde.name)
        cc_meta = fmeta.get("class_conditional")
        if not cc_meta:
            raise StageError(f"--free {free} is an unconditional score model; pass the checkpoint "
                             "of `train --class-conditional` (controllable/<dataset>/<sde>/free/)")
        for key in ("dataset", "centered", "dequantize", "image_shape", "sde"):
            if fmeta.get(key) != meta.get(key):
                raise StageError(f"--free {free} was trained for {key}={fmeta.get(key)!r} but the "
                                 f"score model has {meta.get(key)!r}; retrain it for this run")
        free_score = checkpoint_class_score_fn(fsde, fmodel, fmeta)
        classes["--free " + str(free)] = int(cc_meta["num_classes"])
    if len(set(classes.values())) > 1:
        raise StageError(f"the guides disagree on the number of classes ({classes}); retrain them "
                         "on the same training split")
    return Guides(sde, base, clf, free_score, next(iter(classes.values())), ccfg)


def conditional_sample(params: dict, checkpoint: str, classifier: str | None, free: str | None,
                       data_path: str, test_path: str, extractor: str, out: str,
                       metrics_out: str, device_name: str = "auto", threads: int = 1,
                       expect_sde: str | None = None) -> list[dict]:
    """The sweep, the choice, the reported samples and the unconditional comparison (module
    docstring); writes the samples (per method and unconditional) and the metrics JSON."""
    from scoresde.metrics import FeatureSpace, classifier_predictions, load_feature_extractor
    from scoresde.metrics.manifold import wilson_interval
    from scoresde.stages.cases import parse_extra, run_sampler, sampler_options
    from scoresde.utils import pick_device

    cc = params["controllable"]["conditional"]
    samplers = [parse_extra(case) for case in cc["samplers"]]
    setup_torch(threads)
    device = pick_device(device_name)
    model, sde, meta = load_score_model(checkpoint, device, expect_sde)
    split, test = load_split(data_path), load_split(test_path)
    base = checkpoint_score_fn(sde, model, meta)
    guides = _load_guides(cc, classifier, free, meta, sde, base, device)
    num_classes = guides.num_classes
    check_class_data(split, data_path, meta, num_classes, cc["n_per_class"])
    check_data_fits(test, test_path, meta, "--test")
    fnet, fcfg = load_feature_extractor(extractor)
    state = fnet.state_dict()
    space = FeatureSpace(extractor)
    shape = tuple(meta["image_shape"])
    sample = params["sample"]

    def draw(score, n: int, case: tuple, seed: int, index: int):
        sampler, steps = case
        gen = seeded_generator(seed, "controllable", CONDITIONAL_STREAM, index, device=device)
        with torch.no_grad():
            (x, nfe), = run_sampler(score, sde, (n, *shape), sampler, steps, [True],
                                    snr=sample["snr"][sde.name],
                                    sigma_min=sample["sigma_min"][sde.name],
                                    options=sampler_options(sample, sde.name, sampler),
                                    generator=gen, device=device).values()
        return images_from_model(x, meta), nfe

    def labels_of(per_class: int) -> torch.Tensor:
        return torch.arange(num_classes).repeat_interleave(per_class)

    def accuracy(images, labels) -> float:
        return int((classifier_predictions(state, fcfg, images) == labels).sum()) / len(labels)

    # 1-2: the sweep on held-out images and the choice
    from scoresde.metrics.manifold import Manifold

    f_test = space.features(split_images(test))
    held_out = Manifold(f_test, 5, 0, cc["selection_seed"])
    sel_labels = labels_of(cc["selection_per_class"])
    sweep, ratios, chosen = [], [], {}
    with timer() as t_sweep:
        for method in cc["guidance"]:
            for i, case in enumerate(samplers):
                for strength in cc["strengths"][method]:
                    record = [] if i == 0 else None
                    score = guides.score(method, sel_labels.to(device), float(strength), record)
                    with timer() as t:
                        images, nfe = draw(score, len(sel_labels), case, cc["selection_seed"], 0)
                    f_sel = space.features(images)
                    manifold = held_out(f_sel)
                    row = {"method": method, "sampler": cc["samplers"][i], "strength": float(strength),
                           "nfe": nfe, "accuracy": accuracy(images, sel_labels),
                           "fid": fid_of(f_sel, f_test), "precision": manifold["precision"],
                           "recall": manifold["recall"], "seconds": round(t[0], 3)}
                    sweep.append(row)
                    ratios += [{"method": method, "strength": float(strength), "t": tt, "ratio": r}
                               for tt, r in (record or [])]
                    log(f"{sde.name} {method} {cc['samplers'][i]} strength {strength:g}: accuracy "
                        f"{row['accuracy']:.3f}, held-out FID {row['fid']:.2f} ({t[0]:.1f}s)")
            first = [r for r in sweep if r["method"] == method and r["sampler"] == cc["samplers"][0]]
            chosen[method] = choose(first, cc["target_accuracy"])["strength"]
            log(f"{sde.name} {method}: chosen strength {chosen[method]:g}")

    # 3-4: reported samples per method, unconditional comparison, per-class figures
    train_uint8, train_labels = split_images(split), split["labels"]
    f_train = space.features(train_uint8)
    scorers = {k: ClassScorer(f_train[train_labels == k], cc["seed"]) for k in range(num_classes)}
    names = split.get("classes") or []
    labels = labels_of(cc["n_per_class"])
    saved = {"labels": labels}
    with timer() as t_uncond:
        n_draw = math.ceil(UNCONDITIONAL_DRAW * len(labels))
        u_images, u_nfe = draw(base, n_draw, samplers[0], cc["seed"], 1)
        u_pred = classifier_predictions(state, fcfg, u_images)
        keep = torch.cat([torch.nonzero(u_pred == k)[: cc["n_per_class"], 0]
                          for k in range(num_classes)])
        saved["unconditional"], saved["unconditional_labels"] = u_images[keep], u_pred[keep]
    rows, uncond_reps = [], {}
    base_row = {"dataset": meta["dataset"], "sde": sde.name, "task": "conditional",
                "sampler": cc["samplers"][0], "steps": samplers[0][1]}
    f_uncond = space.features(saved["unconditional"]) if len(keep) else f_train[:0]
    for k in range(num_classes):
        f_u = f_uncond[saved["unconditional_labels"] == k]
        figures, uncond_reps[k] = scorers[k](f_u)
        rows.append({**base_row, "case": f"unconditional / class {k}", "method": "unconditional",
                     "class": k, "class_name": names[k] if k < len(names) else None,
                     "n": len(f_u), "nfe": u_nfe, **figures})
    for method in cc["guidance"]:
        with timer() as t:
            score = guides.score(method, labels.to(device), chosen[method])
            images, nfe = draw(score, len(labels), samplers[0], cc["seed"], 0)
        saved[method] = images
        predicted = classifier_predictions(state, fcfg, images)
        f_all = space.features(images)
        for k in range(num_classes):
            sel = labels == k
            hits = int((predicted[sel] == k).sum())
            figures, reps = scorers[k](f_all[sel])
            lo, hi = wilson_interval(hits, int(sel.sum()))
            excess = _excess(figures["fid"], reps, rows[k]["fid"], uncond_reps[k])
            rows.append({**base_row, "case": f"{method} / class {k}", "method": method, "class": k,
                         "class_name": names[k] if k < len(names) else None, "n": int(sel.sum()),
                         "nfe": nfe, "strength": chosen[method], "accuracy": hits / int(sel.sum()),
                         "accuracy_ci_low": lo, "accuracy_ci_high": hi, **figures,
                         "fid_unconditional": rows[k]["fid"], **excess})
        hits = int((predicted == labels).sum())
        lo, hi = wilson_interval(hits, len(labels))
        rows.append({**base_row, "case": f"{method} / all classes", "method": method,
                     "n": len(labels), "nfe": nfe, "strength": chosen[method],
                     "accuracy": hits / len(labels), "accuracy_ci_low": lo, "accuracy_ci_high": hi,
                     "fid": fid_of(f_all, f_train), "seconds": round(t[0], 3),
                     "not_worse_classes": sum(bool(r.get("fid_not_worse")) for r in rows
                                              if r["method"] == method and "class" in r)})
        log(f"{sde.name} {method} (strength {chosen[method]:g}): accuracy {hits / len(labels):.3f} "
            f"[{lo:.3f}, {hi:.3f}], nfe {nfe}, {t[0]:.1f}s")
    saved["images"] = saved[cc["guidance"][-1]]  # the report's grid: the last method listed
    clf_acc = guides.classifier_config.get("test_accuracy") if guides.classifier_config else None
    save_tensors(out, saved)
    write_json(metrics_out, {
        "rows": rows, "sweep": sweep, "ratios": ratios, "chosen": chosen,
        "target_accuracy": cc["target_accuracy"], "classifier_accuracy_by_time": clf_acc,
        "seconds": {"sweep": round(t_sweep[0], 3), "unconditional": round(t_uncond[0], 3)},
        "config": provenance("conditional-sample", params, checkpoint=str(checkpoint),
                             classifier=str(classifier), free=str(free))})
    return rows


def _excess(fid: float, reps, fid_u: float, reps_u) -> dict:
    """FID(guided) - FID(unconditional) of one class with its bootstrap interval (the two
    sample sets resampled independently, the reference resamples shared); ``fid_not_worse``
    when the interval reaches down to 0."""
    from scoresde.metrics import bootstrap_interval

    if reps is None or reps_u is None or not (math.isfinite(fid) and math.isfinite(fid_u)):
        return {"fid_excess": math.nan, "fid_excess_ci_low": math.nan,
                "fid_excess_ci_high": math.nan, "fid_not_worse": None}
    lo, hi = bootstrap_interval(fid - fid_u, reps - reps_u)
    return {"fid_excess": fid - fid_u, "fid_excess_ci_low": lo, "fid_excess_ci_high": hi,
            "fid_not_worse": bool(lo <= 0)}
