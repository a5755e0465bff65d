"""Tests for scoresde.data: embedded data sets, local roots, errors, scaling helpers."""

import gzip
import struct

import numpy as np
import pytest
import torch

from scoresde.data import (
    DATASETS,
    DEBIAN_FASHION_MNIST,
    DataError,
    DataWarning,
    Levels,
    fingerprint,
    from_model_space,
    gmm_log_prob,
    gmm_params,
    is_image,
    load_dataset,
    stratified,
    to_model_space,
    unit_to_uint8,
)

TOYS = ["gmm", "moons", "swissroll", "checkerboard"]


def write_idx(path, array):
    array = np.asarray(array, dtype=np.uint8)
    raw = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    raw += array.tobytes()
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)


def write_mnist_like(directory, n=(5, 3), ext=""):
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(0)
    for prefix, size in zip(("train", "t10k"), n, strict=True):
        write_idx(directory / f"{prefix}-images-idx3-ubyte{ext}", rng.randint(0, 256, (size, 28, 28)))
        write_idx(directory / f"{prefix}-labels-idx1-ubyte{ext}", np.arange(size) % 10)


def test_digits_shape_levels_and_fixed_disjoint_split():
    from sklearn.datasets import load_digits

    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert train.x.shape == (1500, 1, 8, 8) and test.x.shape == (297, 1, 8, 8)
    assert train.x.dtype == torch.uint8 and train.levels == 17 and int(train.x.max()) == 16
    # train + test is a partition of the 1797 images (compared as multisets of (image, label)).
    bunch = load_digits()
    full = sorted(im.astype(np.uint8).tobytes() + bytes([t])
                  for im, t in zip(bunch.images, bunch.target, strict=True))
    ours = sorted(x.numpy().tobytes() + bytes([int(y)])
                  for d in (train, test) for x, y in zip(d.x, d.labels, strict=True))
    assert ours == full
    again = load_dataset("digits", "test", seed=123)  # split does not depend on seed
    assert torch.equal(again.x, test.x) and torch.equal(again.labels, test.labels)
    assert len(load_dataset("digits", n=10)) == 10


@pytest.mark.parametrize("name", TOYS)
def test_toys_are_deterministic_given_seed(name):
    a, b = load_dataset(name, n=500, seed=3), load_dataset(name, n=500, seed=3)
    assert a.x.shape == (500, 2) and a.x.dtype == torch.float32 and a.levels is None
    assert torch.equal(a.x, b.x)
    assert not torch.equal(a.x, load_dataset(name, n=500, seed=4).x)
    assert not torch.equal(a.x, load_dataset(name, "test", n=500, seed=3).x)
    assert a.x.abs().max() < 6
    assert len(load_dataset(name)) == 10000 and len(load_dataset(name, "test")) == 2000


def test_gmm_samples_match_exact_density():
    weights, means, covs = gmm_params()
    assert weights.sum().item() == pytest.approx(1.0)
    x = load_dataset("gmm", n=20000).x
    torch.testing.assert_close(x.mean(0).double(), weights @ means, atol=0.05, rtol=0)
    # The density integrates to 1 (grid) and samples sit where it is high.
    g = torch.linspace(-4, 4, 401, dtype=torch.float64)
    grid = torch.cartesian_prod(g, g)
    assert gmm_log_prob(grid).exp().sum().item() * (8 / 400) ** 2 == pytest.approx(1.0, abs=1e-3)
    # Mean log density of samples ~ minus the entropy of 8 well-separated 2-D Gaussians:
    expected = -np.log(8) - np.log(2 * np.pi * np.e * 0.2**2)
    assert gmm_log_prob(x).mean().item() == pytest.approx(expected, abs=0.05)


def test_checkerboard_points_lie_on_black_squares():
    x = load_dataset("checkerboard", n=2000).x
    parity = (torch.floor(x[:, 0]) + torch.floor(x[:, 1])) % 2
    assert parity.unique().numel() == 1


