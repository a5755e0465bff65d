"""Released score_sde_pytorch checkpoints: the NCSN++ / DDPM++ layout, FIR resampling, the
official score function, reading checkpoints and importing them for the pipeline.

The official code is not vendored. `data/official_ncsnpp_reference.json` holds, for six tiny
configurations (16x16, nf 16), what the official `models/ncsnpp.py` defines: state-dict key
names, shapes and dtypes, the trainable-parameter order (= EMA `shadow_params` order) and the
network output for deterministic weights; `data/make_official_reference.py` regenerates it from
an official checkout. A real released checkpoint is checked when SCORESDE_OFFICIAL_CHECKPOINT
names one (and SCORESDE_OFFICIAL_PRESET its preset).
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_workflow import workdir  # noqa: F401 (fixture)

from scoresde import official
from scoresde.cli import main
from scoresde.losses import get_score_fn
from scoresde.models import build_model
from scoresde.models.fir import (
    conv_downsample_2d,
    downsample_2d,
    upfirdn2d,
    upsample_2d,
    upsample_conv_2d,
)
from scoresde.models.ncsnpp import NCSNpp, ScoreNCSNpp
from scoresde.stages.common import load_score_model

DATA = Path(__file__).parent / "data"
REFERENCE = json.loads((DATA / "official_ncsnpp_reference.json").read_text())
_spec = importlib.util.spec_from_file_location("make_ref", DATA / "make_official_reference.py")
make_ref = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_ref)

ARCH_KEYS = official._ARCH


def reference_net(case: dict, cls=NCSNpp, **extra) -> NCSNpp:
    kwargs = {k: v for k, v in case["model"].items() if k in ARCH_KEYS}
    return cls(image_size=16, num_channels=3, centered=case["centered"], **extra, **kwargs)


def filled_state(net: torch.nn.Module) -> dict:
    """The deterministic weights the reference outputs were computed with."""
    sd = net.state_dict()
    return {k: v if k == "sigmas" else make_ref.fill(i, v.numel()).reshape(v.shape)
            for i, (k, v) in enumerate(sd.items())}


def kernel_2d(dtype=torch.float64) -> torch.Tensor:
    k = torch.tensor([1.0, 3.0, 3.0, 1.0], dtype=dtype)
    return torch.outer(k, k) / 64.0


# --------------------------------------------------------------------------- FIR resampling

@pytest.fixture
def images():
    g = torch.Generator().manual_seed(0)
    return (torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64),
            torch.randn(5, 3, 3, 3, generator=g, dtype=torch.float64))


def test_fir_upsample_is_a_strided_transposed_convolution(images):
    """Zero insertion + [1,3,3,1] filter = conv_transpose2d with 4 k k^T / 64, stride 2, crop 1."""
    x, _ = images
    depthwise = (4 * kernel_2d()).expand(3, 1, 4, 4)
    expected = F.conv_transpose2d(x, depthwise, stride=2, padding=1, groups=3)
    torch.testing.assert_close(upsample_2d(x), expected, rtol=0, atol=1e-12)


def test_fir_downsample_is_a_strided_convolution(images):
    x, _ = images
    expected = F.conv2d(x, kernel_2d().expand(3, 1, 4, 4), stride=2, padding=1, groups=3)
    torch.testing.assert_close(downsample_2d(x), expected, rtol=0, atol=1e-12)


def test_fused_fir_convolutions_equal_their_unfused_definitions(images):
    x, w = images
    depthwise = kernel_2d().expand(3, 1, 4, 4)
    full_up = F.conv_transpose2d(x, 4 * depthwise, stride=2, groups=3)  # 2H + 2, uncropped
    torch.testing.assert_close(upsample_conv_2d(x, w), F.conv2d(full_up, w), rtol=0, atol=1e-12)
    blurred = F.conv2d(x, depthwise, padding=2, groups=3)
    torch.testing.assert_close(conv_downsample_2d(x, w), F.conv2d(blurred, w, stride=2),
                               rtol=0, atol=1e-12)


def test_fir_resampling_keeps_constants_away_from_the_border():
    x = torch.full((1, 1, 8, 8), 2.5, dtype=torch.float64)
    assert torch.allclose(upsample_2d(x)[..., 2:-2, 2:-2], x.new_tensor(2.5))
    assert torch.allclose(downsample_2d(x)[..., 1:-1, 1:-1], x.new_tensor(2.5))
    # upfirdn2d is a true convolution: an asymmetric kernel is flipped
    delta = torch.zeros(1, 1, 3, 3, dtype=torch.float64)
    delta[..., 1, 1] = 1
    k = torch.arange(9, dtype=torch.float64).reshape(3, 3)
    torch.testing.assert_close(upfirdn2d(delta, k, pad=(1, 1))[0, 0], k)


# --------------------------------------------------------------------------- layout

@pytest.mark.parametrize("name", sorted(REFERENCE["cases"]))
def test_layout_and_output_match_the_official_network(name):
    """Key names, shapes, dtypes and parameter order as the official module; strict load; the
    official output for the same weights (float32, 1e-5 relative)."""
    case = REFERENCE["cases"][name]
    net = reference_net(case).eval()
    ours = [[k, list(v.shape), str(v.dtype)] for k, v in net.state_dict().items()]
    assert ours == case["keys"]
    assert [n for n, p in net.named_parameters() if p.requires_grad] == case["trainable"]
    net.load_state_dict(filled_state(net), strict=True)
    x = make_ref.network_input()
    t = torch.tensor(REFERENCE["t"])
    cond = 0.01 * (50 / 0.01) ** t if case["model"]["embedding_type"] == "fourier" else 999 * t
    with torch.no_grad():
        y = net(x, cond).flatten().float()  # float64 where the float64 sigmas divide
    expected = torch.tensor(case["output"])
    scale = expected.abs().max()
    torch.testing.assert_close(y[:: REFERENCE["stride"]], expected, rtol=0, atol=1e-5 * scale)
    assert y.norm().item() == pytest.approx(case["output_norm"], rel=1e-5)


# parameter and state-dict entry counts of the official network built from the released config
@pytest.mark.parametrize("name, n_official, n_keys", [
    ("ve/cifar10_ncsnpp_continuous", 62_758_915, 572),
    ("vp/cifar10_ddpmpp_deep_continuous", 106_632_579, 957)])
def test_presets_build_the_released_networks(name, n_official, n_keys):
    p = official.preset(name)
    cfg = official.network_config(p["model"], p["sde"], 32, 3, p["centered"])
    with torch.device("meta"):
        net = build_model(cfg)
    n_params = sum(v.numel() for v in net.parameters())
    assert (n_params, len(net.state_dict())) == (n_official, n_keys)
    deep = "deep" in name
    assert p["model"]["num_res_blocks"] == (8 if deep else 4)
    assert p["model"]["fir"] == (p["sde"] == "ve") == p["model"]["scale_by_sigma"]
    assert p["centered"] == (p["sde"] != "ve")
    # blocks = 4 levels x (n down + n+1 up) + 3 down-resamplers + 3 up-resamplers + 2 middle
    blocks = [m for m in net.modules() if type(m).__name__.startswith("ResnetBlock")]
    n = p["model"]["num_res_blocks"]
    assert len(blocks) == 4 * (2 * n + 1) + 3 + 3 + 2


# --------------------------------------------------------------------------- score function

def tiny(sde: str, **over) -> dict:
    """A tiny official config.model: NCSN++ (VE) or DDPM++ (VP / sub-VP), 16x16, nf 16."""
    name = "ncsnpp" if sde == "ve" else "ddpmpp"
    model = dict(REFERENCE["cases"][name]["model"], **over)
    return model


def save_official(path: Path, sde: str, seed: int = 0, **over) -> tuple[dict, dict, dict]:
    """An official-format checkpoint: DataParallel keys, EMA shadow_params (differing from the
    weights), Adam state, step; the EMA decay as a numpy scalar, as older saves may hold."""
    config = tiny(sde, **over)
    torch.manual_seed(seed)
    net = NCSNpp(image_size=16, centered=sde != "ve",
                 **{k: v for k, v in config.items() if k in ARCH_KEYS})
    g = torch.Generator().manual_seed(seed)
    raw = {k: v if k == "sigmas" else v + 0.1 * torch.randn(v.shape, generator=g)
           for k, v in net.state_dict().items()}
    trainable = [k for k, p in net.named_parameters() if p.requires_grad]
    shadow = [raw[k] + 0.05 * torch.randn(raw[k].shape, generator=g) for k in trainable]
    opt = torch.optim.Adam(net.parameters())
    blob = {"model": {f"module.{k}": v for k, v in raw.items()},
            "ema": {"decay": np.float64(config["ema_rate"]), "num_updates": 7,
                    "shadow_params": shadow},
            "optimizer": opt.state_dict(), "step": 7}
    torch.save(blob, path)
    ema = dict(raw, **dict(zip(trainable, shadow, strict=True)))
    return config, raw, ema


@pytest.mark.parametrize("sde_name", ["vp", "subvp", "ve"])
def test_load_official_gives_the_official_score_with_ema_weights(tmp_path, sde_name):
    path = tmp_path / "checkpoint_7.pth"
    config, raw, ema = save_official(path, sde_name)
    score_fn, sde = official.load_official(path, config, sde_name, image_size=16)
    assert sde.name == sde_name and config["num_scales"] == sde.N
    net = NCSNpp(image_size=16, centered=sde_name != "ve",
                 **{k: v for k, v in config.items() if k in ARCH_KEYS}).eval()
    net.load_state_dict(ema)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(3, 3, 16, 16, generator=g)
    t = torch.tensor([1e-3, 0.4, 1.0])
    with torch.no_grad():
        got = score_fn(x, t)
        if sde_name == "ve":  # labels = sigma(t); the network divides by sigma (scale_by_sigma)
            sigma = 0.01 * torch.exp(t * np.log(50 / 0.01))
            h, used = net.features(x, sigma)
            assert torch.equal(used, sigma)
            expected = h / sigma[:, None, None, None]
        else:  # labels = 999 t; score = -net / std with the official std formula
            lmc = -0.25 * t**2 * (20 - 0.1) - 0.5 * t * 0.1
            one_minus = 1 - torch.exp(2 * lmc)
            std = one_minus.sqrt() if sde_name == "vp" else one_minus
            expected = -net(x, 999 * t) / std[:, None, None, None]
        net.load_state_dict(raw)
        raw_out = net(x, sigma if sde_name == "ve" else 999 * t)
        again = score_fn(x, t)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * expected.abs().max())
    assert torch.equal(again, got)  # load_official's network is its own copy
    ema_out = -expected * std[:, None, None, None] if sde_name != "ve" else expected
    assert (raw_out - ema_out).abs().max() > 1e-2 * ema_out.abs().max()  # EMA, not raw weights


def test_score_adapter_matches_the_pipeline_convention():
    """ScoreNCSNpp under losses.get_score_fn: VP -out/s(t) with out the official output; VE the
    output before scale_by_sigma, divided by sigma(t) = exp(log sigma)."""
    from scoresde.sde import make_sde

    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 16, 16, generator=g)
    t = torch.tensor([0.2, 0.9])
    for sde_name in ("vp", "ve"):
        config = tiny(sde_name)
        kwargs = {k: v for k, v in config.items() if k in ARCH_KEYS}
        net = ScoreNCSNpp(sde=sde_name, image_size=16, centered=sde_name != "ve", **kwargs)
        net.load_state_dict(filled_state(net))
        sde = make_sde(sde_name)
        with torch.no_grad():
            ours = get_score_fn(sde, net.eval())(x, t)
            ref = official.official_score_fn(net, sde)(x, t)
            if sde_name == "vp":
                exact = -NCSNpp.forward(net, x, 999 * t) / sde.std(t)[:, None, None, None]
                torch.testing.assert_close(ours, exact, rtol=0, atol=0)
        torch.testing.assert_close(ours, ref, rtol=3e-4, atol=1e-5 * ref.abs().max())


# --------------------------------------------------------------------------- files and CLI

def test_import_official_cli_round_trip(tmp_path):
    path = tmp_path / "checkpoint_7.pth"
    config, _, _ = save_official(path, "ve", seed=3)
    cfg_json = tmp_path / "model.json"
    cfg_json.write_text(json.dumps(config))
    out = tmp_path / "checkpoints" / "cifar10" / "ve" / "best.pt"
    assert main(["import-official", "--checkpoint", str(path), "--model-config", str(cfg_json),
                 "--sde", "ve", "--image-size", "16", "--out", str(out)]) == 0
    model, sde, meta = load_score_model(out, torch.device("cpu"), expect_sde="ve")
    assert meta["step"] == 7 and meta["centered"] is False and meta["image_shape"] == [3, 16, 16]
    assert meta["source"]["file_sha256"] == official.file_sha256(path)
    score_fn, _ = official.load_official(path, config, "ve", image_size=16)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0.05, 0.7])
    with torch.no_grad():
        a, b = get_score_fn(sde, model)(x, t), score_fn(x, t)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6 * b.abs().max())


def test_a_checkpoint_of_another_layout_names_the_first_key_that_does_not_fit(tmp_path):
    path = tmp_path / "checkpoint_1.pth"
    config, _, _ = save_official(path, "vp", num_res_blocks=2)
    with pytest.raises(official.OfficialCheckpointError, match=r"all_modules\.\d+\.\w+") as err:
        official.load_official(path, tiny("vp"), "vp", image_size=16)
    assert "num_res_blocks" in str(err.value) or "preset" in str(err.value)
    first = str(err.value).split("'")[1]
    assert first in {k.removeprefix("module.") for k in official.read_official(path)["model"]}
    # nf differs: the first key (the time embedding's dense layer) has the wrong shape
    save_official(path, "vp", nf=8)
    with pytest.raises(official.OfficialCheckpointError, match=r"'all_modules\.0\.weight' has shape"):
        official.load_official(path, tiny("vp"), "vp", image_size=16)
    # not an official checkpoint at all / refused code
    torch.save({"state": {}}, path)
    with pytest.raises(official.OfficialCheckpointError, match="no 'model' state dict"):
        official.load_official(path, tiny("vp"), "vp", image_size=16)
    torch.save({"model": {}, "x": Path("/")}, path)
    with pytest.raises(official.OfficialCheckpointError, match="refuses.*pathlib"):
        official.read_official(path)
    assert main(["import-official", "--checkpoint", str(tmp_path / "none.pth"),
                 "--preset", "vp/cifar10_ddpmpp_continuous", "--out", str(tmp_path / "b.pt")]) == 2


@pytest.mark.skipif(not os.environ.get("SCORESDE_OFFICIAL_CHECKPOINT"),
                    reason="set SCORESDE_OFFICIAL_CHECKPOINT (and SCORESDE_OFFICIAL_PRESET) to a "
                           "released checkpoint_*.pth to check it")
def test_a_released_checkpoint_scores_the_prior():
    """At t = T the marginal is (nearly) the prior N(0, s(T)^2 I): the score is -x / s(T)^2."""
    name = os.environ.get("SCORESDE_OFFICIAL_PRESET", "vp/cifar10_ddpmpp_continuous")
    p = official.preset(name)
    score_fn, sde = official.load_official(os.environ["SCORESDE_OFFICIAL_CHECKPOINT"],
                                           p["model"], p["sde"], 32)
    x = sde.prior_sampling((4, 3, 32, 32), generator=torch.Generator().manual_seed(0))
    t = torch.ones(4)
    with torch.no_grad():
        s = score_fn(x, t)
    expected = -x / sde.std(t)[0] ** 2
    assert ((s - expected).norm() / expected.norm()).item() < 0.2


@pytest.mark.slow
def test_official_config_starts_the_dag_at_best_pt(workdir):  # noqa: F811 (fixture)
    """config/cifar10_official.yaml: without best.pt the dry run names it; with it, no train or
    select_checkpoint job is planned and the report needs no training logs."""
    from test_workflow import snakemake

    from scoresde.stages import config as cfg

    c = cfg.resolve(str(workdir / "config/cifar10_official.yaml"))
    assert c["select"]["source"] == "imported" and c["sample"]["eps"] is None
    args = ("-n", "--cores", "2", "--configfile", "config/cifar10_official.yaml")
    proc = snakemake(*args, cwd=workdir)
    assert proc.returncode != 0 and "checkpoints/cifar10/ve/best.pt" in proc.stdout + proc.stderr
    for sde in c["sde"]["names"]:
        (workdir / "checkpoints" / "cifar10" / sde).mkdir(parents=True)
        (workdir / "checkpoints" / "cifar10" / sde / "best.pt").touch()
    proc = snakemake(*args, cwd=workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    planned = proc.stdout
    assert "rule sample:" in planned and "rule likelihood:" in planned
    assert "rule train:" not in planned and "rule select_checkpoint:" not in planned
