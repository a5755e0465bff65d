"""Input checks of the controllable-generation stages, run before any model is loaded or any
sample drawn, and the all-or-nothing writer of their outputs.

Each check raises :class:`StageError` with one line naming the argument, the value and the fix.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from scoresde.stages.common import StageError, log, save_tensors, write_json


def check_data_fits(split: dict, path: str, meta: dict, flag: str) -> None:
    """A processed split of the score model's dataset: the same name, image shape and levels."""
    for what, have, want in (("dataset", split["name"], meta.get("dataset")),
                             ("image shape (C, H, W)", list(split["x"].shape[1:]),
                              list(meta["image_shape"])),
                             ("levels", int(split["levels"]), meta.get("levels"))):
        if want is not None and have != want:
            raise StageError(f"{flag} {path} has {what} {have!r} but the score model was trained "
                             f"on {want!r}; pass the processed split of the model's dataset")


def check_test_split(train: dict, test: dict | None, train_path: str, test_path: str | None) -> None:
    """The test split is of the training split's dataset: labelled, the same image shape, levels
    and name, and no class the training split lacks (else its accuracy measures nothing)."""
    if test is None:
        return
    fix = f"pass the test split prepare-data wrote beside {train_path}"
    if test["labels"] is None:
        raise StageError(f"--test {test_path} has no labels; the classifier's accuracy needs a "
                         f"labelled test split; {fix}")
    for what, a, b in (("image shape (C, H, W)", tuple(train["x"].shape[1:]),
                        tuple(test["x"].shape[1:])), ("levels", int(train["levels"]),
                                                      int(test["levels"])),
                       ("dataset", train["name"], test["name"])):
        if a != b:
            raise StageError(f"--test {test_path} has {what} {b!r} but the training split "
                             f"{train_path} has {a!r}; {fix}")
    n_classes = int(train["labels"].max()) + 1
    if int(test["labels"].max()) >= n_classes:
        raise StageError(f"--test {test_path} has class {int(test['labels'].max())} but the "
                         f"training split {train_path} only classes 0..{n_classes - 1}; {fix}")


def check_class_data(split: dict, path: str, meta: dict, num_classes: int,
                     n_per_class: int | None = None) -> None:
    """Every class of the classifier has training images (the per-class FID reference); a
    warning when a per-class FID will be undefined (fewer than 4 images, written as null)."""
    check_data_fits(split, path, meta, "--data")
    if split["labels"] is None:
        raise StageError(f"--data {path} has no labels; per-class FID needs the labelled "
                         "training split")
    present = set(split["labels"].unique().tolist())
    lacking = [k for k in range(num_classes) if k not in present]
    if lacking:
        raise StageError(f"--data {path} has no images of class(es) "
                         f"{', '.join(map(str, lacking))} of the classifier's {num_classes} "
                         "classes, so their FID is undefined; pass the training split the "
                         "classifier was trained on")
    counts = torch.bincount(split["labels"], minlength=num_classes)
    few = [k for k in range(num_classes) if int(counts[k]) < 4]
    if few or (n_per_class is not None and n_per_class < 4):
        log(f"warning: per-class FID needs 4 images per class (controllable.conditional."
            f"n_per_class={n_per_class}; reference images of class(es) "
            f"{', '.join(map(str, few)) or 'all >= 4'}); undefined values are written as null")


def check_case_args(names: dict, outputs: dict, inputs: Sequence[str], extractor: str,
                    per: str) -> None:
    """Before any model is loaded or sampled: ``names`` {flag: (given, known)} every name known and
    given once; ``outputs`` {flag: paths}, each flag whose paths are a list one path per case (the
    product of the names' counts); no output path given twice or equal to an input; the FID
    extractor readable."""
    from scoresde.metrics import load_feature_extractor

    n_cases = 1
    for flag, (given, known) in names.items():
        for name in given:
            if name not in known:
                raise StageError(f"{flag} {name!r} is unknown; choose from {', '.join(known)}")
        if len(set(given)) != len(given):
            raise StageError(f"{flag} {' '.join(given)} names one twice; give each once")
        n_cases *= len(given)
    paths = []
    for flag, given in outputs.items():
        if not isinstance(given, str) and len(given) != n_cases:
            raise StageError(f"give one {flag} per {per}: {n_cases} expected, got {len(given)}")
        paths += [str(Path(o).resolve()) for o in ([given] if isinstance(given, str) else given)]
    if len(set(paths)) != len(paths):
        raise StageError(f"the output paths ({', '.join(outputs)}) {' '.join(paths)} "
                         "name one file twice; give each output its own path")
    clash = set(paths) & {str(Path(i).resolve()) for i in inputs}
    if clash:
        raise StageError(f"output {sorted(clash)[0]} is also an input; write outputs elsewhere")
    load_feature_extractor(extractor)


def check_completion_args(masks: Sequence[str] | None, methods: Sequence[str], outs: Sequence[str],
                          inputs_out: str, metrics_out: str, inputs: Sequence[str],
                          extractor: str, per: str) -> None:
    """:func:`check_case_args` of inpaint (masks and methods) and colorize (methods)."""
    from scoresde.controllable import METHODS
    from scoresde.stages.masks import MASKS

    names = {"--masks": (masks, MASKS)} if masks is not None else {}
    check_case_args(names | {"--methods": (methods, METHODS)},
                    {"--out": outs, "--inputs-out": inputs_out, "--metrics": metrics_out},
                    inputs, extractor, per)


def write_all(tensors: Sequence[tuple], metrics_out: str, metrics: dict) -> None:
    """Every tensor file, then the metrics JSON last, each atomically: only once all cases ran, so
    a failure leaves no output behind, and a set with its metrics file is complete."""
    for path, obj in tensors:
        save_tensors(path, obj)
        log(f"wrote {path}")
    write_json(metrics_out, metrics)
