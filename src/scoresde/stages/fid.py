"""train-features and fid: FID / KID of sample files through torch-fidelity.

Offline default: a small classifier trained here on the dataset's labelled training split
(`scoresde.metrics.train_feature_extractor`), registered with torch-fidelity as a feature
extractor and named so in every result. With ``eval.inception_weights`` set to a local
file the standard Inception-v3 FID / KID are added as ``fid_inception`` / ``kid_inception``.

Features of the reference, training and held-out test sets are extracted once per job. Each
case gets, beside FID and KID, precision / recall / density / coverage against the reference set
and the ``memorised`` share of near-copies of training images (``scoresde.metrics.manifold``).
Every figure comes with its ``confidence`` interval (``<name>_ci_low`` / ``<name>_ci_high``) from
``eval.fid.bootstrap.n`` replicates resampling both sets, paired across cases by a shared seed
(FID's replicates are kept as ``fid_bootstrap``: the report decides every ordering from them).
"""

from __future__ import annotations

from pathlib import Path

from scoresde.checkpoint import save_checkpoint
from scoresde.data import DataError
from scoresde.stages.common import (
    StageError,
    load_reference,
    load_split,
    load_tensors,
    log,
    provenance,
    read_json,
    setup_torch,
    split_images,
    write_json,
)

SAMPLE_FIX = "rerun the sample rule that wrote it"


def train_features(params: dict, train_path: str, test_path: str | None, out: str,
                   device_name: str = "auto", threads: int = 1) -> dict:
    """Train the FID feature classifier; save it as a checkpoint (state_dict + config)."""
    from scoresde.metrics import classifier_accuracy, train_feature_extractor
    from scoresde.utils import pick_device

    feats = params["eval"]["features"]
    setup_torch(threads, seed=feats["seed"])
    device = pick_device(device_name)
    split = load_split(train_path)
    if split["labels"] is None:
        raise DataError(f"{train_path} has no labels, so no FID classifier can be trained; "
                        "set eval.inception_weights to a local Inception-v3 weights file")
    state, config = train_feature_extractor(
        split["x"], split["labels"], levels=int(split["levels"]), epochs=feats["epochs"],
        seed=feats["seed"], batch_size=feats["batch_size"], lr=feats["lr"],
        width=feats["width"], blocks=feats["blocks"], shift=feats["shift"], flip=feats["flip"],
        dataset=split["name"], device=device, progress=True, num_threads=threads)
    if test_path:
        test = load_split(test_path)
        config["test_accuracy"] = classifier_accuracy(state, config, test["x"], test["labels"],
                                                      levels=int(test["levels"]))
    config["params"] = params["eval"]["features"]
    save_checkpoint(out, state, config)
    log(f"feature classifier: train accuracy {config['train_accuracy']:.3f}, test accuracy "
        f"{config.get('test_accuracy', float('nan')):.3f} -> {out}")
    return config


