"""Seed streams (utils.seed_stream) and the map from model-space samples to image levels
(data.Levels.from_unit, stages.common.images_from_model)."""

import itertools

import numpy as np
import pytest
import torch

from scoresde.data import Levels, to_model_space
from scoresde.likelihood import uniform_dequantize
from scoresde.stages.common import images_from_model
from scoresde.utils import (
    SEED_PURPOSES,
    per_sample_generators,
    randn,
    seed_stream,
    seeded_generator,
)

# ---------------------------------------------------------------- seed streams


def test_seed_stream_is_the_seed_sequence_spawn_tree():
    """seed_stream(seed, purpose, i) is child i of child p of SeedSequence(seed), p the purpose's
    documented position: numpy guarantees SeedSequence's output, so streams are stable."""
    # append only: a position is part of every stream
    assert SEED_PURPOSES == ("data", "train-init", "train-batches", "train-noise", "sample",
                             "likelihood", "classifier", "controllable", "inverse")
    for seed, (p, purpose), i in itertools.product((0, 7), enumerate(SEED_PURPOSES), (0, 3)):
        child = np.random.SeedSequence(seed).spawn(len(SEED_PURPOSES))[p].spawn(i + 1)[i]
        assert seed_stream(seed, purpose, i) == int(child.generate_state(1, np.uint64)[0])
    top = np.random.SeedSequence(5).spawn(len(SEED_PURPOSES))[SEED_PURPOSES.index("train-noise")]
    assert seed_stream(5, "train-noise") == int(top.generate_state(1, np.uint64)[0])


def test_equal_seeds_give_distinct_streams_across_purposes_indices_and_seeds():
    seeds = [seed_stream(s, p, *i) for s in range(4) for p in SEED_PURPOSES
             for i in [(), *((j,) for j in range(50))]]
    assert len(set(seeds)) == len(seeds)
    assert all(0 <= s < 2**64 for s in seeds)
    # the old scheme's collision: sample / likelihood seed 0, image 0 replayed train seed 0's data
    draws = {p: torch.rand(8, generator=seeded_generator(0, p, 0)) for p in SEED_PURPOSES}
    draws["train-batches"] = torch.rand(8, generator=seeded_generator(0, "train-batches"))
    for a, b in itertools.combinations(draws.values(), 2):
        assert not torch.equal(a, b)


def test_per_sample_generators_do_not_depend_on_the_batch():
    shape = (7, 3, 2)
    whole = randn(shape, per_sample_generators(4, 0, 7))
    parts = torch.cat([randn((c, 3, 2), per_sample_generators(4, s, c)) for s, c in
                       ((0, 2), (2, 4), (6, 1))])
    assert torch.equal(whole, parts)
    again = randn(shape, per_sample_generators(4, 0, 7))
    assert torch.equal(whole, again)
    other = randn(shape, per_sample_generators(4, 0, 7, purpose="likelihood"))
    assert not torch.isclose(whole, other).any()
    first = torch.randn((3, 2), generator=seeded_generator(4, "sample", 5))
    assert torch.equal(whole[5], first)


def test_seed_stream_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown seed purpose 'train'.*data, train-init"):
        seed_stream(0, "train")
    with pytest.raises(ValueError, match=">= 0"):
        seed_stream(-1, "sample")
    with pytest.raises(ValueError, match=">= 0"):
        per_sample_generators(0, -1, 2)


# ---------------------------------------------------------------- samples -> image levels


@pytest.mark.parametrize("levels", [2, 17, 256])
def test_from_unit_inverts_both_maps_from_levels(levels):
    k = torch.arange(levels)
    plain, dequantized = Levels(levels), Levels(levels, dequantized=True)
    # trained on k / (L - 1): the nearest level, for any error under half a level spacing
    x01 = plain.to_unit(k)
    half = 0.499 / (levels - 1)
    for shift in (0.0, -half, half):
        assert torch.equal(plain.from_unit(x01 + shift), k)
    # trained on (k + u) / L: the cell k, for u anywhere inside it
    for u in (1e-3, 0.25, 0.5, 0.999):
        assert torch.equal(dequantized.from_unit((k + u) / levels), k)
    u = torch.rand(50, levels, generator=torch.Generator().manual_seed(levels), dtype=torch.float64)
    u = u.clamp(1e-6, 1 - 1e-6)
    assert torch.equal(dequantized.from_unit((k + u) / levels), k.expand(50, -1))
    # out of range clamps to the end levels; 1.0 exactly is the last cell, not level L
    for lv in (plain, dequantized):
        ends = lv.from_unit(torch.tensor([-0.3, 0.0, 1.0, 1.7]))
        assert ends.tolist() == [0, 0, levels - 1, levels - 1] and ends.dtype == torch.long


@pytest.mark.parametrize("centered", [False, True])
@pytest.mark.parametrize("dequantize", [False, True])
def test_images_from_model_recovers_the_levels_the_model_was_trained_on(centered, dequantize):
    """Every sample's path to an image: model space -> [0, 1] -> levels -> uint8 0..255; the
    training map from levels to model space (train.model_batch) followed by it is the identity."""
    levels = 17
    k = torch.randint(0, levels, (64, 1, 4, 4), generator=torch.Generator().manual_seed(0))
    k[0, 0, 0, :2] = torch.tensor([0, levels - 1])  # both ends
    if dequantize:  # away from the cell edges, where float32 may round either way
        y = (k + 0.01 + 0.98 * torch.rand(k.shape, generator=torch.Generator().manual_seed(1))) / levels
        deq = uniform_dequantize(k, levels, torch.Generator().manual_seed(2))
        assert torch.equal(deq.mul(levels).floor().long(), k)
    else:
        y = Levels(levels).to_unit(k)
    meta = {"levels": levels, "centered": centered, "dequantize": dequantize}
    images = images_from_model(to_model_space(y, centered), meta)
    assert images.dtype == torch.uint8 and torch.equal(images, Levels(levels).to_uint8(k))
    # the grid of uint8 values: level k -> round(255 k / (L - 1)), 0 -> 0 and L - 1 -> 255
    grid = Levels(levels).to_uint8(torch.arange(levels))
    assert grid[0] == 0 and grid[-1] == 255 and (grid.diff() > 0).all()
    assert grid.tolist() == [round(255 * j / (levels - 1)) for j in range(levels)]


def test_to_uint8_is_the_identity_for_256_levels():
    k = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(Levels(256).to_uint8(k), k)


def test_setup_torch_keeps_freed_memory_in_the_heap():
    """On glibc every mallopt setting is taken (a freed activation is reused without page faults);
    elsewhere the call changes nothing and says so."""
    import subprocess
    import sys

    code = ("from scoresde.stages.common import keep_freed_memory, setup_torch; "
            "setup_torch(1); print(keep_freed_memory())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    glibc = sys.platform.startswith("linux") and __import__("platform").libc_ver()[0] == "glibc"
    assert out.stdout.strip() == str(glibc)
