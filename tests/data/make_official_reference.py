"""Regenerate tests/data/official_ncsnpp_reference.json from an official score_sde_pytorch checkout.

    python tests/data/make_official_reference.py /path/to/score_sde_pytorch

Nothing of the official code is stored here. The script copies its `models/` and `sde_lib.py` to
a temporary folder, replaces the compiled `op.upfirdn2d` by a native one, and repairs three
PyTorch-port bugs on the FIR-with-conv upsampling path (negative-step slice, 4-element stride,
output_padding) and one in `Upsample` (`F.interpolate` size passed as scale_factor), none of
which any released checkpoint exercises. For each tiny configuration in CASES it records the
state dict's key names, shapes and dtypes, the trainable-parameter order (the order of an EMA's
`shadow_params`), and the network output for deterministic weights (see `fill`), subsampled.
"""

import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch

OP = '''
import torch, torch.nn.functional as F
def upfirdn2d(x, kernel, up=1, down=1, pad=(0, 0)):
    B, C, H, W = x.shape
    x = F.pad(x.reshape(B * C, 1, H, 1, W, 1), (0, up - 1, 0, 0, 0, up - 1))
    x = F.pad(x.reshape(B * C, 1, H * up, W * up), (pad[0], pad[1], pad[0], pad[1]))
    x = F.conv2d(x, torch.flip(kernel, [0, 1]).view(1, 1, *kernel.shape).to(x))
    x = x[:, :, ::down, ::down]
    return x.reshape(B, C, x.shape[-2], x.shape[-1])
'''
FIXES = {
    "models/up_or_down_sampling.py": [
        ("w[..., ::-1, ::-1].permute(0, 2, 1, 3, 4)", "torch.flip(w, (3, 4)).permute(0, 2, 1, 3, 4)"),
        ("F.conv_transpose2d(x, w, stride=stride, output_padding=output_padding, padding=0)",
         "F.conv_transpose2d(x, w, stride=factor, padding=0)")],
    "models/layerspp.py": [("F.interpolate(x, (H * 2, W * 2), 'nearest')",
                            "F.interpolate(x, size=(H * 2, W * 2), mode='nearest')")],
}
BASE = dict(sigma_min=0.01, sigma_max=50, num_scales=1000, beta_min=0.1, beta_max=20.0,
            dropout=0.1, embedding_type="fourier", name="ncsnpp", scale_by_sigma=True,
            ema_rate=0.999, normalization="GroupNorm", nonlinearity="swish", nf=16,
            ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(8,), resamp_with_conv=True,
            conditional=True, fir=True, fir_kernel=[1, 3, 3, 1], skip_rescale=True,
            resblock_type="biggan", progressive="none", progressive_input="residual",
            progressive_combine="sum", attention_type="ddpm", init_scale=0.0, fourier_scale=16,
            conv_size=3)
CASES = {  # name: (config.model overrides, config.data.centered)
    "ddpmpp": (dict(fir=False, embedding_type="positional", scale_by_sigma=False,
                    progressive_input="none"), True),
    "ncsnpp": ({}, False),
    "ncsnpp_output_skip_input_skip_cat": (dict(progressive="output_skip",
                                               progressive_input="input_skip",
                                               progressive_combine="cat"), False),
    "ncsnpp_residual_ddpm_blocks": (dict(progressive="residual", resblock_type="ddpm",
                                         skip_rescale=False), True),
    "nofir_residual_ddpm_blocks_unconditional": (dict(
        fir=False, progressive="residual", resblock_type="ddpm", embedding_type="positional",
        scale_by_sigma=False, conditional=False), True),
    "ddpmpp_output_skip_elu_uncentered": (dict(
        fir=False, progressive="output_skip", progressive_input="input_skip",
        embedding_type="positional", init_scale=0.5, nonlinearity="elu"), False),
}
T = [0.3, 0.9]
STRIDE = 7  # keep every 7th output value


def fill(i: int, n: int) -> torch.Tensor:
    """Deterministic weights for the i-th state-dict entry: 0.2 sin(1 + 0.7 j + 0.1 i)."""
    return 0.2 * torch.sin(1.0 + 0.7 * torch.arange(n, dtype=torch.float64) + 0.1 * i).float()


def network_input() -> torch.Tensor:
    n = 2 * 3 * 16 * 16
    return (0.5 + 0.5 * torch.sin(0.37 * torch.arange(n, dtype=torch.float64))).float().reshape(
        2, 3, 16, 16)


class NS(dict):
    __getattr__ = dict.__getitem__


def main(official: str) -> None:
    root = Path(tempfile.mkdtemp())
    shutil.copytree(Path(official) / "models", root / "models")
    shutil.copy(Path(official) / "sde_lib.py", root)
    (root / "op").mkdir()
    (root / "op" / "__init__.py").write_text(OP)
    for rel, subs in FIXES.items():
        text = (root / rel).read_text()
        for old, new in subs:
            assert old in text, (rel, old)
            text = text.replace(old, new)
        (root / rel).write_text(text)
    sys.path.insert(0, str(root))
    from models.ncsnpp import NCSNpp  # noqa: PLC0415 (the official module)

    out = {"t": T, "stride": STRIDE, "cases": {}}
    for name, (over, centered) in CASES.items():
        model = dict(BASE, **over)
        cfg = NS(model=NS(model), data=NS(image_size=16, num_channels=3, centered=centered),
                 training=NS(continuous=True))
        net = NCSNpp(cfg).eval()
        sd = net.state_dict()
        with torch.no_grad():
            for i, (k, v) in enumerate(sd.items()):
                if k != "sigmas":
                    v.copy_(fill(i, v.numel()).reshape(v.shape))
        t = torch.tensor(T)
        cond = 0.01 * (50 / 0.01) ** t if model["embedding_type"] == "fourier" else 999 * t
        with torch.no_grad():
            y = net(network_input(), cond).flatten()
        out["cases"][name] = {
            "model": {k: list(v) if isinstance(v, tuple) else v for k, v in model.items()},
            "centered": centered,
            "keys": [[k, list(v.shape), str(v.dtype)] for k, v in sd.items()],
            "trainable": [n for n, p in net.named_parameters() if p.requires_grad],
            "output": y[::STRIDE].tolist(), "output_norm": y.norm().item()}
    path = Path(__file__).with_name("official_ncsnpp_reference.json")
    path.write_text(json.dumps(out, separators=(",", ":")) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main(sys.argv[1])
