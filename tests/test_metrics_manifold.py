"""Precision / recall / density / coverage, KID's bootstrap and the memorised share, checked
against the libraries that define them (torch-fidelity, prdc) and against exact values."""

import math

import numpy as np
import pytest
import torch

from scoresde.metrics import bootstrap, corruptions
from scoresde.metrics.manifold import (
    CopyDetector,
    Manifold,
    _cdist,
    _library_prdc,
    knn_radii,
    replicate_prdc,
    wilson_interval,
)


def _gauss(n, d, seed, scale=1.0, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64) * scale + shift


@pytest.mark.parametrize("scale, shift", [(1.0, 0.0), (1.3, 0.4), (0.6, -0.2)])
def test_replicates_with_every_point_once_are_the_libraries_figures(scale, shift):
    """replicate_prdc with all multiplicities 1 equals torch-fidelity's precision / recall and
    prdc's density / coverage (continuous features: no distance ties)."""
    fr, fs = _gauss(240, 6, 0), _gauss(160, 6, 1, scale, shift)
    lib = _library_prdc(fs, fr, 5)
    ones = replicate_prdc(_cdist(fs, fr), knn_radii(fr, 5), knn_radii(fs, 5),
                          torch.ones(1, 160), torch.ones(1, 240), 5)  # fmt: skip
    for key, value in lib.items():
        assert float(ones[key][0]) == pytest.approx(value, abs=1e-6), key


def test_same_distribution_scores_high_and_a_shifted_one_low():
    m = Manifold(_gauss(400, 4, 0), nearest_k=5, n_bootstrap=100, seed=0)
    same, far = m(_gauss(300, 4, 1)), m(_gauss(300, 4, 2, shift=3.0))
    for key in ("precision", "recall", "coverage"):
        assert same[f"{key}_ci_low"] <= same[key] <= same[f"{key}_ci_high"] <= 1
        assert far[f"{key}_ci_high"] < same[f"{key}_ci_low"], key
    assert 0.7 < same["density"] < 1.3 and far["density"] < 0.1


def test_missing_modes_lower_recall_and_coverage_not_precision():
    """Two modes in the reference, one in the samples: diversity drops, fidelity does not."""
    ref = torch.cat([_gauss(200, 3, 0, shift=-4.0), _gauss(200, 3, 1, shift=4.0)])
    both = torch.cat([_gauss(150, 3, 2, shift=-4.0), _gauss(150, 3, 3, shift=4.0)])
    one = _gauss(300, 3, 4, shift=4.0)
    m = Manifold(ref, 5, 100, 0)
    a, b = m(both), m(one)
    assert b["recall_ci_high"] < a["recall_ci_low"] and b["coverage_ci_high"] < a["coverage_ci_low"]
    assert b["precision_ci_low"] <= a["precision"] <= b["precision_ci_high"] or b["precision"] > 0.9


def test_intervals_are_reproducible_and_paired_by_seed():
    ref, s = _gauss(200, 3, 0), _gauss(150, 3, 1)
    assert Manifold(ref, 5, 50, 7)(s) == Manifold(ref, 5, 50, 7)(s)
    assert Manifold(ref, 5, 50, 7)(s) != Manifold(ref, 5, 50, 8)(s)


def test_kid_bootstrap_with_every_point_once_is_torch_fidelitys_unbiased_mmd(monkeypatch):
    from torch_fidelity.metric_kid import mmd2

    fr, fs = _gauss(120, 5, 0), _gauss(120, 5, 1, 1.2, 0.3)
    k = bootstrap.poly_kernel
    expected = mmd2(k(fs, fs).numpy(), k(fs, fr).numpy(), k(fr, fr).numpy())
    monkeypatch.setattr(bootstrap, "_counts", lambda n, b, g: torch.ones(b, n, dtype=torch.long))
    reps = bootstrap.BootstrapKID(fr, 3, 0).replicates(fs)
    assert torch.allclose(reps, torch.full((3,), float(expected), dtype=torch.float64), rtol=1e-10)


@pytest.mark.parametrize("n_samples, size", [(160, 60), (120, 120), (90, None)])
def test_kid_from_the_shared_kernels_is_torch_fidelitys(n_samples, size):
    """BootstrapKID.measure's KID (each case's kernels built once, the subsets read off them) is
    torch-fidelity's kid_features_to_metric to rounding: subsets smaller than the sample set, the
    whole sample set, the default size; its replicates are those of replicates()."""
    from torch_fidelity.metric_kid import kid_features_to_metric

    fr, fs = _gauss(200, 6, 0), _gauss(n_samples, 6, 1, 1.2, 0.3)
    kid = bootstrap.BootstrapKID(fr, 20, 0, kid_subset_size=size, kid_seed=5)
    got = kid.measure(fs)
    m = kid.subset_size(n_samples)
    lib = kid_features_to_metric(fs, fr, kid_subset_size=m, rng_seed=5, verbose=False)
    assert got["kid"] == pytest.approx(lib["kernel_inception_distance_mean"], rel=1e-9, abs=1e-12)
    assert got["kid_std"] == pytest.approx(lib["kernel_inception_distance_std"], rel=1e-9)
    torch.testing.assert_close(got["replicates"], kid.replicates(fs), rtol=1e-12, atol=0.0)
    again = kid.measure(fs)  # the reference side cached per sample count
    assert again["kid"] == got["kid"] and torch.equal(again["replicates"], got["replicates"])


