"""prepare-data: the train/test splits as uint8 level tensors, and the FID reference set.

Outputs (all `torch.save` dicts, read back with `weights_only=True`):
``train.pt`` / ``test.pt``: ``{"x": uint8 (N, C, H, W) levels 0..L-1, "labels": long (N,) or
None, "levels": L, "name": dataset, "classes": the class names by label or None}``;
``reference.pt``: ``{"images": uint8 (N, C, H, W) 0..255}``, training images mapped to 0..255
(the set FID compares samples with).
"""

from __future__ import annotations

import warnings

import torch

from scoresde.data import DataError, DataWarning, Levels, fingerprint, is_image, load_dataset
from scoresde.stages.common import log, provenance, save_tensors, write_json
from scoresde.utils import seeded_generator


def run(params: dict, train_out: str, test_out: str, reference_out: str,
        config_out: str | None = None) -> None:
    data = params["data"]
    name = data["dataset"]
    if not is_image(name):
        raise DataError(f"data.dataset={name!r} is a 2-D toy; the pipeline (FID, bits/dim) "
                        "needs an image dataset: digits, mnist, fashion_mnist, cifar10 or "
                        "image_folder")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataWarning)
        splits = {split: load_dataset(name, split, root=data["root"], n=data[f"n_{split}"],
                                      seed=data["seed"])
                  for split in ("train", "test")}
    for w in caught:
        if issubclass(w.category, DataWarning):
            log(f"warning: {w.message}")
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    for split, ds in splits.items():
        if len(ds) == 0:
            raise DataError(f"{name}: the {split} split is empty (data.n_{split}, data.root)")
        log(f"{name} {split}: {tuple(ds.x.shape)} levels {ds.levels}, "
            f"{len(ds.labels.unique())} classes")
    shapes = {split: tuple(ds.x.shape[1:]) for split, ds in splits.items()}
    if shapes["train"] != shapes["test"]:
        raise DataError(f"{name}: the test images have shape (C, H, W) {shapes['test']} but the "
                        f"training images {shapes['train']} (data.root={data['root']}); give both "
                        "splits images of one size and colour mode")
    train = splits["train"]
    source = splits[data["reference_split"]]
    reference = reference_images(source.x, source.levels, data["n_reference"], data["seed"])
    for split, path in (("train", train_out), ("test", test_out)):
        ds = splits[split]
        save_tensors(path, {"x": ds.x, "labels": ds.labels, "levels": int(ds.levels),
                            "name": name, "classes": ds.classes})
    save_tensors(reference_out, {"images": reference})
    log(f"FID reference set: {tuple(reference.shape)} uint8 from the {data['reference_split']} split")
    if config_out:
        write_json(config_out, provenance(
            "prepare-data", params, outputs=[train_out, test_out, reference_out],
            shapes={s: list(d.x.shape) for s, d in splits.items()}, levels=int(train.levels),
            classes={s: sorted(d.labels.unique().tolist()) for s, d in splits.items()},
            raw_fingerprint=fingerprint(name, data["root"])))


def reference_images(x: torch.Tensor, levels: int, n: int | None, seed: int) -> torch.Tensor:
    """`n` images of a split (a random subset from the stream ``seed_stream(seed, "data", 2)``;
    all when n is None) as uint8 0..255."""
    if n is not None and n < len(x):
        idx = torch.randperm(len(x), generator=seeded_generator(seed, "data", 2))[:n]
        x = x[idx.sort().values]
    return Levels(levels).to_uint8(x)