class Scorer:
    """Reference features and their bootstrap resamples, computed once for all cases of a job.

    ``reference``, ``train``, ``heldout``: uint8 images of the reference set, the training split
    (the memorised share's copies) and the held-out test split (its distances' baseline).
    """

    def __init__(self, params: dict, reference, extractor_path: str, cuda: bool, train, heldout,
                 reference_path: str | None = None):
        from scoresde.metrics import BootstrapFID, BootstrapKID, FeatureSpace, cpu_threads
        from scoresde.metrics.manifold import CopyDetector, Manifold

        ev = params["eval"]
        self.fid, self.ev, self.reference_path = ev["fid"], ev, reference_path
        self.extractor_path, self.reference = extractor_path, reference
        self.space = FeatureSpace(extractor_path, cuda=cuda, batch_size=self.fid["batch_size"])
        self.f_reference = self.space.features(self.reference)
        f_train, f_heldout = self.space.features(train), self.space.features(heldout)
        boot, man = self.fid["bootstrap"], ev["manifold"]
        self.bootstrap = None
        with cpu_threads(self.space.num_threads):
            if boot["n"]:
                self.bootstrap = BootstrapFID(self.f_reference, boot["n"], boot["seed"])
            # KID and its bootstrap from one pass over each case's kernels (torch-fidelity's KID to
            # rounding); the reference side's resamples and subsets once for the job
            self.kid = BootstrapKID(self.f_reference, boot["n"], boot["seed"],
                                    self.fid["kid_subset_size"], self.fid["seed"])
            self.manifold = Manifold(self.f_reference, man["nearest_k"], boot["n"], boot["seed"],
                                     boot["confidence"])  # fmt: skip
            self.copies = CopyDetector(f_train, f_heldout, man["memorised_ratio"],
                                       boot["confidence"])  # fmt: skip
        self.inception = None
        if ev["inception_weights"]:
            self.inception = FeatureSpace(inception_weights=ev["inception_weights"], cuda=cuda,
                                          batch_size=self.fid["batch_size"])
            self.f_reference_inception = self.inception.features(self.reference)

    def metrics(self, images) -> dict:
        """FID, KID (± s.d. over subsets) and the FID's bootstrap replicates and interval."""
        from scoresde.metrics import (
            bootstrap_interval,
            cpu_threads,
            fid_from_features,
            fid_kid_from_features,
        )

        kid = {"kid_subset_size": self.fid["kid_subset_size"], "seed": self.fid["seed"]}
        f = self.space.features(images)
        with cpu_threads(self.space.num_threads):
            k = self.kid.measure(f)
        out = {**fid_from_features(f, self.f_reference, num_threads=self.space.num_threads),
               "kid": k["kid"], "kid_std": k["kid_std"],
               "feature_extractor": self.space.label, "n_reference": len(self.reference)}
        if self.bootstrap is not None:
            boot = self.fid["bootstrap"]
            with cpu_threads(self.space.num_threads):
                reps = self.bootstrap.replicates(f)
            kid_lo, kid_hi = bootstrap_interval(out["kid"], k["replicates"], boot["confidence"])
            lo, hi = bootstrap_interval(out["fid"], reps, boot["confidence"])
            out |= {"fid_ci_low": lo, "fid_ci_high": hi, "fid_ci_level": boot["confidence"],
                    "kid_ci_low": kid_lo, "kid_ci_high": kid_hi,
                    "fid_bootstrap": [round(float(r), 6) for r in reps],
                    "bootstrap_n": boot["n"], "bootstrap_seed": boot["seed"]}
        with cpu_threads(self.space.num_threads):
            out |= self.manifold(f) | self.copies(f)
        if self.inception is not None:
            inc = fid_kid_from_features(self.inception.features(images),
                                        self.f_reference_inception, **kid, num_threads=None)
            out |= {f"{k}_inception": v for k, v in inc.items()}
        return out


def load_case(samples_path: str, meta_path: str):
    """(uint8 images, sidecar record) of one case: at least one image, and the sidecar of the
    same case as the sample file (its ``case`` fields, when it has them). StageError otherwise."""
    from scoresde.stages.cases import CASE_KEYS

    blob = load_tensors(samples_path, ("images",), "sample file", SAMPLE_FIX)
    images = blob["images"]
    if not hasattr(images, "ndim") or images.ndim != 4 or len(images) == 0:
        shape = tuple(images.shape) if hasattr(images, "shape") else type(images).__name__
        raise StageError(f"sample file {samples_path} holds no images (shape {shape}); FID needs "
                         f"(N, C, H, W) images with N >= 1; {SAMPLE_FIX}")
    record = read_json(meta_path, "sample sidecar", SAMPLE_FIX)
    if not isinstance(record, dict):
        raise StageError(f"sample sidecar {meta_path} is not a JSON object; {SAMPLE_FIX}")
    record.pop("config", None)
    case = blob.get("case")
    if isinstance(case, dict):
        differ = [k for k in CASE_KEYS if k in case and record.get(k) != case[k]]
        if differ:
            what = ", ".join(f"{k} {case[k]!r} vs {record.get(k)!r}" for k in differ)
            raise StageError(f"sample sidecar {meta_path} describes another case than the sample "
                             f"file {samples_path} ({what}); pass the sidecar written with it")
    return images, record


def score_case(params: dict, scorer: Scorer, samples_path: str, meta_path: str, out: str) -> dict:
    """FID/KID of one case's samples against the reference set; writes the case's metrics."""
    fid = params["eval"]["fid"]
    images, record = load_case(samples_path, meta_path)
    if images.shape[1:] != scorer.reference.shape[1:]:
        raise StageError(f"samples {samples_path} are {tuple(images.shape[1:])} but the "
                         f"reference set is {tuple(scorer.reference.shape[1:])}; they come from "
                         "different datasets")
    metrics = scorer.metrics(images)
    result = {**record, **metrics}
    write_json(out, {**result, "config": provenance(
        "fid", {"eval": {"fid": fid, "inception_weights": params["eval"]["inception_weights"]}},
        samples=str(samples_path), reference=str(scorer.reference_path),
        extractor=str(scorer.extractor_path))})
    interval = (f" [{metrics['fid_ci_low']:.3f}, {metrics['fid_ci_high']:.3f}]"
                if "fid_ci_low" in metrics else "")
    log(f"{Path(samples_path).stem}: FID {metrics['fid']:.3f}{interval} KID {metrics['kid']:.4f} "
        f"precision {metrics['precision']:.3f} recall {metrics['recall']:.3f} density "
        f"{metrics['density']:.3f} coverage {metrics['coverage']:.3f} memorised "
        f"{metrics['memorised']:.3f} ({metrics['feature_extractor']}) -> {out}")
    return result


