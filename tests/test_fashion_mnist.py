"""The 28x28 path on real images: the whole DAG on a slice of Fashion-MNIST (Debian's package
dataset-fashion-mnist, installed by `make test` when root), and the data problems a user of the
real files can run into, each refused with the file and the fix named."""

from __future__ import annotations

import csv
import gzip
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from scoresde.data import DEBIAN_FASHION_MNIST, DataError, load_dataset

ROOT = Path(__file__).resolve().parents[1]
FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
         "t10k-labels-idx1-ubyte")
HAVE_PACKAGE = all((DEBIAN_FASHION_MNIST / f"{name}.gz").is_file() for name in FILES)
needs_package = pytest.mark.skipif(
    not HAVE_PACKAGE, reason=f"Debian package dataset-fashion-mnist is not installed (no "
                             f"{DEBIAN_FASHION_MNIST}/*.gz): `apt-get install "
                             "dataset-fashion-mnist`, which `make test` does when root")


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@needs_package
@pytest.mark.slow
def test_dag_end_to_end_on_real_28x28_images(tmp_path):
    for name in ("Snakefile", "params.yaml", "workflow", ".test", "config"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, tmp_path / name)
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", ".test/params.yaml",
         ".test/fashion_mnist.yaml"], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=600)
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    data = torch.load(tmp_path / "data/processed/fashion_mnist/train.pt", weights_only=True)
    assert data["x"].shape == (300, 1, 28, 28) and data["levels"] == 256
    reference = torch.load(tmp_path / "data/processed/fashion_mnist/reference.pt",
                           weights_only=True)["images"]
    test = torch.load(tmp_path / "data/processed/fashion_mnist/test.pt", weights_only=True)
    assert torch.equal(reference, test["x"])  # reference_split: test, 256 levels = uint8 already
    samples = sorted((tmp_path / "samples/fashion_mnist/vp").glob("*.pt"))
    assert samples, "no sample files"
    for path in samples:
        x = torch.load(path, weights_only=True)
        x = x["images"] if isinstance(x, dict) else x
        assert tuple(x.shape[1:]) == (1, 28, 28)

    metrics = _rows(tmp_path / "reports/metrics.csv")
    assert {r["dataset"] for r in metrics} == {"fashion_mnist"}
    assert all(float(r["fid"]) >= 0 and float(r["nfe"]) > 0 for r in metrics)
    nll = _rows(tmp_path / "reports/likelihood.csv")
    assert [r["sde"] for r in nll][:1] == ["vp"] and all(float(r["bpd"]) > 0 for r in nll)
    assert (tmp_path / "reports/report.html").stat().st_size > 1000
    assert (tmp_path / "reports/controllable.csv").is_file()
    print(f"Fashion-MNIST slice DAG: {seconds:.0f} s")


def _copy_real(tmp_path: Path, drop: str | None = None) -> Path:
    root = tmp_path / "fm"
    root.mkdir()
    for name in FILES:
        if name != drop:
            shutil.copy2(DEBIAN_FASHION_MNIST / f"{name}.gz", root / f"{name}.gz")
    return root


@needs_package
def test_real_files_from_a_root_match_the_package(tmp_path):
    root = _copy_real(tmp_path)
    ours = load_dataset("fashion_mnist", "test", root=root, n=50)
    package = load_dataset("fashion_mnist", "test", n=50)
    assert torch.equal(ours.x, package.x) and torch.equal(ours.labels, package.labels)


@needs_package
def test_a_missing_idx_file_is_named(tmp_path):
    root = _copy_real(tmp_path, drop="t10k-labels-idx1-ubyte")
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte") as err:
        load_dataset("fashion_mnist", "test", root=root)
    assert "Expected layout" in str(err.value)
    assert len(load_dataset("fashion_mnist", "train", root=root, n=3)) == 3  # train is complete


@needs_package
def test_a_truncated_idx_file_is_named(tmp_path):
    root = _copy_real(tmp_path)
    path = root / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-784]))
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz is truncated"):
        load_dataset("fashion_mnist", "test", root=root)
    path.write_bytes(path.read_bytes()[:1000])  # a cut download: the gzip stream ends early
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz cannot be read"):
        load_dataset("fashion_mnist", "test", root=root)


def test_a_root_with_the_wrong_layout_shows_the_expected_one(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "train-images.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"FashionMNIST/raw/\{train-images-idx3-ubyte"):
        load_dataset("fashion_mnist", "train", root=tmp_path)