def test_missing_roots_show_the_layout(tmp_path):
    with pytest.raises(DataError, match=r"MNIST/raw/\{train-images-idx3-ubyte"):
        load_dataset("mnist", root=tmp_path / "missing")
    with pytest.raises(ValueError, match="no root given"):
        load_dataset("mnist")
    with pytest.raises(DataError, match="cifar-10-batches-py"):
        load_dataset("cifar10", root=tmp_path)
    with pytest.raises(DataError, match=r"<root>/train/<class>"):
        load_dataset("image_folder", root=tmp_path / "missing")


def test_mnist_through_torchvision_layout(tmp_path):
    write_mnist_like(tmp_path / "MNIST" / "raw")
    train, test = load_dataset("mnist", root=tmp_path), load_dataset("mnist", "test", root=tmp_path)
    assert train.x.shape == (5, 1, 28, 28) and test.x.shape == (3, 1, 28, 28)
    assert train.x.dtype == torch.uint8 and train.levels == 256
    assert train.labels.tolist() == [0, 1, 2, 3, 4]


def test_fashion_mnist_from_gzipped_idx_files_in_root(tmp_path):
    write_mnist_like(tmp_path, ext=".gz")
    data = load_dataset("fashion_mnist", "test", root=tmp_path, n=2)
    assert data.x.shape == (2, 1, 28, 28) and data.labels.tolist() == [0, 1]
    raw = (tmp_path / "t10k-images-idx3-ubyte.gz").read_bytes()
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(gzip.decompress(raw)[:-9]))
    with pytest.raises(DataError, match="truncated"):
        load_dataset("fashion_mnist", "test", root=tmp_path)


@pytest.mark.skipif(not (DEBIAN_FASHION_MNIST / "t10k-images-idx3-ubyte.gz").exists(),
                    reason="Debian package dataset-fashion-mnist is not installed "
                           "(apt-get install dataset-fashion-mnist)")
def test_fashion_mnist_from_debian_package():
    test = load_dataset("fashion_mnist", "test")
    assert test.x.shape == (10000, 1, 28, 28) and test.x.dtype == torch.uint8
    assert test.levels == 256 and sorted(test.labels.unique().tolist()) == list(range(10))
    assert test.labels[:5].tolist() == [9, 2, 1, 1, 6]


def _png(path, size, value):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value, dtype=np.uint8)).save(path)


def test_image_folder_layouts(tmp_path):
    for split in ("train", "test"):
        for cls, value in (("cat", 10), ("dog", 200)):
            _png(tmp_path / "a" / split / cls / "0.png", 4, value)
    data = load_dataset("image_folder", "test", root=tmp_path / "a")
    assert data.x.shape == (2, 3, 4, 4) and data.labels.tolist() == [0, 1]
    assert data.x[1].unique().tolist() == [200] and data.levels == 256

    for i in range(10):
        _png(tmp_path / "b" / f"c{i % 2}" / f"{i}.png", 4, i)
    train, test = (load_dataset("image_folder", s, root=tmp_path / "b") for s in ("train", "test"))
    assert len(train) == 9 and len(test) == 1
    assert set(train.x[:, 0, 0, 0].tolist()).isdisjoint(test.x[:, 0, 0, 0].tolist())

    _png(tmp_path / "a" / "train" / "cat" / "big.png", 8, 0)
    with pytest.raises(DataError, match="different sizes"):
        load_dataset("image_folder", root=tmp_path / "a")


def test_an_empty_image_folder_is_refused(tmp_path):
    (tmp_path / "train" / "cat").mkdir(parents=True)
    with pytest.raises(DataError, match="Found no valid file.*Expected layout"):
        load_dataset("image_folder", "train", root=tmp_path)


def test_names_and_splits():
    assert set(DATASETS) >= {"digits", "gmm", "mnist", "fashion_mnist", "cifar10", "image_folder"}
    assert is_image("digits") and not is_image("moons")
    with pytest.raises(ValueError, match="unknown"):
        is_image("imagenet")
    with pytest.raises(ValueError, match="split"):
        load_dataset("digits", "val")