def run(params: dict, samples: list[str], metas: list[str], reference_path: str,
        extractor_path: str, outs: list[str], train_path: str, test_path: str,
        device_name: str = "auto", threads: int = 1) -> list[dict]:
    """FID/KID of each sample file (paired with its sidecar and output path, in order)."""
    from scoresde.utils import pick_device

    if not len(samples) == len(metas) == len(outs):
        raise StageError(f"got {len(samples)} sample files, {len(metas)} sidecars and "
                         f"{len(outs)} outputs; give one sidecar and one output per sample file")
    weights = params["eval"]["inception_weights"]
    if weights and not Path(weights).is_file():
        raise StageError(f"eval.inception_weights={weights} does not exist; put "
                         "torch-fidelity's weights-inception-2015-12-05-6726825d.pth there, "
                         "or set it to null")
    setup_torch(threads)
    cuda = pick_device(device_name).type == "cuda"
    train, test = (split_images(load_split(p)) for p in (train_path, test_path))
    scorer = Scorer(params, load_reference(reference_path), extractor_path, cuda, train, test,
                    reference_path)
    return [score_case(params, scorer, s, m, o) for s, m, o in zip(samples, metas, outs, strict=True)]




def _without(reference, probes):
    """The reference images that are not byte-equal to any probe (a held-out probe must not be
    scored against itself when the reference is the test split)."""
    seen = {bytes(p.numpy().tobytes()) for p in probes}
    keep = [i for i, r in enumerate(reference) if bytes(r.numpy().tobytes()) not in seen]
    return reference[keep]


def check_metrics(params: dict, train_path: str, test_path: str, reference_path: str,
                  extractor_path: str, out: str, device_name: str = "auto",
                  threads: int = 1) -> dict:
    """What the metrics see: held-out test images as they are and with known defects
    (``metrics.corruptions.corruption_suite``), each scored like a sample set by the fid stage's
    :class:`Scorer` against the reference set (less any image equal to a probe); one JSON."""
    import torch

    from scoresde.metrics.corruptions import SPECKLE_TV, corruption_suite, speckled_share
    from scoresde.metrics.manifold import MANIFOLD_KEYS
    from scoresde.utils import pick_device

    setup_torch(threads)
    cuda = pick_device(device_name).type == "cuda"
    train_split, test_split = load_split(train_path), load_split(test_path)
    if test_split["labels"] is None:
        raise DataError(f"{test_path} has no labels; the missing-classes check needs them")
    train, test = split_images(train_split), split_images(test_split)
    full = load_reference(reference_path)
    order = torch.randperm(len(test), generator=torch.Generator().manual_seed(
        params["eval"]["checks"]["seed"]))  # fmt: skip
    pick = order[: min(len(order), params["eval"]["checks"]["n_images"])]
    reference = _without(full, test[pick])
    if len(reference) < len(full) / 2:  # the reference is the held-out split: score half of it
        pick = order[: len(order) // 2]
        reference = _without(full, test[pick])
    if len(pick) < 2 or len(reference) < 2:
        raise StageError(f"check-metrics needs at least 2 held-out images and 2 reference images "
                         f"that differ from them; {test_path} and {reference_path} leave "
                         f"{len(pick)} and {len(reference)}: use more test images (data.n_test)")
    scorer = Scorer(params, reference, extractor_path, cuda, train, test, reference_path)
    rows = []
    for name, images in corruption_suite(test[pick], test_split["labels"][pick], train,
                                         params["eval"]["checks"]["seed"]).items():
        m = scorer.metrics(images)
        m.pop("fid_bootstrap", None)
        rows.append({"images": name, "n": len(images), "speckled": speckled_share(images), **m})
        log(f"{name}: " + ", ".join(f"{k} {m[k]:.3f}"
                                    for k in ("fid", "kid", *MANIFOLD_KEYS, "memorised")))
    result = {"rows": rows, "n_reference": len(reference), "dataset": train_split["name"],
              "speckle_tv": SPECKLE_TV, "feature_extractor": scorer.space.label}  # fmt: skip
    write_json(out, {**result, "config": provenance(
        "check-metrics", {"eval": {k: params["eval"][k] for k in ("fid", "manifold", "checks")}},
        train=str(train_path), test=str(test_path), reference=str(reference_path),
        extractor=str(extractor_path))})
    return result
