"""torch.compile of the score network (scoresde.models.compiled): compiled and eager agree on every
sampler and the likelihood, a partial batch does not compile again, compiled runs repeat exactly,
and the ``compile`` setting resolves as documented.

The network is a tiny U-Net (4 x 4 images, 8 channels) so that Inductor compiles it in seconds on
two cores; one compiled network serves every sampler (one graph with gradients off, one with
gradients on for the likelihood). Tolerances: one forward agrees to 1e-5 (fused kernels sum in
another order, ~1e-7 relative); a whole trajectory of a fixed-step sampler to 1e-4, the adaptive
RK45 sampler to 1e-3 (its accepted steps may differ by a rounding), the likelihood's ODE
right-hand side to 1e-5 and its RK45 solve at rtol = atol = 1e-6 to 1e-3 relative.
"""

from __future__ import annotations

import pytest
import torch

from scoresde import VPSDE
from scoresde.losses import get_score_fn
from scoresde.models import UNet
from scoresde.models.compiled import (
    AUTO,
    FixedBatch,
    check_setting,
    compiled,
    inductor_cache,
    use_compile,
)
from scoresde.stages.cases import ADAPTIVE, SAMPLERS, run_sampler

SHAPE = (1, 4, 4)
BATCH = 4  # the compiled network's one batch size; the samplers below run 3 rows (padded to 4)


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    """(eager net, compiled callable) sharing weights: tiny U-Net with small random output weights."""
    torch._dynamo.reset()
    mp = pytest.MonkeyPatch()
    mp.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path_factory.mktemp("inductor")))
    torch.manual_seed(0)
    net = UNet(image_size=4, in_channels=1, channels=8, channel_mult=(1,), num_res_blocks=1)
    with torch.no_grad():
        for p in net.parameters():
            if not p.any():
                p.normal_(0.0, 0.05)
    net.eval().requires_grad_(False)
    yield net, compiled(net, True, BATCH)
    mp.undo()
    torch._dynamo.reset()


def frames() -> int:
    """Frames Dynamo has compiled so far in this process."""
    from torch._dynamo.utils import counters

    return counters["frames"]["ok"] + counters["stats"]["unique_graphs"]


