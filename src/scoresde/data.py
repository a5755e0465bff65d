"""Datasets as in-memory tensors, and the maps between pixel levels and model space.

Images come back as uint8 integer levels (N, C, H, W) in 0..levels-1, 2-D toys as float32
(N, 2). Nothing is downloaded:

- "digits": scikit-learn's bundled 8x8 digits, levels 0..16 (levels=17). Fixed split: a
  `numpy.random.RandomState(0)` permutation of the 1797 images; the last 297 are the test set,
  the first 1500 the training set (independent of `seed`).
- "gmm", "moons", "swissroll", "checkerboard": sampled with a `torch.Generator` from the
  stream `utils.seed_stream(seed, "data", 0)` (train) or `(seed, "data", 1)` (test); n
  defaults to 10000 (train) / 2000 (test).
- "mnist", "fashion_mnist", "cifar10": torchvision with download=False from `root`;
  "fashion_mnist" with root=None reads Debian's package dataset-fashion-mnist.
- "image_folder": torchvision ImageFolder, labels = class sub-folder, numbered by the training
  split's sorted class names for both splits (a test class absent from train is an error).
  Images are read as RGB: grey, palette and RGBA images among them are converted (alpha
  dropped) with one `DataWarning` per split naming how many; an unreadable or truncated file,
  or images of different sizes, are a `DataError` naming the files.

With `n`, an image split keeps a seeded stratified subset of n images (:func:`stratified`;
the stream `utils.seed_stream(seed, "data", 3)` for train, `(seed, "data", 4)` for test): each
class keeps its share of the split (largest remainders), picked at random, and the kept images
are ordered round-robin over the classes, so any first k of them are spread over the classes too.
An image folder's split is put in that class-interleaved order even without `n` (its files are
read class by class). Other datasets keep their shipped order when `n` is None.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .utils import Generator, rand, seeded_generator

TOYS = ("gmm", "moons", "swissroll", "checkerboard")
IMAGES = ("digits", "mnist", "fashion_mnist", "cifar10", "image_folder")
DATASETS = IMAGES[:1] + TOYS + IMAGES[1:]
SPLITS = ("train", "test")
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
DIGITS_TEST_SIZE = 297

CLASS_NAMES = {
    "fashion_mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                      "Sneaker", "Bag", "Ankle boot"],
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                "truck"],
}

_IDX = ("train-images-idx3-ubyte, train-labels-idx1-ubyte, "
        "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte")
LAYOUTS = {
    "mnist": f"<root>/MNIST/raw/{{{_IDX}}} (torchvision's layout, un-gzipped), or those four "
             "files (.gz or not) directly in <root>",
    "fashion_mnist": f"<root>/FashionMNIST/raw/{{{_IDX}}} (torchvision's layout, un-gzipped), "
                     "or those four files (.gz or not) directly in <root>; with no root, install "
                     f"the Debian package dataset-fashion-mnist ({DEBIAN_FASHION_MNIST}/*.gz)",
    "cifar10": "<root>/cifar-10-batches-py/{data_batch_1, ..., data_batch_5, test_batch, "
               "batches.meta} (the CIFAR-10 python version: tar -xzf cifar-10-python.tar.gz "
               "-C <root>)",
    "image_folder": "<root>/train/<class>/<image>.png and <root>/test/<class>/<image>.png, or "
                    "<root>/<class>/<image>.png (then the last 10% of a fixed permutation is the "
                    "test split); all images of one size",
}


class DataError(ValueError):
    """A dataset cannot be found or read; the message shows the expected layout."""


class DataWarning(UserWarning):
    """Images were read, but changed on the way (e.g. grey or RGBA converted to RGB)."""


@dataclass
class Dataset:
    """x: uint8 levels (N, C, H, W) or float32 points (N, D); labels: (N,) long or None;
    classes: the name of each label (image folders, CIFAR-10, Fashion-MNIST) or None."""

    x: torch.Tensor
    labels: torch.Tensor | None
    levels: int | None
    name: str
    classes: list[str] | None = None  # class names by label, where the dataset has them

    def __len__(self) -> int:
        return len(self.x)


def is_image(name: str) -> bool:
    """True for image datasets, False for 2-D toys; ValueError for unknown names."""
    _check_name(name)
    return name in IMAGES


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise ValueError(f"data.dataset={name!r} is unknown; use one of {DATASETS}")


def load_dataset(name: str, split: str = "train", root: str | Path | None = None,
                 n: int | None = None, seed: int = 0) -> Dataset:
    """Load a split of `name`. For images `n` keeps a seeded stratified subset of n examples
    (:func:`stratified`, stream ``(seed, "data", 3 | 4)`` for train | test); for toys it is
    the number of points drawn (default 10000 train / 2000 test) and `seed` picks the draw."""
    _check_name(name)
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is unknown; use one of {SPLITS}")
    if name in TOYS:
        size = n if n is not None else (10000 if split == "train" else 2000)
        gen = seeded_generator(seed, "data", SPLITS.index(split))
        x, labels = TOY_SAMPLERS[name](size, gen)
        return Dataset(x.float(), labels, None, name)
    loaders = {"digits": _digits, "mnist": _mnist, "fashion_mnist": _mnist,
               "cifar10": _cifar10, "image_folder": _image_folder}
    x, labels, levels = loaders[name](name, split, root)
    labels = labels.long()
    if n is not None or name == "image_folder":
        gen = seeded_generator(seed, "data", 3 + SPLITS.index(split))
        idx = stratified(labels, len(labels) if n is None else n, gen)
        x, labels = x[idx], labels[idx]
    classes = _folder_classes(Path(root)) if name == "image_folder" else CLASS_NAMES.get(name)
    return Dataset(x.contiguous(), labels, levels, name, classes)


def stratified(labels: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """Indices of a stratified random subset of n of `labels` (all when n >= len(labels)).

    Class c keeps round(n * share_c) examples (largest remainders, so the counts sum to n),
    drawn at random with `generator`; the indices are ordered round-robin over the classes
    (one of each class in turn, classes by label), so any prefix is spread over the classes.
    """
    if n < 1:
        raise ValueError(f"n={n} must be at least 1")
    n = min(n, len(labels))
    if n == 0:
        return torch.zeros(0, dtype=torch.long)
    classes, counts = labels.unique(return_counts=True)
    exact = counts.double() * n / len(labels)
    quota = exact.floor().long()
    extra = n - int(quota.sum())
    if extra:  # the largest remainders get one more (ties: the larger class, then the label)
        order = sorted(range(len(classes)), key=lambda i: (-(exact[i] - quota[i]).item(),
                                                           -int(counts[i]), i))
        quota[order[:extra]] += 1
    picks, turn = [], []
    for j, (c, k) in enumerate(zip(classes.tolist(), quota.tolist(), strict=True)):
        members = (labels == c).nonzero()[:, 0]
        picks.append(members[torch.randperm(len(members), generator=generator)[:k]])
        turn.append(torch.arange(k) * len(classes) + j)  # round i, class j
    return torch.cat(picks)[torch.cat(turn).argsort()]


def raw_files(name: str, root: str | Path | None) -> list[Path]:
    """The files a dataset is read from: every file under `root` (Debian's Fashion-MNIST folder
    for fashion_mnist without a root), sorted; none for the embedded datasets."""
    _check_name(name)
    if name == "fashion_mnist" and root is None:
        root = DEBIAN_FASHION_MNIST
    if name == "digits" or name in TOYS or root is None or not Path(root).is_dir():
        return []
    return sorted(Path(dirpath) / f for dirpath, _, files in os.walk(root) for f in files)


def fingerprint(name: str, root: str | Path | None) -> str:
    """A SHA-256 of the relative path, size and modification time of every raw file of the
    dataset (:func:`raw_files`): it changes when a file is added, removed, replaced or edited.
    "" for the embedded datasets and a root that does not exist."""
    files = raw_files(name, root)
    if not files:
        return ""
    base = DEBIAN_FASHION_MNIST if root is None else Path(root)
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        digest.update(f"{path.relative_to(base)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


# ---------------------------------------------------------------- images


def _digits(name: str, split: str, root: object) -> tuple[torch.Tensor, torch.Tensor, int]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    perm = np.random.RandomState(0).permutation(len(bunch.images))
    idx = perm[-DIGITS_TEST_SIZE:] if split == "test" else perm[:-DIGITS_TEST_SIZE]
    x = torch.from_numpy(bunch.images[idx].astype(np.uint8))[:, None]
    return x, torch.from_numpy(bunch.target[idx]), 17


def _read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (MNIST format, optionally gzipped) of unsigned bytes."""
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise DataError(f"{path} cannot be read: {err}") from None
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != 0x08:
        raise DataError(f"{path} is not an IDX file of unsigned bytes")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != math.prod(dims):
        raise DataError(f"{path} is truncated: {data.size} bytes for shape {dims}")
    return data.reshape(dims)


