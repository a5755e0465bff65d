"""train-features and fid: FID / KID of sample files through torch-fidelity.

Offline default: a small classifier trained here on the dataset's labelled training split
(`scoresde.metrics.train_feature_extractor`), registered with torch-fidelity as a feature
extractor and named so in every result. With ``eval.inception_weights`` set to a local
file the standard Inception-v3 FID / KID are added as ``fid_inception`` / ``kid_inception``.
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
        width=feats["width"], feature_dim=feats["feature_dim"], dataset=split["name"],
        device=device, progress=True)
    if test_path:
        test = load_split(test_path)
        config["test_accuracy"] = classifier_accuracy(state, config, test["x"], test["labels"],
                                                      levels=int(test["levels"]))
    config["params"] = params["eval"]["features"]
    save_checkpoint(out, state, config)
    log(f"feature classifier: train accuracy {config['train_accuracy']:.3f}, test accuracy "
        f"{config.get('test_accuracy', float('nan')):.3f} -> {out}")
    return config


def score_case(params: dict, samples_path: str, meta_path: str, reference_path: str,
               reference, extractor_path: str, out: str, cuda: bool) -> dict:
    """FID/KID of one case's samples against the reference set; writes the case's metrics."""
    from scoresde.metrics import compute_fid_kid

    ev = params["eval"]
    fid = ev["fid"]
    images = load_tensors(samples_path, ("images",), "sample file", SAMPLE_FIX)["images"]
    record = read_json(meta_path, "sample sidecar", SAMPLE_FIX)
    record.pop("config", None)
    if images.shape[1:] != reference.shape[1:]:
        raise StageError(f"samples {samples_path} are {tuple(images.shape[1:])} but the "
                         f"reference set is {tuple(reference.shape[1:])}; they come from "
                         "different datasets")
    kwargs = {"cuda": cuda, "kid_subset_size": fid["kid_subset_size"], "seed": fid["seed"],
              "batch_size": fid["batch_size"]}
    metrics = compute_fid_kid(images, reference, extractor_weights_path=extractor_path,
                              **kwargs)
    if ev["inception_weights"]:
        inception = compute_fid_kid(images, reference,
                                    inception_weights=ev["inception_weights"], **kwargs)
        metrics |= {f"{k}_inception": v for k, v in inception.items()
                    if k != "feature_extractor"}
    result = {**record, **metrics}
    write_json(out, {**result, "config": provenance(
        "fid", {"eval": {"fid": fid, "inception_weights": ev["inception_weights"]}},
        samples=str(samples_path), reference=str(reference_path),
        extractor=str(extractor_path))})
    log(f"{Path(samples_path).stem}: FID {metrics['fid']:.3f} KID {metrics['kid']:.4f} "
        f"({metrics['feature_extractor']}) -> {out}")
    return result


def run(params: dict, samples: list[str], metas: list[str], reference_path: str,
        extractor_path: str, outs: list[str], device_name: str = "auto",
        threads: int = 1) -> list[dict]:
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
    reference = load_reference(reference_path)
    return [score_case(params, s, m, reference_path, reference, extractor_path, o, cuda)
            for s, m, o in zip(samples, metas, outs, strict=True)]