def test_forward_agrees_and_partial_batch_does_not_recompile(nets):
    net, fast = nets
    gen = torch.Generator().manual_seed(1)
    x, t = torch.randn(BATCH, *SHAPE, generator=gen), torch.rand(BATCH, generator=gen) * 999
    with torch.no_grad():
        torch.testing.assert_close(fast(x, t), net(x, t), atol=1e-5, rtol=1e-5)
        before = frames()
        out_partial = fast(x[:3], t[:3])  # padded to BATCH
        out_large = fast(torch.cat([x, x[:2]]), torch.cat([t, t[:2]]))  # split 4 + 2 (padded)
        out_last = fast(x.contiguous(memory_format=torch.channels_last), t)  # strides normalised
        assert frames() == before, "a partial, larger or channels-last batch compiled again"
    torch.testing.assert_close(out_partial, net(x[:3], t[:3]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out_large[4:], out_large[:2])
    assert torch.equal(out_last, fast(x, t))


def test_compiled_runs_repeat_exactly(nets):
    _, fast = nets
    gen = torch.Generator().manual_seed(2)
    x, t = torch.randn(BATCH, *SHAPE, generator=gen), torch.rand(BATCH, generator=gen) * 999
    with torch.no_grad():
        assert torch.equal(fast(x, t), fast(x.clone(), t.clone()))


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_every_sampler_compiled_matches_eager(nets, sampler):
    net, fast = nets
    sde = VPSDE()
    steps = None if sampler in ADAPTIVE else 4
    drawn = {}
    for name, model in (("eager", net), ("compiled", fast)):
        gens = [torch.Generator().manual_seed(10 + i) for i in range(3)]
        with torch.no_grad():
            drawn[name] = run_sampler(get_score_fn(sde, model), sde, (3, *SHAPE), sampler, steps,
                                      [True, False], snr=0.16, rtol=1e-3, atol=1e-3,
                                      generator=gens)
    tol = 1e-3 if sampler in ADAPTIVE else 1e-4
    for d in (True, False):
        (xe, nfe_e), (xc, nfe_c) = drawn["eager"][d], drawn["compiled"][d]
        torch.testing.assert_close(xc, xe, atol=tol, rtol=tol)
        if sampler not in ADAPTIVE:
            assert nfe_c == nfe_e


@pytest.mark.slow  # ~35 s on two cores: Inductor compiles the forward + backward graph
def test_likelihood_compiled_matches_eager(nets):
    """The ODE's right-hand side (drift and Hutchinson divergence, one VJP) agrees to 1e-5; the
    whole RK45 solve to 1e-3 relative at rtol = atol = 1e-6. (At looser tolerances the solve of
    this untrained, rough network moves by its own discretisation error, ~0.5 nats at 1e-4,
    under any 1e-6 change of the score, compiled or not.)"""
    from scoresde.likelihood import discrete_log_likelihood, divergence_fn

    net, fast = nets
    sde = VPSDE()
    gen = torch.Generator().manual_seed(4)
    y, v = torch.randn(3, *SHAPE, generator=gen), torch.randn(1, 3, *SHAPE, generator=gen)
    t = torch.full((3,), 0.3)
    rhs = {}
    for name, model in (("eager", net), ("compiled", fast)):
        drift = sde.reverse(get_score_fn(sde, model), probability_flow=True).sde
        rhs[name] = divergence_fn(lambda x, s, d=drift: d(x, s)[0])(y, t, v)
    for a, b in zip(rhs["compiled"], rhs["eager"], strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)

    k = torch.randint(0, 17, (3, *SHAPE), generator=torch.Generator().manual_seed(3))
    out = {}
    for name, model in (("eager", net), ("compiled", fast)):
        gens = [torch.Generator().manual_seed(20 + i) for i in range(3)]
        out[name] = discrete_log_likelihood(get_score_fn(sde, model), sde, k, 17, scale=2.0,
                                            shift=-1.0, rtol=1e-6, atol=1e-6, generator=gens)
    (le, _), (lc, _) = out["eager"], out["compiled"]
    torch.testing.assert_close(lc, le, rtol=1e-3, atol=0.0)


def test_fixed_batch_pads_with_rows_that_do_not_leak():
    """Padding rows are copies of the last row, and the gradient reaches only the real rows."""
    seen = []

    def fn(x, cond):
        seen.append(x.shape[0])
        return x * cond[:, None, None, None]

    fb = FixedBatch(fn)
    x = torch.randn(5, *SHAPE, requires_grad=True)
    fb(x, torch.ones(5)).sum().backward()  # sets the size: 5
    x2 = torch.randn(2, *SHAPE, requires_grad=True)
    out = fb(x2, torch.full((2,), 2.0))
    (grad,) = torch.autograd.grad(out.sum(), x2)
    assert seen == [5, 5] and out.shape == x2.shape
    torch.testing.assert_close(grad, torch.full_like(x2, 2.0))


def test_fixed_batch_carries_a_class_conditional_networks_labels():
    """Labels are split and padded with their rows (classifier-free guidance doubles the batch),
    and a class-conditional UNet gives the same scores through it as called directly."""
    torch.manual_seed(0)
    net = UNet(8, 1, channels=8, channel_mult=(1, 2), num_classes=3).eval()
    with torch.no_grad():
        for p in net.parameters():  # zero-initialised layers would hide the labels
            p.normal_(0.0, 0.3)
        fb = FixedBatch(net, batch_size=4)
        x, cond = torch.randn(7, 1, 8, 8), torch.rand(7) * 999
        labels = torch.tensor([0, 1, 2, 3, 0, 1, 2])
        torch.testing.assert_close(fb(x, cond, labels), net(x, cond, labels))
        torch.testing.assert_close(fb(x, cond), net(x, cond))
        assert not torch.allclose(fb(x, cond, labels), fb(x, cond))


def test_setting_resolves_as_documented():
    assert check_setting("auto") == "auto" and check_setting(True) is True
    assert check_setting("false") is False
    for bad in ("yes", 1, None):
        with pytest.raises(ValueError, match="compile="):
            check_setting(bad)
    with pytest.raises(ValueError, match="stage="):
        use_compile("auto", "fid", "cpu", (1, 8, 8))
    assert use_compile(True, "train", "cpu", (1, 8, 8)) is True
    assert use_compile(False, "sample", "cuda", (3, 32, 32)) is False
    # auto on the CPU: sampling from Fashion-MNIST size (28 x 28), nothing else (measured)
    assert not use_compile("auto", "sample", "cpu", (1, 8, 8))
    assert use_compile("auto", "sample", "cpu", (1, 28, 28))
    assert not use_compile("auto", "likelihood", "cpu", (1, 28, 28))
    assert not use_compile("auto", "train", "cpu", (3, 32, 32))
    assert not use_compile("auto", "select", "cpu", (1, 28, 28))
    assert all(use_compile("auto", s, "cuda", (1, 8, 8)) for s in AUTO["cuda"])
    assert compiled(torch.nn.Identity(), False) is not None


def test_inductor_cache_is_project_local_unless_set(monkeypatch, tmp_path):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    assert inductor_cache() == str(tmp_path / ".cache" / "inductor")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/somewhere/else")
    assert inductor_cache() == "/somewhere/else"
