"""FID/KID through torch-fidelity with the trained classifier features (scikit-learn digits)."""

import math

import pytest
import torch
import torch_fidelity
from sklearn.datasets import load_digits

from scoresde import metrics
from scoresde.checkpoint import CheckpointError, save_checkpoint
from scoresde.metrics import bootstrap, fidelity


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
    assert classifier["config"]["arch"] == metrics.EXTRACTOR_NAME
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


def test_the_extractor_label_carries_its_test_accuracy(digits, classifier, tmp_path):
    te = digits["test"]
    acc = metrics.classifier_accuracy(classifier["state"], classifier["config"],
                                      digits["images"][te], digits["labels"][te])
    path = tmp_path / "features.pt"
    save_checkpoint(path, classifier["state"], {**classifier["config"], "test_accuracy": acc})
    half = digits["images"][0::2]
    out = metrics.compute_fid_kid(half, half, path)
    assert out["feature_extractor"] == (f"scoresde-classifier (trained on digits, test accuracy "
                                        f"{acc:.3f}; not Inception)")


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

    class Fake(torch.nn.Module):
        def forward(self, x):
            seen["input"] = x
            return (x.double().flatten(1)[:, :4] + torch.arange(len(x))[:, None],)

        def convert_features_tuple_to_dict(self, features):
            return {"2048": features[0]}

    def fake(name, features_list, cuda=True, **kwargs):
        seen.update(kwargs, name=name, features_list=features_list, cuda=cuda)
        return Fake()

    import torch_fidelity.utils

    weights = tmp_path / "inception.pth"
    weights.write_bytes(b"stub")
    monkeypatch.setattr(torch_fidelity.utils, "create_feature_extractor", fake)
    def featuresdict(ds, net, *args, **kwargs):
        return {"2048": net(torch.stack([ds[i] for i in range(len(ds))]))[0]}

    monkeypatch.setattr(torch_fidelity.utils, "get_featuresdict_from_dataset", featuresdict)
    x = digits["images"][:20]
    out = metrics.compute_fid_kid(x, x, inception_weights=weights, kid_subset_size=10, seed=7)
    assert out["feature_extractor"] == "inception-v3" and abs(out["fid"]) < 1e-9
    assert seen["name"] == "inception-v3-compat" and seen["features_list"] == ["2048"]
    assert seen["feature_extractor_weights_path"] == str(weights) and seen["cuda"] is False
    assert seen["input"][0].shape == (3, 8, 8) and seen["input"].dtype == torch.uint8


def test_features_once_give_torch_fidelitys_own_fid_and_kid(digits, classifier):
    """FeatureSpace + fid_kid_from_features == torch_fidelity.calculate_metrics on the images."""
    a, b = _noisy(digits["images"][:300], 0.1), digits["images"][300:1000]
    ours = metrics.compute_fid_kid(a, b, classifier["path"], kid_subset_size=100, seed=3)
    ref = torch_fidelity.calculate_metrics(
        input1=fidelity._RGBImages(a), input2=fidelity._RGBImages(b), fid=True, kid=True,
        feature_extractor="scoresde-classifier", cuda=False, kid_subset_size=100, rng_seed=3,
        feature_extractor_weights_path=str(classifier["path"]), verbose=False, cache=False,
        save_cpu_ram=True)
    assert ours["fid"] == pytest.approx(ref[torch_fidelity.KEY_METRIC_FID], rel=1e-12)
    assert ours["kid"] == pytest.approx(ref[torch_fidelity.KEY_METRIC_KID_MEAN], rel=1e-12)
    assert ours["kid_std"] == pytest.approx(ref[torch_fidelity.KEY_METRIC_KID_STD], rel=1e-12)