def test_scaling_helpers():
    k = torch.arange(17, dtype=torch.uint8)
    x01 = Levels(17).to_unit(k)
    assert x01[0] == 0 and x01[-1] == 1 and x01.dtype == torch.float32
    assert torch.equal(torch.round(x01 * 16).to(torch.uint8), k)
    for centered in (True, False):
        torch.testing.assert_close(from_model_space(to_model_space(x01, centered), centered), x01)
    assert to_model_space(torch.tensor([0.0, 1.0]), True).tolist() == [-1.0, 1.0]
    assert from_model_space(torch.tensor([-3.0, 3.0]), True).tolist() == [0.0, 1.0]
    assert unit_to_uint8(torch.tensor([-0.1, 0.5, 1.2])).tolist() == [0, 128, 255]


@pytest.mark.parametrize("centered", [False, True])
@pytest.mark.parametrize("dequantized", [False, True])
def test_levels_map_to_the_model_and_back(centered, dequantized):
    """Levels -> model space -> levels is the identity for both maps; the model sees [-1, 1]
    when centred; dequantised values fill each level's cell [k / L, (k + 1) / L)."""
    lv = Levels(17, centered, dequantized)
    k = torch.arange(17).repeat(40)
    gen = torch.Generator().manual_seed(0)
    x = lv.to_model(k, gen)
    assert torch.equal(lv.from_model(x), k)
    lo, hi = (-1.0, 1.0) if centered else (0.0, 1.0)
    assert lo <= x.min() and x.max() <= hi
    y = from_model_space(x, centered)
    if dequantized:
        assert ((y * 17 - k) >= 0).all() and ((y * 17 - k) <= 1).all()
        assert torch.equal(lv.to_unit(k, u=0.5), (k + 0.5) / 17)  # the cells' centres
        again = lv.to_model(k, torch.Generator().manual_seed(0))
        assert torch.equal(again, x)  # u comes from the generator only
    else:
        assert torch.equal(y, k / 16) and torch.equal(lv.to_model(k, gen), x)  # no noise drawn
    assert Levels.of({"levels": 17, "centered": centered, "dequantize": dequantized}) == lv


def _folder(root, counts, size=4, mode="RGB"):
    """root/<split>/<class>/<i>.png, counts = {split: {class: n}}; pixel value = class index."""
    from PIL import Image

    for split, classes in counts.items():
        for c, n in classes.items():
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                value = sorted(classes).index(c) * 40 + i
                Image.new(mode, (size, size), value if mode in ("L", "P") else (value,) * len(mode)
                          ).save(root / split / c / f"{i}.png")


def test_image_folder_test_labels_use_the_training_class_map(tmp_path):
    _folder(tmp_path, {"train": {"cross": 2, "square": 2, "stripes": 2},
                       "test": {"cross": 1, "stripes": 1}})  # no "square" in test
    train, test = (load_dataset("image_folder", s, root=tmp_path) for s in ("train", "test"))
    assert train.classes == test.classes == ["cross", "square", "stripes"]
    names = [test.classes[k] for k in test.labels.tolist()]
    assert sorted(names) == ["cross", "stripes"]  # stripes is label 2, as in train (not 1)
    assert sorted(test.labels.tolist()) == [0, 2]

    _folder(tmp_path, {"test": {"circle": 1}})
    with pytest.raises(DataError, match=r"class folder\(s\) circle are not among the training "
                                        r"split's classes \(cross, square, stripes\)"):
        load_dataset("image_folder", "test", root=tmp_path)


def test_stratified_subset_keeps_class_shares_seeded_and_interleaved():
    labels = torch.tensor([0] * 60 + [1] * 30 + [2] * 10)
    idx = stratified(labels, 10, torch.Generator().manual_seed(0))
    kept = labels[idx]
    assert torch.bincount(kept).tolist() == [6, 3, 1] and len(set(idx.tolist())) == 10
    assert kept[:3].tolist() == [0, 1, 2]  # round-robin: the first three cover every class
    assert torch.equal(idx, stratified(labels, 10, torch.Generator().manual_seed(0)))
    assert not torch.equal(idx, stratified(labels, 10, torch.Generator().manual_seed(1)))
    assert torch.bincount(labels[stratified(labels, 7, torch.Generator())]).tolist() == [4, 2, 1]
    assert sorted(stratified(labels, 500, torch.Generator()).tolist()) == list(range(100))