def test_kid_bootstrap_replicates_spread_around_the_estimate():
    fr, fs = _gauss(300, 5, 0), _gauss(200, 5, 1, 1.5)
    reps = bootstrap.BootstrapKID(fr, 200, 0).replicates(fs)
    lo, hi = bootstrap.bootstrap_interval(float(reps.mean()), reps)
    assert lo < float(reps.median()) < hi and reps.std() > 0


def test_memorised_share_is_zero_for_new_data_and_one_for_copies():
    train, heldout = _gauss(800, 8, 0), _gauss(300, 8, 1)
    cd = CopyDetector(train, heldout)
    new = cd(_gauss(300, 8, 2))
    copies = cd(train[:300] + 1e-3 * _gauss(300, 8, 3))
    half = cd(torch.cat([train[:150], _gauss(150, 8, 4)]))
    assert new["memorised"] == 0 and new["memorised_heldout"] == 0 and abs(new["copy_z"]) < 3
    assert copies["memorised"] == 1 and copies["memorised_ci_low"] > 0.98 and copies["copy_z"] < -15
    assert half["memorised"] == 0.5 and half["memorised_ci_low"] < 0.5 < half["memorised_ci_high"]


def test_wilson_interval_exact_values():
    z2 = 1.959963984540054**2
    assert wilson_interval(0, 10) == pytest.approx((0.0, z2 / (10 + z2)), abs=1e-12)
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(1 - hi) and lo == pytest.approx(0.2365931, abs=1e-6)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def test_corruptions_keep_count_shape_and_dtype():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (50, 1, 8, 8), generator=g, dtype=torch.uint8)
    labels = torch.arange(50) % 10
    suite = corruptions.corruption_suite(x, labels, x.flip(0), seed=0)
    for name, images in suite.items():
        assert images.shape == x.shape and images.dtype == torch.uint8, name
    changed = (suite["speckle 30%"] != x).flatten(1).any(1)
    assert changed.sum() <= 15 and changed.sum() >= 12  # 15 chosen; a few may keep every pixel
    kept = corruptions.drop_classes(x, labels, [0, 1, 2], g)
    assert not torch.isin(labels[[int(torch.nonzero((x == k).all((1, 2, 3)))[0]) for k in kept]],
                          torch.tensor([0, 1, 2])).any()  # fmt: skip


def test_total_variation_exact():
    flat = torch.full((1, 1, 4, 4), 7, dtype=torch.uint8)
    checker = ((torch.arange(4)[:, None] + torch.arange(4)[None, :]) % 2 * 255).to(torch.uint8)
    assert float(corruptions.total_variation(flat)) == 0
    assert float(corruptions.total_variation(checker[None, None])) == 2.0
    ramp = torch.tensor(np.tile(np.arange(4) * 85, (4, 1)), dtype=torch.uint8)[None, None]
    assert float(corruptions.total_variation(ramp)) == pytest.approx(85 / 255 + 0)


def test_sets_with_at_most_k_plus_one_points_give_nan_not_an_error():
    assert all(math.isnan(Manifold(_gauss(6, 2, 0), 5, 10, 0)(_gauss(20, 2, 1))[k])
               for k in ("precision", "recall", "density", "coverage"))
    assert math.isnan(Manifold(_gauss(50, 2, 0), 5, 10, 0)(_gauss(6, 2, 1))["recall"])


def test_missing_classes_leave_at_least_one_class():
    assert [corruptions.n_missing(n) for n in (1, 2, 3, 4, 10, 100)] == [0, 1, 1, 1, 3, 30]
    x = torch.zeros(6, 1, 4, 4, dtype=torch.uint8)
    suite = corruptions.corruption_suite(x, torch.tensor([0, 0, 1, 1, 2, 2]), x, seed=0)
    assert "1 class missing" in suite and len(suite["1 class missing"]) == 6
    assert "1 class missing" not in corruptions.corruption_suite(x, torch.zeros(6), x)


@pytest.mark.parametrize("n", [1, 5, 64, 65, 320])
def test_the_extractor_trains_on_any_number_of_steps(n):
    """OneCycleLR divides by zero at some small step counts (5 steps): those get a constant rate."""
    from scoresde.metrics import train_feature_extractor

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 1, 8, 8), generator=g, dtype=torch.uint8)
    labels = torch.arange(n) % 2
    state, config = train_feature_extractor(x, labels, epochs=1, batch_size=64, width=4)
    assert config["feature_dim"] == 1 + 8 * 4 and torch.isfinite(state["feature_std"]).all()


def test_speckle_lifts_total_variation_above_a_quarter():
    """The speckled-share threshold (TV > 0.25) separates speckle from smooth images on a black
    background (as Fashion-MNIST's)."""
    smooth = torch.zeros((20, 1, 28, 28), dtype=torch.uint8)
    smooth[:, :, 8:20, 8:20] = 180
    speckled = corruptions.speckle(smooth, 1.0, torch.Generator().manual_seed(0))
    assert (corruptions.total_variation(smooth) < 0.1).all()
    assert (corruptions.total_variation(speckled) > 0.25).all()