def _idx_dir(name: str, directory: Path, split: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Images and labels from the split's two IDX files in `directory` (.gz or not); None when
    neither is there, DataError naming the file when only one is."""
    prefix = "train" if split == "train" else "t10k"
    paths = {kind: next((p for p in (directory / f"{prefix}-{kind}-ubyte{ext}" for ext in ("", ".gz"))
                         if p.is_file()), None) for kind in ("images-idx3", "labels-idx1")}
    if not any(paths.values()):
        return None
    for kind, path in paths.items():
        if path is None:
            raise _missing(name, directory, f"{prefix}-{kind}-ubyte(.gz) is missing beside "
                                            f"the {split} split's other IDX file")
    images, labels = (torch.from_numpy(_read_idx(path).copy()) for path in paths.values())
    if images.ndim != 3 or len(images) != len(labels):
        raise DataError(f"IDX files in {directory} do not match: images {tuple(images.shape)}, "
                        f"labels {tuple(labels.shape)}")
    return images[:, None], labels


def _missing(name: str, root: object, why: str) -> DataError:
    return DataError(f"{name}: {why} (root={root}). Expected layout: {LAYOUTS[name]}")


def _why(err: Exception) -> str:
    """torchvision's reason, without its advice to download."""
    if isinstance(err, RuntimeError) and "not found" in str(err):
        return "dataset files not found or corrupted"
    return f"dataset files cannot be read ({type(err).__name__}: {err})"


def _mnist(name: str, split: str, root: str | Path | None):
    if root is None:
        if name == "fashion_mnist":
            found = _idx_dir(name, DEBIAN_FASHION_MNIST, split)
            if found is None:
                raise _missing(name, root, f"no files in {DEBIAN_FASHION_MNIST}; run "
                                           "`apt-get install dataset-fashion-mnist` or pass root")
            return (*found, 256)
        raise _missing(name, root, "no root given")
    from torchvision import datasets

    cls = datasets.MNIST if name == "mnist" else datasets.FashionMNIST
    try:
        ds = cls(str(root), train=split == "train", download=False)
        return ds.data[:, None], ds.targets, 256
    except Exception as err:  # not there, or unreadable: try the plain IDX files in root
        found = _idx_dir(name, Path(root), split)
        if found is None:
            raise _missing(name, root, _why(err)) from None
        return (*found, 256)


def _cifar10(name: str, split: str, root: str | Path | None):
    if root is None:
        raise _missing(name, root, "no root given")
    from torchvision import datasets

    try:
        ds = datasets.CIFAR10(str(root), train=split == "train", download=False)
    except Exception as err:
        raise _missing(name, root, _cifar_why(err, Path(root), split)) from None
    return torch.from_numpy(ds.data).permute(0, 3, 1, 2), torch.tensor(ds.targets), 256


def _cifar_why(err: Exception, root: Path, split: str) -> str:
    """torchvision's reason; for files in the right layout that fail its MD5 check, which."""
    from torchvision import datasets
    from torchvision.datasets.utils import check_integrity

    folder = root / datasets.CIFAR10.base_folder
    lists = datasets.CIFAR10.train_list if split == "train" else datasets.CIFAR10.test_list
    listed = [*lists, [datasets.CIFAR10.meta["filename"], datasets.CIFAR10.meta["md5"]]]
    if not folder.is_dir():
        return _why(err)
    missing = [f for f, _ in listed if not (folder / f).is_file()]
    failed = [f for f, md5 in listed if f not in missing
              and not check_integrity(str(folder / f), md5)]
    why = [f"{', '.join(missing)} missing in {folder}"] if missing else []
    if failed:
        why.append(f"{', '.join(str(folder / f) for f in failed)} fail(s) torchvision's MD5 "
                   "check: only the files of the unmodified official cifar-10-python.tar.gz "
                   "pass; extract that archive again")
    return "; ".join(why) or _why(err)


def _image_folder(name: str, split: str, root: str | Path | None):
    if root is None or not Path(root).is_dir():
        raise _missing(name, root, "root is not a directory")
    from torchvision import datasets

    root = Path(root)
    split_dirs = (root / "train").is_dir()
    directory = root / split if split_dirs else root
    try:
        found = datasets.ImageFolder(str(directory))
        classes = (datasets.ImageFolder(str(root / "train")).class_to_idx
                   if split_dirs and split == "test" else found.class_to_idx)
    except (FileNotFoundError, RuntimeError) as err:
        raise _missing(name, root, f"{directory}: {err}") from None
    unknown = sorted(set(found.classes) - set(classes))
    if unknown:
        raise _missing(name, root, f"the test split's class folder(s) {', '.join(unknown)} "
                                   f"are not among the training split's classes "
                                   f"({', '.join(classes)}); add them to {root / 'train'} or "
                                   "remove them from the test split")
    samples = [(path, classes[found.classes[label]]) for path, label in found.samples]
    if not split_dirs:
        perm = np.random.RandomState(0).permutation(len(samples))
        n_test = max(1, len(samples) // 10)
        samples = [samples[i] for i in (perm[-n_test:] if split == "test" else perm[:-n_test])]
    images, modes = zip(*(_read_rgb(path) for path, _ in samples), strict=True)
    _check_sizes(name, root, [path for path, _ in samples], images)
    converted = {m: modes.count(m) for m in sorted(set(modes) - {"RGB"})}
    if converted:
        kinds = ", ".join(f"{k} {m}" for m, k in converted.items())
        alpha = "; alpha dropped" if any("A" in m for m in converted) else ""
        warnings.warn(f"{name} {split}: converted {sum(converted.values())} of {len(images)} "
                      f"images to RGB ({kinds}{alpha}) in {directory}", DataWarning, stacklevel=3)
    return torch.stack(images), torch.tensor([label for _, label in samples]), 256


def _folder_classes(root: Path) -> list[str]:
    """An image folder's class names by label: the training split's sorted class folders."""
    from torchvision.datasets.folder import find_classes

    split_dirs = (root / "train").is_dir()
    return find_classes(str(root / "train" if split_dirs else root))[0]


def _check_sizes(name: str, root: Path, paths: list[str], images) -> None:
    """DataError naming the files of each size when the images are not all of one size."""
    by_size: dict[tuple, list[str]] = {}
    for path, im in zip(paths, images, strict=True):
        by_size.setdefault(tuple(im.shape[1:]), []).append(path)
    if len(by_size) < 2:
        return
    groups = sorted(by_size.items(), key=lambda kv: -len(kv[1]))
    text = "; ".join(f"{h}x{w}: {len(files)} file(s), e.g. {', '.join(files[:3])}"
                     for (h, w), files in groups)
    raise _missing(name, root, f"images have different sizes ({text}); resize them to one "
                               f"size (most are {groups[0][0][0]}x{groups[0][0][1]})")


def _read_rgb(path: str) -> tuple[torch.Tensor, str]:
    """An image file as uint8 RGB (3, H, W) and the mode it was stored in."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            mode = img.mode
            rgb = np.asarray(img.convert("RGB")).copy()
    except (OSError, SyntaxError, ValueError, UnidentifiedImageError) as err:
        raise DataError(f"image file {path} cannot be read ({err}); replace or remove it") from None
    return torch.from_numpy(rgb).permute(2, 0, 1), mode


# ---------------------------------------------------------------- 2-D toys


def gmm_params() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(weights (8,), means (8, 2), covariances (8, 2, 2)) of the "gmm" toy, float64:
    8 equal-weight isotropic Gaussians (std 0.2) evenly spaced on a circle of radius 2."""
    angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    means = 2.0 * torch.stack([angles.cos(), angles.sin()], dim=1)
    covs = 0.2**2 * torch.eye(2, dtype=torch.float64).expand(8, 2, 2).clone()
    return torch.full((8,), 1 / 8, dtype=torch.float64), means, covs


def gmm_log_prob(x: torch.Tensor) -> torch.Tensor:
    """Exact log density of the "gmm" toy at points x (N, 2)."""
    weights, means, covs = gmm_params()
    comps = torch.distributions.MultivariateNormal(means, covs)
    return torch.logsumexp(comps.log_prob(x.double()[:, None]) + weights.log(), dim=1)


def _gmm(n: int, gen: torch.Generator):
    weights, means, covs = gmm_params()
    comp = torch.multinomial(weights, n, replacement=True, generator=gen)
    z = torch.randn(n, 2, 1, generator=gen, dtype=torch.float64)
    return means[comp] + (torch.linalg.cholesky(covs)[comp] @ z)[..., 0], comp


def _moons(n: int, gen: torch.Generator):
    """Two interleaved half circles (as sklearn's make_moons, noise 0.1), centred."""
    label = (torch.rand(n, generator=gen) < 0.5).long()
    t = math.pi * torch.rand(n, generator=gen)
    outer = torch.stack([t.cos(), t.sin()], dim=1)
    inner = torch.stack([1 - t.cos(), 0.5 - t.sin()], dim=1)
    x = torch.where(label[:, None] == 0, outer, inner) + 0.1 * torch.randn(n, 2, generator=gen)
    return x - torch.tensor([0.5, 0.25]), label


def _swissroll(n: int, gen: torch.Generator):
    """sklearn's make_swiss_roll (x, z) plane with noise 1, divided by 5 (as in FFJORD)."""
    t = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=gen))
    x = torch.stack([t * t.cos(), t * t.sin()], dim=1) + torch.randn(n, 2, generator=gen)
    return x / 5.0, None