def test_frechet_distance_closed_form_and_torch_fidelity():
    """Diagonal Gaussians: FID = |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2 exactly."""
    mu1, mu2 = torch.tensor([1.0, 2.0, 0.0], dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    a, b = torch.tensor([4.0, 1.0, 9.0], dtype=torch.float64), torch.tensor([1.0, 1.0, 0.25])
    exact = 5.0 + (2 - 1) ** 2 + 0 + (3 - 0.5) ** 2
    got = metrics.frechet_distance(mu1, torch.diag(a), mu2, torch.diag(b).double())
    assert float(got) == pytest.approx(exact, rel=1e-12)
    # a rotated (non-diagonal) pair has the same distance; and random features match torch-fidelity
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64, generator=g))
    cov_a, cov_b = q @ torch.diag(a) @ q.T, q @ torch.diag(b).double() @ q.T
    rot = metrics.frechet_distance(q @ mu1, cov_a, q @ mu2, cov_b)
    assert float(rot) == pytest.approx(exact, rel=1e-10)
    g = torch.Generator().manual_seed(1)
    f1 = torch.randn(200, 8, generator=g, dtype=torch.float64)
    f2 = torch.randn(300, 8, generator=g, dtype=torch.float64) + 0.3
    full = [bootstrap._resampled_moments(f, torch.ones(1, len(f), dtype=torch.long)) for f in (f1, f2)]
    tf = metrics.fid_kid_from_features(f1, f2, kid_subset_size=50)["fid"]
    assert float(metrics.frechet_distance(*full[0], *full[1])) == pytest.approx(tf, rel=1e-10)


def test_bootstrap_replicates_are_fids_of_resamples_and_paired_across_cases():
    g = torch.Generator().manual_seed(2)
    ref = torch.randn(120, 5, generator=g, dtype=torch.float64)
    a = torch.randn(80, 5, generator=g, dtype=torch.float64) + 0.5
    boot = metrics.BootstrapFID(ref, n_bootstrap=7, seed=4, chunk=3)
    reps = boot.replicates(a)
    again = metrics.BootstrapFID(ref, 7, 4).replicates(a)  # other chunks, the same resamples
    assert reps.shape == (7,) and torch.allclose(reps, again, rtol=1e-12)
    assert not torch.equal(reps, metrics.BootstrapFID(ref, 7, 5).replicates(a))
    # replicate k is torch-fidelity's FID of explicitly gathered resamples
    import numpy as np

    ref_seed, sample_seed = (int(s.generate_state(1)[0]) for s in np.random.SeedSequence(4).spawn(2))
    cr = bootstrap._counts(120, 7, torch.Generator().manual_seed(ref_seed))
    ca = bootstrap._counts(80, 7, torch.Generator().manual_seed(sample_seed))
    for k in (0, 6):
        ra, rr = a.repeat_interleave(ca[k], 0), ref.repeat_interleave(cr[k], 0)
        assert float(reps[k]) == pytest.approx(metrics.fid_kid_from_features(ra, rr, 2)["fid"], rel=1e-9)
    # paired: a second case of the same size uses the same indices, so a constant shift c of
    # the features changes replicate k by exactly |c|^2 + 2 c . (mean of resample k - ref mean k)
    c = torch.tensor([0.3, 0.0, -0.2, 0.1, 0.0], dtype=torch.float64)
    diff = boot.replicates(a + c) - reps
    mu_a = (ca.double() @ a) / 80
    mu_r = (cr.double() @ ref) / 120
    assert torch.allclose(diff, c @ c + 2 * (mu_a - mu_r) @ c, rtol=1e-9, atol=1e-12)


def test_bootstrap_interval_recentres_the_replicates():
    reps = torch.arange(1, 102, dtype=torch.float64)  # mean 51, centred -50..50
    lo, hi = metrics.bootstrap_interval(10.0, reps, confidence=0.9)
    assert (lo, hi) == pytest.approx((10.0 - 45.0, 10.0 + 45.0))
    assert all(map(math.isnan, metrics.bootstrap_interval(1.0, [2.0])))


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


