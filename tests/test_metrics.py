"""FID/KID through torch-fidelity with the trained classifier features (scikit-learn digits)."""

import pytest
import torch
import torch_fidelity
from sklearn.datasets import load_digits

from scoresde import metrics
from scoresde.checkpoint import CheckpointError, save_checkpoint


def _noisy(images, sigma, seed=1):
    g = torch.Generator().manual_seed(seed)
    noise = sigma * 255 * torch.randn(images.shape, generator=g)
    return (images.float() + noise).clamp(0, 255).round().to(torch.uint8)


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    levels = torch.tensor(d.images, dtype=torch.long).unsqueeze(1)  # (1797, 1, 8, 8), 0..16
    images = metrics.as_uint8_images(levels, levels=17)
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    train, test = perm[:1437], perm[1437:]
    labels = torch.tensor(d.target)
    return {"images": images, "labels": labels, "train": train, "test": test, "levels": levels}


@pytest.fixture(scope="module")
def classifier(digits, tmp_path_factory):
    tr = digits["train"]
    state, config = metrics.train_feature_extractor(
        digits["images"][tr], digits["labels"][tr], seed=0, dataset="digits"
    )
    path = tmp_path_factory.mktemp("clf") / "features.pt"
    save_checkpoint(path, state, config)
    return {"state": state, "config": config, "path": path}


def test_classifier_accuracy_on_held_out_digits(digits, classifier):
    te = digits["test"]
    acc = metrics.classifier_accuracy(
        classifier["state"], classifier["config"], digits["images"][te], digits["labels"][te]
    )
    assert acc > 0.9
    assert classifier["config"]["arch"] == metrics.ARCH
    assert classifier["config"]["image_size"] == [8, 8]


def test_training_is_deterministic_and_levels_match_uint8(digits):
    tr = digits["train"][:300]
    x, y = digits["levels"][tr], digits["labels"][tr]
    a, _ = metrics.train_feature_extractor(x, y, levels=17, epochs=2, seed=3)
    b, _ = metrics.train_feature_extractor(digits["images"][tr], y, epochs=2, seed=3)
    c, _ = metrics.train_feature_extractor(x, y, levels=17, epochs=2, seed=4)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_fid_of_a_set_with_itself_is_zero(digits, classifier):
    half = digits["images"][0::2]
    out = metrics.compute_fid_kid(half, half, classifier["path"])
    assert abs(out["fid"]) < 1e-6
    assert set(out) == {"fid", "kid", "kid_std", "feature_extractor"}
    assert out["feature_extractor"] == "scoresde-classifier (trained on digits; not Inception)"


def test_fid_ranks_noise_above_a_real_split_and_grows_with_noise(digits, classifier):
    a, b = digits["images"][0::2], digits["images"][1::2]
    split = metrics.compute_fid_kid(a, b, classifier["path"], seed=0)
    noisy = [metrics.compute_fid_kid(_noisy(a, s), a, classifier["path"]) for s in (0.05, 0.1, 0.2)]
    fids = [o["fid"] for o in noisy]
    kids = [o["kid"] for o in noisy]
    assert fids[1] > split["fid"]
    assert fids[0] < fids[1] < fids[2]
    assert kids[0] < kids[1] < kids[2]
    assert split["kid"] < kids[2] and noisy[2]["kid_std"] > 0


def test_grayscale_and_rgb_inputs_agree_and_other_sizes_are_resized(digits, classifier):
    a, b = digits["images"][0:400], digits["images"][400:800]
    gray = metrics.compute_fid_kid(a, b, classifier["path"])
    rgb = metrics.compute_fid_kid(a.expand(-1, 3, -1, -1), b.expand(-1, 3, -1, -1),
                                  classifier["path"])  # fmt: skip
    assert gray["fid"] == pytest.approx(rgb["fid"], rel=1e-6)
    big = torch.nn.functional.interpolate(a.float(), scale_factor=2).to(torch.uint8)
    big_b = torch.nn.functional.interpolate(b.float(), scale_factor=2).to(torch.uint8)
    out = metrics.compute_fid_kid(big, big_b, classifier["path"])
    assert out["fid"] == pytest.approx(gray["fid"], rel=0.5)


def test_registration_is_explicit_and_idempotent():
    name = metrics.register_classifier_extractor()
    assert metrics.register_classifier_extractor() == name == "scoresde-classifier"
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    assert FEATURE_EXTRACTORS_REGISTRY[name] is metrics.ClassifierFeatureExtractor


def test_inception_weights_route_to_inception_v3(monkeypatch, tmp_path, digits):
    seen = {}

    def fake(**kwargs):
        seen.update(kwargs)
        return {"frechet_inception_distance": 1.0, "kernel_inception_distance_mean": 0.1,
                "kernel_inception_distance_std": 0.01}  # fmt: skip

    weights = tmp_path / "inception.pth"
    weights.write_bytes(b"stub")
    monkeypatch.setattr(torch_fidelity, "calculate_metrics", fake)
    x = digits["images"][:20]
    out = metrics.compute_fid_kid(x, x, inception_weights=weights, kid_subset_size=10, seed=7)
    assert out == {"fid": 1.0, "kid": 0.1, "kid_std": 0.01, "feature_extractor": "inception-v3"}
    assert seen["feature_extractor"] == "inception-v3-compat"
    assert seen["feature_extractor_weights_path"] == str(weights)
    assert (seen["kid_subset_size"], seen["rng_seed"], seen["cuda"]) == (10, 7, False)
    assert seen["input1"][0].shape == (3, 8, 8) and seen["input1"][0].dtype == torch.uint8


def test_clear_errors(digits, classifier, tmp_path):
    x = digits["images"][:50]
    with pytest.raises(ValueError, match="extractor_weights_path"):
        metrics.compute_fid_kid(x, x)
    with pytest.raises(CheckpointError, match="nope.pt"):
        metrics.compute_fid_kid(x, x, tmp_path / "nope.pt")
    with pytest.raises(FileNotFoundError, match="inception"):
        metrics.compute_fid_kid(x, x, inception_weights=tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="2-D toy"):
        metrics.compute_fid_kid(torch.zeros(50, 2), torch.zeros(50, 2), classifier["path"])
    with pytest.raises(ValueError, match="uint8"):
        metrics.compute_fid_kid(x.float() / 255, x, classifier["path"])
    with pytest.raises(ValueError, match="kid_subset_size"):
        metrics.compute_fid_kid(x, x, classifier["path"], kid_subset_size=51)
    save_checkpoint(tmp_path / "unet.pt", {"w": torch.zeros(1)}, {"arch": "unet"})
    with pytest.raises(ValueError, match="not a scoresde-classifier"):
        metrics.compute_fid_kid(x, x, tmp_path / "unet.pt")


def test_cpu_threads_limits_and_restores():
    before = torch.get_num_threads()
    with metrics.cpu_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with metrics.cpu_threads(None):
        assert torch.get_num_threads() == before