def _checkerboard(n: int, gen: torch.Generator):
    """Uniform on the black squares of a 4x4 board on [-2, 2]^2 (FFJORD's toy)."""
    x1 = 4 * torch.rand(n, generator=gen) - 2
    x2 = torch.rand(n, generator=gen) - 2 * torch.randint(0, 2, (n,), generator=gen)
    return torch.stack([x1, x2 + torch.floor(x1) % 2], dim=1), None


TOY_SAMPLERS = {"gmm": _gmm, "moons": _moons, "swissroll": _swissroll,
                "checkerboard": _checkerboard}


# ---------------------------------------------------------------- scaling


@dataclass(frozen=True)
class Levels:
    """The map between a dataset's integer levels, [0, 1], the score model's space and uint8.

    Level k in {0, ..., L-1} is y = k / (L - 1) in [0, 1], or, dequantised, y = (k + u) / L with
    u ~ U[0, 1) (level k owns the cell [k / L, (k + 1) / L), the map under the likelihood's
    bits/dim); the model sees y, or 2y - 1 when centred (the paper's [-1, 1] for CIFAR-10); an
    image pixel is round(255 k / (L - 1)). Training, the likelihood, sampling, FID and the
    controllable stages all map through this one object (:meth:`of` a checkpoint's config).
    """

    levels: int
    centered: bool = False
    dequantized: bool = False

    @classmethod
    def of(cls, config) -> Levels:
        """The map a checkpoint's config records (``levels``, ``centered``, ``dequantize``)."""
        return cls(int(config["levels"]), bool(config["centered"]), bool(config["dequantize"]))

    def to_unit(self, k: torch.Tensor, generator: Generator = None, u=None) -> torch.Tensor:
        """Levels -> [0, 1]: k / (L - 1), or (k + u) / L when dequantised, with u ~ U[0, 1)
        drawn from `generator` (one, or one per sample) unless given (0.5: the cells' centres)."""
        if not self.dequantized:
            return k.float() / (self.levels - 1)
        dtype = torch.get_default_dtype()
        if u is None:
            u = rand(k.shape, generator, device=k.device, dtype=dtype)
        return (k.to(dtype) + u) / self.levels

    def to_model(self, k: torch.Tensor, generator: Generator = None, u=None) -> torch.Tensor:
        """Levels -> the model's space (:meth:`to_unit`, then [-1, 1] when centred)."""
        return to_model_space(self.to_unit(k, generator, u), self.centered)

    def from_unit(self, y: torch.Tensor) -> torch.Tensor:
        """[0, 1] -> levels (long), inverting :meth:`to_unit`: the nearest level
        round((L - 1) y), or the dequantised cell floor(L y)."""
        y = y.clamp(0, 1)
        if self.dequantized:
            return torch.floor(y * self.levels).clamp(max=self.levels - 1).long()
        return torch.round(y * (self.levels - 1)).long()

    def from_model(self, x: torch.Tensor) -> torch.Tensor:
        """Model-space values (e.g. samples) -> levels, inverting :meth:`to_model`."""
        return self.from_unit(from_model_space(x, self.centered))

    def to_uint8(self, k: torch.Tensor) -> torch.Tensor:
        """Levels -> uint8 0..255, round(255 k / (L - 1)) (the identity for 256 levels)."""
        return torch.round(k.double() * (255.0 / (self.levels - 1))).to(torch.uint8)


def to_model_space(x01: torch.Tensor, centered: bool) -> torch.Tensor:
    """[0, 1] -> [-1, 1] when `centered` (the paper's CIFAR-10 setting), else unchanged."""
    return 2 * x01 - 1 if centered else x01


def from_model_space(x: torch.Tensor, centered: bool) -> torch.Tensor:
    """Inverse of `to_model_space`, clamped to [0, 1]."""
    return ((x + 1) / 2 if centered else x).clamp(0, 1)


def unit_to_uint8(x01: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> uint8 0..255 (rounded), e.g. for FID."""
    return (x01.clamp(0, 1) * 255).round().to(torch.uint8)