def test_fid_stage_stores_paired_replicates_and_the_interval(digits, classifier, tmp_path):
    """stages.fid: reference features once, each case's JSON with FID, its bootstrap interval
    (around the FID) and replicates; a Tweedie-like pair of cases shares resample indices."""
    import json

    from scoresde.stages import fid as fid_stage
    from scoresde.stages.common import save_tensors

    save_tensors(tmp_path / "reference.pt", {"images": digits["images"][:600]})
    for split, idx in (("train", slice(0, 600)), ("test", slice(1400, 1797))):
        save_tensors(tmp_path / f"{split}.pt", {"x": digits["levels"][idx].to(torch.uint8), "levels": 17,
                                                "labels": digits["labels"][idx], "name": "digits"})
    params = {"eval": {"inception_weights": None, "fid": {
        "batch_size": 500, "kid_subset_size": 50, "seed": 0,
        "bootstrap": {"n": 40, "seed": 3, "confidence": 0.9}},
        "manifold": {"nearest_k": 5, "memorised_ratio": 1 / 3}}}  # fmt: skip
    outs = []
    for name, sigma in (("clean", 0.0), ("noisy", 0.2)):
        images = _noisy(digits["images"][1000:1200], sigma) if sigma else digits["images"][1000:1200]
        save_tensors(tmp_path / f"{name}.pt", {"images": images})
        (tmp_path / f"{name}.json").write_text(json.dumps({"dataset": "digits", "n_samples": 200}))
        outs.append(tmp_path / f"{name}_fid.json")
    fid_stage.run(params, [str(tmp_path / f"{n}.pt") for n in ("clean", "noisy")],
                  [str(tmp_path / f"{n}.json") for n in ("clean", "noisy")],
                  str(tmp_path / "reference.pt"), str(classifier["path"]), [str(o) for o in outs],
                  str(tmp_path / "train.pt"), str(tmp_path / "test.pt"), device_name="cpu")  # fmt: skip
    clean, noisy = (json.loads(o.read_text()) for o in outs)
    for rec in (clean, noisy):
        assert rec["fid_ci_low"] < rec["fid"] < rec["fid_ci_high"] and rec["fid_ci_level"] == 0.9
        for key in ("kid", "precision", "recall", "density", "coverage", "memorised"):
            assert rec[f"{key}_ci_low"] <= rec[key] <= rec[f"{key}_ci_high"], key
        assert len(rec["fid_bootstrap"]) == rec["bootstrap_n"] == 40 and rec["n_reference"] == 600
        lo, hi = metrics.bootstrap_interval(rec["fid"], rec["fid_bootstrap"], 0.9)
        assert (lo, hi) == pytest.approx((rec["fid_ci_low"], rec["fid_ci_high"]), rel=1e-5)
    direct = metrics.compute_fid_kid(digits["images"][1000:1200], digits["images"][:600],
                                     classifier["path"], kid_subset_size=50, seed=0)  # fmt: skip
    assert clean["fid"] == pytest.approx(direct["fid"], rel=1e-9) and noisy["fid"] > clean["fid"]
    assert noisy["precision_ci_high"] < clean["precision_ci_low"]  # noise leaves the manifold
    assert clean["memorised"] == 0 and clean["memorised_heldout"] == 0  # images 1000..1199: unseen
    # the report pairs the two cases' replicates: noisy is decidedly worse
    from scoresde.report.uncertainty import fid_difference

    cmp = fid_difference(noisy, clean, 0.9)
    assert cmp["how"] == "paired bootstrap" and cmp["lo"] > 0 and cmp["verdict"] is False


def test_reference_fid_extracts_the_reference_once_and_equals_compute_fid_kid(
        digits, classifier, monkeypatch):
    """stages.quality.ReferenceFID: the FID of each set equals compute_fid_kid's (KID subsets of
    half the smaller set, same seed), one extractor and one pass over the reference for all."""
    from scoresde.stages.quality import ReferenceFID

    reference = digits["images"][:500]
    sets = [_noisy(digits["images"][600:664], s, seed=i) for i, s in enumerate((0.0, 0.1, 0.3))]
    expected = [metrics.compute_fid_kid(x, reference, classifier["path"], seed=6,
                                        kid_subset_size=max(2, len(x) // 2))["fid"] for x in sets]
    passes = []
    features = fidelity.FeatureSpace.features
    monkeypatch.setattr(fidelity.FeatureSpace, "features",
                        lambda self, images: passes.append(len(images)) or features(self, images))
    score = ReferenceFID(reference, str(classifier["path"]))
    assert [score(x, 6) for x in sets] == expected
    assert passes == [500, 64, 64, 64]  # the reference once, when built
    shared = ReferenceFID(digits["images"][500:600], score.space)
    assert shared.space is score.space
    assert math.isnan(score(sets[0][:3], 6))
    with pytest.raises(ValueError, match="differ"):
        score(torch.zeros(8, 1, 4, 4, dtype=torch.uint8), 6)
