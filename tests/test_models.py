"""Tests for scoresde.models: shapes, parameter counts, initial output, config errors, EMA."""

import pytest
import torch
from torch import nn

from scoresde.models import EMA, MLP, UNet, build_model, count_params

TINY = dict(image_size=8, in_channels=1, channels=16, channel_mult=(1, 2), num_res_blocks=1)


def perturb(model: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("embedding", ["fourier", "positional"])
def test_unet_shape_and_zero_init(embedding):
    torch.manual_seed(0)
    net = UNet(**TINY, attn_resolutions=(4,), embedding=embedding)
    x, cond = torch.randn(3, 1, 8, 8), torch.tensor([0.1, 1.0, 500.0])
    out = net(x, cond)
    assert out.shape == x.shape
    assert torch.count_nonzero(out) == 0  # zero-initialised output conv
    perturb(net)
    out = net(x, cond)
    assert out.abs().mean() > 0
    assert not torch.allclose(out[:1], net(x[:1], torch.tensor([2.0])))  # depends on cond


def test_unet_gradients_reach_output_layer():
    net = UNet(**TINY)
    net(torch.randn(2, 1, 8, 8), torch.rand(2)).sum().backward()
    assert net.conv_out.weight.grad.abs().sum() > 0


def test_unet_rgb_three_levels_scalar_cond_and_channels_last():
    torch.manual_seed(0)
    net = UNet(16, 3, channels=8, channel_mult=(1, 2, 2), num_res_blocks=2,
               attn_resolutions=(8, 4)).eval()
    perturb(net)
    x = torch.randn(2, 3, 16, 16)
    ref = net(x, torch.tensor([3.0, 3.0]))
    assert ref.shape == x.shape
    torch.testing.assert_close(net(x, torch.tensor(3.0)), ref)
    torch.testing.assert_close(net(x.to(memory_format=torch.channels_last), torch.tensor([3.0, 3.0])),
                               ref, rtol=1e-4, atol=1e-5)


def test_fourier_weights_are_a_fixed_buffer():
    net = UNet(**TINY, embedding="fourier", fourier_scale=16.0)
    names = [n for n, _ in net.named_parameters()]
    assert not any(n.endswith(".W") for n in names)
    w = net.state_dict()["embed.embed.W"]
    assert w.shape == (16,) and 8 < w.std() < 32  # W ~ N(0, 16^2)


@pytest.mark.parametrize("embedding", ["fourier", "positional"])
def test_float64_models(embedding):
    unet = UNet(**TINY, embedding=embedding).double()
    assert unet(torch.randn(2, 1, 8, 8, dtype=torch.float64), torch.rand(2)).dtype == torch.float64
    mlp = MLP(hidden=16, embedding=embedding).double()
    out = mlp(torch.randn(4, 2, dtype=torch.float64), torch.rand(4, dtype=torch.float64))
    assert out.dtype == torch.float64


def test_dropout_is_active_only_in_training():
    torch.manual_seed(0)
    net = UNet(**TINY, dropout=0.5)
    perturb(net)
    x, c = torch.randn(2, 1, 8, 8), torch.rand(2)
    net.eval()
    torch.testing.assert_close(net(x, c), net(x, c))
    net.train()
    assert not torch.allclose(net(x, c), net(x, c))


def test_paper_cifar10_size_on_meta_device():
    """DDPM++ cont. (Song et al. 2021, Table 3 / official cifar10_ddpmpp_continuous): ~62M."""
    with torch.device("meta"):
        net = UNet(32, 3, channels=128, channel_mult=(1, 2, 2, 2), num_res_blocks=4,
                   attn_resolutions=(16,), dropout=0.1)
    assert count_params(net) == 61_804_419


def test_tiny_digits_size():
    assert count_params(UNet(**TINY)) < 250_000


def test_mlp_shape_zero_init_and_cond():
    torch.manual_seed(0)
    net = MLP(dim=2, hidden=32, layers=2, embedding="fourier")
    x = torch.randn(5, 2)
    assert torch.count_nonzero(net(x, torch.rand(5))) == 0
    perturb(net)
    out = net(x, torch.zeros(5))
    assert out.shape == (5, 2)
    assert not torch.allclose(out, net(x, torch.ones(5)))


def test_build_model_from_yaml_like_config():
    net = build_model({"arch": "unet", "image_size": 8, "channels": 16, "channel_mult": [1, 2],
                       "attn_resolutions": [4]})
    assert isinstance(net, UNet)
    assert isinstance(build_model({"arch": "mlp", "hidden": 16}), MLP)


@pytest.mark.parametrize(("config", "key"), [
    ({"arch": "transformer"}, "model.arch"),
    ({"arch": "unet", "image_size": 30, "channel_mult": [1, 2, 2]}, "model.image_size"),
    ({"arch": "unet", "image_size": 8, "attn_resolutions": [16]}, "model.attn_resolutions"),
    ({"arch": "unet", "image_size": 8, "channels": 6}, "model.channels"),
    ({"arch": "unet", "image_size": 32, "channels": 48, "channel_mult": [1, 2, 2]},
     "model.channel_mult"),
    ({"arch": "unet", "image_size": 8, "embedding": "learned"}, "model.embedding"),
    ({"arch": "unet", "image_size": 8, "width": 3}, "model.width"),
    ({"arch": "mlp", "embedding": "nope"}, "model.embedding"),
])
def test_build_model_errors_name_the_key(config, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        build_model(config)


def test_ema_warmup_formula_exact():
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema = EMA(model, decay=0.9)
    expected = 1.0
    for n in range(1, 30):
        with torch.no_grad():
            model.weight.fill_(float(n))
        ema.update(model)
        d = min(0.9, (1 + n) / (10 + n))  # n counts updates, this one included
        expected = d * expected + (1 - d) * n
        assert ema.shadow["weight"].item() == pytest.approx(expected, rel=1e-6)
    assert ema.num_updates == 29


def test_ema_without_warmup_copy_to_and_state_dict():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = EMA(model, decay=0.5, warmup=False)
    start = model[0].weight.detach().clone()
    with torch.no_grad():
        model[0].weight.add_(2.0)
    model[1].num_batches_tracked.fill_(7)
    ema.update(model)
    torch.testing.assert_close(ema.shadow["0.weight"], start + 1.0)
    assert ema.shadow["1.num_batches_tracked"].item() == 7  # integer buffers are copied

    other = EMA(model, decay=0.1)
    other.load_state_dict(ema.state_dict())
    assert (other.decay, other.warmup, other.num_updates) == (0.5, False, 1)
    target = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    other.copy_to(target)
    torch.testing.assert_close(target[0].weight, start + 1.0)
    with pytest.raises(ValueError, match="does not match"):
        EMA(nn.Linear(3, 3), 0.9).load_state_dict(ema.state_dict())


def test_class_conditional_unet_labels():
    """num_classes = K: row K ("no label") is what labels=None means; untrained (zero label
    embedding) the labels change nothing; an unconditional net refuses labels."""
    torch.manual_seed(0)
    net = UNet(8, 1, channels=8, channel_mult=(1, 2), num_classes=3)
    for p in net.parameters():
        torch.nn.init.normal_(p, 0.0, 0.3) if p is not net.label_embed.weight else None
    x, cond = torch.randn(4, 1, 8, 8), torch.rand(4) * 999
    labels = torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        torch.testing.assert_close(net(x, cond, labels), net(x, cond))  # zero embedding
        net.label_embed.weight.normal_()
        torch.testing.assert_close(net(x, cond, torch.full((4,), 3)), net(x, cond))
        torch.testing.assert_close(net(x, cond, torch.tensor(1)), net(x, cond, torch.ones(4).long()))
        assert not torch.allclose(net(x, cond, labels), net(x, cond))
    assert net.label_embed.weight.shape == (4, 32)
    with pytest.raises(ValueError, match="unconditional"):
        UNet(8, 1, channels=8, channel_mult=(1, 2))(x, cond, labels)
    with pytest.raises(ValueError, match="num_classes"):
        UNet(8, 1, channels=8, channel_mult=(1, 2), num_classes=-1)