@pytest.mark.parametrize("split, n", [("train", 50), ("test", 16)])
def test_n_images_is_a_seeded_stratified_subset_for_every_dataset(split, n):
    full = load_dataset("digits", split)
    sub = load_dataset("digits", split, n=n, seed=0)
    share = torch.bincount(full.labels, minlength=10) * n / len(full)
    counts = torch.bincount(sub.labels, minlength=10)
    assert len(sub) == n and ((counts - share).abs() < 1).all()
    assert len(set(sub.labels[:10].tolist())) == 10  # the first ten: one of each digit
    assert torch.equal(sub.x, load_dataset("digits", split, n=n, seed=0).x)
    assert not torch.equal(sub.x, load_dataset("digits", split, n=n, seed=1).x)


def test_image_folder_order_is_interleaved_over_classes(tmp_path):
    _folder(tmp_path, {"train": {"a": 4, "b": 4}, "test": {"a": 3, "b": 3}})
    test = load_dataset("image_folder", "test", root=tmp_path)
    assert test.labels.tolist() == [0, 1, 0, 1, 0, 1]  # not all of class a first
    two = load_dataset("image_folder", "test", root=tmp_path, n=2)
    assert sorted(two.labels.tolist()) == [0, 1]


def test_bad_images_are_named(tmp_path):
    from PIL import Image

    _folder(tmp_path / "cut", {"train": {"a": 2}})
    png = tmp_path / "cut/train/a/1.png"
    noise = np.random.RandomState(0).randint(0, 256, (4, 4, 3), dtype=np.uint8)
    Image.fromarray(noise).save(png)
    png.write_bytes(png.read_bytes()[:-30])  # truncated inside the pixel data
    with pytest.raises(DataError, match=f"image file {png} cannot be read"):
        load_dataset("image_folder", root=tmp_path / "cut")

    _folder(tmp_path / "sizes", {"train": {"a": 3}})
    _folder(tmp_path / "sizes", {"train": {"b": 1}}, size=6)
    with pytest.raises(DataError, match=r"different sizes \(4x4: 3 file\(s\), e\.g\. .*a/0\.png.*; "
                                        r"6x6: 1 file\(s\), e\.g\. .*b/0\.png\)"):
        load_dataset("image_folder", root=tmp_path / "sizes")


def test_grey_and_rgba_images_are_converted_with_one_warning(tmp_path):
    _folder(tmp_path, {"train": {"a": 3}})
    _folder(tmp_path, {"train": {"b": 2}}, mode="L")
    _folder(tmp_path, {"train": {"c": 1}}, mode="RGBA")
    with pytest.warns(DataWarning) as caught:
        data = load_dataset("image_folder", root=tmp_path)
    assert len(caught) == 1
    assert "converted 3 of 6 images to RGB (2 L, 1 RGBA; alpha dropped)" in str(caught[0].message)
    assert data.x.shape == (6, 3, 4, 4)
    grey = data.x[data.labels == 1]
    assert torch.equal(grey[:, 0], grey[:, 1]) and torch.equal(grey[:, 1], grey[:, 2])


def test_a_fake_cifar10_root_names_the_file_that_fails_the_checksum(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (folder / name).write_bytes(b"not the official file")
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", "test", root=tmp_path)
    message = str(err.value)
    assert f"{folder / 'test_batch'}" in message and "MD5" in message
    assert "unmodified official cifar-10-python.tar.gz" in message
    (folder / "data_batch_3").unlink()
    with pytest.raises(DataError, match=f"data_batch_3 missing in {folder}; .*data_batch_1, "):
        load_dataset("cifar10", "train", root=tmp_path)


def test_the_raw_fingerprint_follows_the_files(tmp_path):
    _folder(tmp_path, {"train": {"a": 2}})
    before = fingerprint("image_folder", tmp_path)
    assert before == fingerprint("image_folder", tmp_path) and len(before) == 64
    (tmp_path / "train/a/new.png").write_bytes((tmp_path / "train/a/0.png").read_bytes())
    added = fingerprint("image_folder", tmp_path)
    assert added != before
    (tmp_path / "train/a/new.png").write_bytes(b"edited, corrupt")
    assert fingerprint("image_folder", tmp_path) not in (before, added)
    assert fingerprint("digits", None) == "" and fingerprint("image_folder", tmp_path / "no") == ""
