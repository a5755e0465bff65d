"""The library's argument boundary (``scoresde.checks``): every public function refuses a bad
argument with one ValueError naming it, before the first score evaluation, and returns a finite
result of the documented shape for valid arguments.

Two layers: the probes that were found accepted or crashing (one named case each), and
property-based tests (Hypothesis) that generate bad values for every public argument. The
Hypothesis profile is fixed (derandomized, bounded examples) so the run is reproducible and short.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from scoresde import (
    VESDE,
    VPSDE,
    SubVPSDE,
    bits_per_dim,
    discrete_bits_per_dim,
    discrete_log_likelihood,
    dsm_loss,
    log_likelihood,
    make_sde,
    ode_sample,
    pc_sample,
    sde_sample,
    solve_inverse,
    uniform_dequantize,
)
from scoresde.controllable import colorize, conditional_score, inpaint
from scoresde.operators import AvgPool, Blur, Dense, Mask, random_projection
from scoresde.sampling import METHODS, make_grid

PROFILE = settings(derandomize=True, max_examples=100, deadline=None, database=None,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
F64 = torch.float64


class Counting:
    """The exact score of N(0, I) data, -x / (a^2 + s^2), counting its calls."""

    def __init__(self, sde):
        self.sde, self.calls = sde, 0

    def __call__(self, x, t):
        self.calls += 1
        var = self.sde.mean_coeff(t) ** 2 + self.sde.std(t) ** 2
        return -x / var.reshape(-1, *[1] * (x.ndim - 1)).to(x)


# arguments whose documented default is None (None means: the default)
NONE_OK = {"steps", "eps", "sigma_min", "tau", "radius", "schedule", "generator", "dtype", "device",
           "x_T", "in_shape"}


def draw(data, strategy, argument):
    value = data.draw(strategy, label=argument)
    assume(not (value is None and argument in NONE_OK))
    return value


def refused(call, name, sde=None):
    """``call(score)`` raises one ValueError naming ``name``; the score is never evaluated."""
    score = Counting(sde or VPSDE())
    with pytest.raises(ValueError) as err:
        call(score)
    message = str(err.value)
    assert name in message, (name, message)
    assert "\n" not in message
    assert score.calls == 0, f"{score.calls} score evaluations before the refusal: {message}"
    return message


# --------------------------------------------------------------------------- the probes, one each

VP = VPSDE()
Y, A1 = torch.zeros(3, 1), torch.tensor([[1.0, 0.0]])
K = torch.tensor([[0, 1, 2, 3]])
IMG = torch.zeros(2, 1, 4, 4)
MASK = torch.ones(2, 1, 4, 4)


def _nan(shape=(4, 2)):
    return torch.full(shape, math.nan)


PROBES = {
    # a raw TypeError / RuntimeError / AssertionError before
    "sde_sample shape (-1, 2)": ("shape", lambda s: sde_sample(s, VP, (-1, 2), "edm", 3)),
    "sde_sample shape (4, 2.5)": ("shape", lambda s: sde_sample(s, VP, (4, 2.5), "edm", 3)),
    "sde_sample dtype int64": ("dtype", lambda s: sde_sample(s, VP, (4, 2), "edm", 3, dtype=torch.int64)),
    "pc generator 42": ("generator", lambda s: pc_sample(s, VP, (4, 2), steps=2, generator=42)),
    "ode generator 'cpu'": ("generator", lambda s: ode_sample(s, VP, (4, 2), "euler", 2, generator="cpu")),
    "VPSDE N '1000'": ("N", lambda s: VPSDE(N="1000")),
    "inverse y int64": ("y", lambda s: solve_inverse(s, VP, torch.zeros(3, 1, dtype=torch.long), A1, 0.1, 2)),
    "inverse noise_std None": ("noise_std", lambda s: solve_inverse(s, VP, Y, A1, None, 2)),
    "Blur sigma inf": ("sigma", lambda s: Blur((1, 4, 4), sigma=math.inf)),
    "discrete eps nan": ("eps", lambda s: discrete_log_likelihood(s, VP, K, 4, eps=math.nan)),
    "discrete k (0, 4)": ("k", lambda s: discrete_log_likelihood(s, VP, torch.zeros(0, 4).long(), 4)),
    # the same after score evaluations
    "pc dtype complex64": ("dtype", lambda s: pc_sample(s, VP, (4, 2), steps=2, dtype=torch.complex64)),
    "ode x_T complex": ("x_T", lambda s: ode_sample(s, VP, (4, 2), "euler", 2,
                                                    x_T=torch.zeros(4, 2, dtype=torch.complex64))),
    "likelihood x complex": ("x", lambda s: log_likelihood(s, VP, torch.zeros(4, 2, dtype=torch.complex64))),
    "pc shape (4,)": ("shape", lambda s: pc_sample(s, VP, (4,), steps=2)),
    "pc snr '0.16'": ("snr", lambda s: pc_sample(s, VP, (4, 2), steps=2, snr="0.16")),
    "inverse y (0, 1)": ("y", lambda s: solve_inverse(s, VP, torch.zeros(0, 1), A1, 0.1, 2)),
    "inverse scale '1'": ("scale", lambda s: solve_inverse(s, VP, Y, A1, 0.1, 2, scale="1")),
    # NaN / Inf / out of range accepted, then blamed on the score network
    "inverse y nan": ("y", lambda s: solve_inverse(s, VP, torch.full((3, 1), math.nan), A1, 0.1, 2)),
    "inverse y inf": ("y", lambda s: solve_inverse(s, VP, torch.full((3, 1), math.inf), A1, 0.1, 2)),
    "inverse A nan": ("A", lambda s: solve_inverse(s, VP, Y, torch.tensor([[math.nan, 0.0]]), 0.1, 2)),
    "inverse A inf": ("A", lambda s: solve_inverse(s, VP, Y, torch.tensor([[math.inf, 0.0]]), 0.1, 2)),
    "likelihood eps -1e-3": ("eps", lambda s: log_likelihood(s, VP, torch.zeros(4, 2), eps=-1e-3)),
    "likelihood rtol = atol = 0": ("rtol", lambda s: log_likelihood(s, VP, torch.zeros(4, 2), rtol=0,
                                                                    atol=0)),
    "likelihood x nan": ("x", lambda s: log_likelihood(s, VP, _nan())),
    "discrete shift nan": ("shift", lambda s: discrete_log_likelihood(s, VP, K, 4, shift=math.nan)),
    "discrete shift inf": ("shift", lambda s: discrete_log_likelihood(s, VP, K, 4, shift=math.inf)),
    "VPSDE beta_max inf": ("beta_max", lambda s: VPSDE(beta_max=math.inf)),
    "edm S_noise inf": ("S_noise", lambda s: sde_sample(s, VP, (4, 2), "edm", 3, S_noise=math.inf)),
    "pc snr inf": ("snr", lambda s: pc_sample(s, VP, (4, 2), steps=2, snr=math.inf)),
    # nonsense accepted and a result returned
    "pc shape (4, 0)": ("shape", lambda s: pc_sample(s, VP, (4, 0), steps=2)),
    "VPSDE N 2.5": ("N", lambda s: VPSDE(N=2.5)),
    "VESDE N nan": ("N", lambda s: VESDE(N=math.nan)),
    "make_sde option of another SDE": ("sigma_min", lambda s: make_sde("vp", sigma_min=0.1)),
    "likelihood eps 1.5 > T": ("eps", lambda s: log_likelihood(s, VP, torch.zeros(4, 2), eps=1.5)),
    "likelihood rtol -1": ("rtol", lambda s: log_likelihood(s, VP, torch.zeros(4, 2), rtol=-1)),
    "pc denoise 'no'": ("denoise", lambda s: pc_sample(s, VP, (4, 2), steps=2, denoise="no")),
    "ode denoise 'no'": ("denoise", lambda s: ode_sample(s, VP, (4, 2), "euler", 2, denoise="no")),
    "sde denoise 'no'": ("denoise", lambda s: sde_sample(s, VP, (4, 2), "edm", 2, denoise="no")),
    "inpaint denoise 'no'": ("denoise", lambda s: inpaint(s, VP, IMG, MASK, 2, denoise="no")),
    "inverse denoise 'no'": ("denoise", lambda s: solve_inverse(s, VP, Y, A1, 0.1, 2, denoise="no")),
    "Blur radius 2.7": ("radius", lambda s: Blur((1, 8, 8), sigma=1.0, radius=2.7)),
    "bits_per_dim dim 0": ("dim", lambda s: bits_per_dim(torch.zeros(2), 0, 256)),
    "uniform_dequantize k above levels": ("k", lambda s: uniform_dequantize(torch.tensor([[0, 17]]), 17)),
    "rk45 atol inf": ("atol", lambda s: ode_sample(s, VP, (4, 2), "rk45", atol=math.inf)),
    # a ValueError in Python's words
    "AvgPool in_shape (8, 8)": ("in_shape", lambda s: AvgPool((8, 8), 2)),
    "Blur in_shape (8, 8)": ("in_shape", lambda s: Blur((8, 8), 1.0)),
    "AvgPool factor nan": ("factor", lambda s: AvgPool((1, 8, 8), math.nan)),
    "bits_per_dim levels 0": ("levels", lambda s: bits_per_dim(torch.zeros(2), 4, 0)),
    # training's loss: cheap checks only (it runs at every step)
    "dsm_loss eps 1.5": ("eps", lambda s: dsm_loss(torch.nn.Identity(), VP, torch.zeros(4, 2), eps=1.5)),
    "dsm_loss x int": ("x", lambda s: dsm_loss(torch.nn.Identity(), VP, torch.zeros(4, 2).long())),
    "dsm_loss weighting 'no'": ("weighting", lambda s: dsm_loss(
        torch.nn.Identity(), VP, torch.zeros(4, 2), weighting="no")),
    "dsm_loss parameterization 'ddpm'": ("parameterization", lambda s: dsm_loss(
        torch.nn.Identity(), VP, torch.zeros(4, 2), parameterization="ddpm")),
    "dsm_loss noise_distribution 'normal'": ("noise_distribution", lambda s: dsm_loss(
        torch.nn.Identity(), VP, torch.zeros(4, 2), noise_distribution="normal")),
    "dsm_loss sigma_data 0": ("sigma_data", lambda s: dsm_loss(
        torch.nn.Identity(), VP, torch.zeros(4, 2), sigma_data=0.0)),
    "dsm_loss min_snr_gamma -1": ("min_snr_gamma", lambda s: dsm_loss(
        torch.nn.Identity(), VP, torch.zeros(4, 2), min_snr_gamma=-1.0)),
    # devices: a CPU generator where the noise is drawn on a GPU (refused before CUDA is touched)
    "pc generator on another device": ("generator", lambda s: pc_sample(
        s, VP, (4, 2), steps=2, device="cuda", generator=torch.Generator())),
}


@pytest.mark.parametrize("case", sorted(PROBES))
def test_probe_is_refused_naming_the_argument(case):
    name, call = PROBES[case]
    refused(call, name)


# --------------------------------------------------------------------------- generated bad values

NUMBER_JUNK = st.sampled_from([math.nan, "0.5", "1", None, True, False, 1j, [1.0], torch.ones(2)])
WHOLE_JUNK = st.one_of(
    st.sampled_from([math.nan, math.inf, "3", None, True, 2.5, 1j, [3]]),
    st.floats(0.01, 50.0).filter(lambda v: v != int(v)),
)
FLAG_JUNK = st.sampled_from(["no", "yes", "False", 0, 1, None, 0.0, [True]])
NAME_JUNK = st.one_of(st.text(max_size=12), st.sampled_from([None, 1, ["euler"]]))
GENERATOR_JUNK = st.sampled_from([42, "cpu", 0.5, [1, 2], torch.device("cpu"), True])
DTYPE_JUNK = st.sampled_from([torch.int64, torch.int32, torch.bool, torch.complex64, "float32", float])
SHAPE_JUNK = st.one_of(
    st.tuples(st.integers(-3, 0), st.integers(1, 3)),
    st.tuples(st.integers(1, 3), st.integers(-3, 0)),
    st.tuples(st.integers(1, 3)),
    st.tuples(st.integers(1, 3), st.floats(0.1, 3.9).filter(lambda v: v != int(v))),
    st.sampled_from(["4, 2", None, 4, (4, "2"), (True, 2), ()]),
)


def positive_junk(finite_above=0.0):
    """Bad values for a finite number > ``finite_above``: junk, infinities, values at or below."""
    return st.one_of(NUMBER_JUNK, st.sampled_from([math.inf, -math.inf]),
                     st.floats(-1e6, finite_above, allow_nan=False))


def tensor_junk(shape):
    """Bad tensors for a floating (B, ...) argument of ``shape``."""
    empty = (0, *shape[1:])
    return st.sampled_from([
        torch.zeros(shape, dtype=torch.long), torch.zeros(shape, dtype=torch.complex64),
        torch.zeros(shape, dtype=torch.bool), torch.full(shape, math.nan), torch.full(shape, math.inf),
        torch.full(shape, -math.inf), torch.zeros(empty), torch.zeros(shape[0]), [[0.0] * shape[-1]],
        None if len(shape) else 0.0,
    ])


SAMPLERS = {
    "pc_sample": lambda s, **kw: pc_sample(s, VP, kw.pop("shape", (3, 2)), **{"steps": 2, **kw}),
    "ode_sample": lambda s, **kw: ode_sample(s, VP, kw.pop("shape", (3, 2)), **{"method": "heun",
                                                                                 "steps": 2, **kw}),
    "sde_sample": lambda s, **kw: sde_sample(s, VP, kw.pop("shape", (3, 2)), **{"method": "edm",
                                                                                 "steps": 2, **kw}),
}
COMMON = {
    "shape": SHAPE_JUNK, "steps": st.one_of(WHOLE_JUNK, st.integers(-5, 0)), "eps": st.one_of(
        NUMBER_JUNK, st.sampled_from([0.0, -1e-3, 1.0, 1.5, math.inf])),
    "denoise": FLAG_JUNK, "generator": GENERATOR_JUNK, "dtype": DTYPE_JUNK, "x_T": tensor_junk((3, 2)),
    "device": st.sampled_from(["gpu", 5, "cpu:x"]),
}
OWN = {
    "pc_sample": {"snr": positive_junk(-1e-9), "corrector_steps": st.one_of(WHOLE_JUNK, st.integers(-5, -1)),
                  "predictor": NAME_JUNK, "corrector": NAME_JUNK, "schedule": NAME_JUNK,
                  "progress": FLAG_JUNK},
    "ode_sample": {"method": NAME_JUNK, "rtol": positive_junk(), "atol": positive_junk(),
                   "schedule": NAME_JUNK, "sigma_min": positive_junk()},
    "sde_sample": {"method": NAME_JUNK, "S_churn": positive_junk(-1e-9), "S_noise": positive_junk(-1e-9),
                   "schedule": NAME_JUNK},
}
SAMPLER_CASES = [(f, a) for f in SAMPLERS for a in [*COMMON, *OWN[f]]]


@pytest.mark.parametrize("function, argument", SAMPLER_CASES)
@PROFILE
@given(data=st.data())
def test_samplers_refuse_generated_bad_values(function, argument, data):
    strategy = OWN[function].get(argument, COMMON.get(argument))
    value = draw(data, strategy, argument)
    if argument in ("method", "predictor", "corrector", "schedule") and isinstance(value, str):
        from scoresde.sampling import CORRECTORS, PREDICTORS, SCHEDULES
        known = {**METHODS, **PREDICTORS, **CORRECTORS, **SCHEDULES}
        if value in known:
            return
    message = refused(lambda s: SAMPLERS[function](s, **{argument: value}), _named(argument))
    assert len(message) < 400


def _named(argument):
    return {"x_T": "x_T", "method": "method", "schedule": "schedule"}.get(argument, argument)


LIKELIHOOD = {
    "x": tensor_junk((3, 2)), "eps": COMMON["eps"], "rtol": positive_junk(), "atol": positive_junk(),
    "divergence": NAME_JUNK, "n_probes": st.one_of(WHOLE_JUNK, st.integers(-3, 0)),
    "generator": GENERATOR_JUNK,
}
DISCRETE = {
    "k": st.sampled_from([torch.zeros(0, 4, dtype=torch.long), torch.tensor([0, 1]), torch.tensor([[0, 4]]),
                          torch.tensor([[0.5, 1.0]]), torch.tensor([[-1, 0]]), None, [[0, 1]]]),
    "levels": st.one_of(WHOLE_JUNK, st.integers(-3, 1)), "scale": positive_junk(),
    "shift": st.one_of(NUMBER_JUNK, st.sampled_from([math.inf, -math.inf])),
    "dequantization": NAME_JUNK, "samples": st.one_of(WHOLE_JUNK, st.integers(-3, 0)),
    "eps": COMMON["eps"], "rtol": positive_junk(), "tau": positive_junk(),
}


@pytest.mark.parametrize("argument", sorted(LIKELIHOOD))
@PROFILE
@given(data=st.data())
def test_log_likelihood_refuses_generated_bad_values(argument, data):
    value = draw(data, LIKELIHOOD[argument], argument)
    if argument == "divergence" and value in ("exact", "rademacher", "gaussian"):
        return
    kwargs = {"x": torch.zeros(3, 2), argument: value}
    refused(lambda s: log_likelihood(s, VP, **kwargs), argument)


@pytest.mark.parametrize("argument", sorted(DISCRETE))
@PROFILE
@given(data=st.data())
def test_discrete_log_likelihood_refuses_generated_bad_values(argument, data):
    value = draw(data, DISCRETE[argument], argument)
    if argument == "dequantization" and value in ("uniform", "importance", "truncated-normal"):
        return
    kwargs = {"k": K, "levels": 4, argument: value}
    refused(lambda s: discrete_log_likelihood(s, VP, **kwargs), argument)


INVERSE = {
    "y": tensor_junk((3, 1)), "A": st.sampled_from([torch.tensor([[math.nan, 0.0]]), torch.zeros(1, 2, 2),
                                                    torch.zeros(1, 2, dtype=torch.long), "blur", None]),
    "noise_std": positive_junk(-1e-9), "steps": COMMON["steps"], "eps": COMMON["eps"],
    "method": NAME_JUNK, "generator": GENERATOR_JUNK, "scale": positive_junk(-1e-9),
    "denoise": FLAG_JUNK, "predictor": NAME_JUNK,
}


@pytest.mark.parametrize("argument", sorted(INVERSE))
@PROFILE
@given(data=st.data())
def test_solve_inverse_refuses_generated_bad_values(argument, data):
    value = draw(data, INVERSE[argument], argument)
    if value in ("dps", "pigdm", "smc", "reverse_diffusion", "ancestral"):
        return
    kwargs = {"y": Y, "A": A1, "noise_std": 0.1, "steps": 2, argument: value}
    refused(lambda s: solve_inverse(s, VP, **kwargs), argument)


INPAINT = {
    "y": tensor_junk((2, 1, 4, 4)), "steps": COMMON["steps"], "eps": COMMON["eps"],
    "method": NAME_JUNK, "predictor": NAME_JUNK, "corrector": NAME_JUNK, "snr": positive_junk(-1e-9),
    "denoise": FLAG_JUNK, "generator": GENERATOR_JUNK,
    "mask": st.sampled_from([torch.full((2, 1, 4, 4), 0.5), torch.ones(2, 1, 4), None]),
}


@pytest.mark.parametrize("argument", sorted(INPAINT))
@PROFILE
@given(data=st.data())
def test_inpaint_refuses_generated_bad_values(argument, data):
    value = draw(data, INPAINT[argument], argument)
    from scoresde.sampling import CORRECTORS, PREDICTORS
    if isinstance(value, str) and value in ("replace", "repaint", "smc", *PREDICTORS, *CORRECTORS):
        return
    kwargs = {"y": IMG, "mask": MASK, "steps": 2, argument: value}
    refused(lambda s: inpaint(s, VP, **kwargs), argument)


CONSTRUCTORS = {
    "VESDE": (VESDE, {"sigma_min": positive_junk(), "sigma_max": positive_junk(),
                      "N": st.one_of(WHOLE_JUNK, st.integers(-3, 0))}),
    "VPSDE": (VPSDE, {"beta_min": positive_junk(), "beta_max": positive_junk(),
                      "N": st.one_of(WHOLE_JUNK, st.integers(-3, 0))}),
    "SubVPSDE": (SubVPSDE, {"beta_min": positive_junk(), "beta_max": positive_junk(),
                            "N": st.one_of(WHOLE_JUNK, st.integers(-3, 0))}),
    "AvgPool": (lambda **kw: AvgPool(**{"in_shape": (1, 4, 4), **kw}),
                {"in_shape": st.one_of(SHAPE_JUNK, st.just((4, 4))),
                 "factor": st.one_of(WHOLE_JUNK, st.integers(-3, 0))}),
    "Blur": (lambda **kw: Blur(**{"in_shape": (1, 4, 4), **kw}),
             {"in_shape": st.one_of(SHAPE_JUNK, st.just((4, 4))), "sigma": positive_junk(),
              "radius": st.one_of(WHOLE_JUNK, st.integers(-3, -1), st.integers(4, 9))}),
    "Dense": (lambda **kw: Dense(**{"A": A1, **kw}), {"A": INVERSE["A"], "in_shape": st.sampled_from(
        [(3,), (1, 3), (0, 2), (2, 0), (-1, -2), (2.5,), "2", (True, 2), 2])}),
    "Mask": (Mask, {"mask": st.sampled_from([torch.full((1, 4), 0.5), torch.zeros(0, 2), None, "all"])}),
    "random_projection": (lambda **kw: random_projection(**{"in_shape": (1, 4, 4), "m": 3, **kw}),
                          {"m": st.one_of(WHOLE_JUNK, st.integers(-3, 0), st.integers(17, 40)),
                           "generator": GENERATOR_JUNK, "dtype": DTYPE_JUNK}),
    "bits_per_dim": (lambda **kw: bits_per_dim(**{"logp": torch.zeros(2), "dim": 4, "levels": 256, **kw}),
                     {"logp": st.sampled_from([torch.tensor([math.nan]), torch.zeros(2).long(), "0",
                                               torch.zeros(0), None]),
                      "dim": st.one_of(WHOLE_JUNK, st.integers(-3, 0)),
                      "levels": st.one_of(WHOLE_JUNK, st.integers(-3, 1)), "scale": positive_junk()}),
    "discrete_bits_per_dim": (lambda **kw: discrete_bits_per_dim(**{"log_prob": torch.zeros(2), "dim": 4,
                                                                    **kw}),
                              {"dim": st.one_of(WHOLE_JUNK, st.integers(-3, 0))}),
    "uniform_dequantize": (lambda **kw: uniform_dequantize(**{"k": K, "levels": 4, **kw}),
                           {"k": DISCRETE["k"], "levels": DISCRETE["levels"], "generator": GENERATOR_JUNK}),
    "conditional_score": (lambda **kw: conditional_score(**{"score_fn": lambda x, t: -x,
                                                            "log_prob_fn": lambda x, t: x.sum(1), **kw}),
                          {"scale": st.one_of(NUMBER_JUNK, st.sampled_from([math.inf, -math.inf])),
                           "log_prob_fn": st.sampled_from([None, 3, "logp"])}),
}
CONSTRUCTOR_CASES = [(c, a) for c, (_, args) in CONSTRUCTORS.items() for a in args]


@pytest.mark.parametrize("function, argument", CONSTRUCTOR_CASES)
@PROFILE
@given(data=st.data())
def test_constructors_and_helpers_refuse_generated_bad_values(function, argument, data):
    make, strategies = CONSTRUCTORS[function]
    value = draw(data, strategies[argument], argument)
    refused(lambda s: make(**{argument: value}), argument)


# --------------------------------------------------------------------------- valid values


@PROFILE
@given(sde_name=st.sampled_from(["ve", "vp", "subvp"]), method=st.sampled_from(sorted(METHODS)),
       batch=st.integers(1, 3), dims=st.lists(st.integers(1, 3), min_size=1, max_size=3),
       steps=st.integers(1, 3), denoise=st.booleans(), dtype=st.sampled_from([torch.float32, F64]),
       per_sample=st.booleans())
def test_valid_calls_return_finite_samples_of_the_shape(sde_name, method, batch, dims, steps, denoise,
                                                        dtype, per_sample):
    sde = {"ve": VESDE, "vp": VPSDE, "subvp": SubVPSDE}[sde_name](N=steps)
    shape = (batch, *dims)
    gen = [torch.Generator().manual_seed(i) for i in range(batch)] if per_sample else \
        torch.Generator().manual_seed(0)
    score = Counting(sde)
    if METHODS[method].kind == "ode":
        x, nfe = ode_sample(score, sde, shape, method, steps=steps, denoise=denoise, dtype=dtype,
                            generator=gen, rtol=1e-3, atol=1e-3)
    else:
        x, nfe = sde_sample(score, sde, shape, method, steps, denoise=denoise, dtype=dtype, generator=gen)
    assert x.shape == shape and x.dtype == dtype and bool(torch.isfinite(x).all())
    assert nfe == score.calls >= 1


@PROFILE
@given(sde_name=st.sampled_from(["ve", "vp", "subvp"]), predictor=st.sampled_from(
    ["euler_maruyama", "reverse_diffusion", "ancestral", "none"]), corrector=st.sampled_from(
    ["langevin", "ald", "none"]), steps=st.integers(1, 3), snr=st.floats(0.0, 0.3),
    batch=st.integers(1, 3), denoise=st.booleans())
def test_valid_pc_calls_return_finite_samples_of_the_shape(sde_name, predictor, corrector, steps, snr,
                                                           batch, denoise):
    sde = {"ve": VESDE, "vp": VPSDE, "subvp": SubVPSDE}[sde_name]()
    score = Counting(sde)
    x, nfe = pc_sample(score, sde, (batch, 2), steps=steps, predictor=predictor, corrector=corrector,
                       snr=snr, denoise=denoise, generator=torch.Generator().manual_seed(1), dtype=F64)
    assert x.shape == (batch, 2) and bool(torch.isfinite(x).all())
    assert nfe == score.calls


@settings(PROFILE, max_examples=10)
@given(batch=st.integers(1, 3), dim=st.integers(1, 3), divergence=st.sampled_from(
    ["exact", "rademacher", "gaussian"]), eps=st.floats(1e-5, 1e-2))
def test_valid_likelihood_calls_are_finite(batch, dim, divergence, eps):
    x = torch.randn(batch, dim, generator=torch.Generator().manual_seed(0), dtype=F64)
    logp, nfe = log_likelihood(Counting(VP), VP, x, rtol=1e-3, atol=1e-3, eps=eps, divergence=divergence,
                               generator=torch.Generator().manual_seed(1))
    assert logp.shape == (batch,) and bool(torch.isfinite(logp).all()) and nfe > 0


def test_step_functions_check_their_grid_and_state():
    """``sample_<method>(score_fn, sde, x, times)`` is public: its x, times and generator are
    checked before the first score evaluation too."""
    times = make_grid(VP, "time_uniform", 2, 1e-3)
    for name, spec in METHODS.items():
        refused(lambda s, step=spec.step: step(s, VP, torch.zeros(2, 2, dtype=torch.long), times), "x")
        refused(lambda s, step=spec.step: step(s, VP, torch.zeros(2, 2), times.flip(0)), "times")
        refused(lambda s, step=spec.step: step(s, VP, torch.zeros(2, 2), times, generator=7), "generator")
        refused(lambda s, step=spec.step: step(s, VP, _nan((2, 2)), times), "x"), name


def test_colorize_refuses_integer_grey_images():
    refused(lambda s: colorize(s, VP, torch.zeros(2, 1, 4, 4, dtype=torch.long), 2), "gray")


@settings(PROFILE, max_examples=15)
@given(method=st.sampled_from(["dps", "pigdm", "smc"]), batch=st.integers(1, 3),
       noise_std=st.sampled_from([0.0, 0.05, 0.5]), steps=st.integers(1, 3),
       predictor=st.sampled_from(["reverse_diffusion", "ancestral"]), denoise=st.booleans())
def test_valid_inverse_calls_return_finite_draws_of_the_shape(method, batch, noise_std, steps, predictor,
                                                              denoise):
    options = {"particles": 3} if method == "smc" else {}
    y = torch.randn(batch, 1, generator=torch.Generator().manual_seed(0))
    x, nfe = solve_inverse(Counting(VP), VP, y, A1, noise_std, steps, method=method, predictor=predictor,
                           denoise=denoise, generator=torch.Generator().manual_seed(1), **options)
    assert x.shape == (batch, 2) and bool(torch.isfinite(x).all()) and nfe == steps + denoise


@settings(PROFILE, max_examples=15)
@given(method=st.sampled_from(["replace", "repaint", "smc"]), batch=st.integers(1, 2),
       steps=st.integers(1, 3), snr=st.floats(0.0, 0.2), denoise=st.booleans())
def test_valid_inpaint_calls_keep_the_observed_entries(method, batch, steps, snr, denoise):
    options = {"particles": 2} if method == "smc" else {"jump": 1} if method == "repaint" else {}
    y = torch.rand(batch, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    mask = (torch.rand(batch, 1, 4, 4, generator=torch.Generator().manual_seed(1)) < 0.5).float()
    x, nfe = inpaint(Counting(VP), VP, y, mask, steps, method=method, snr=snr, denoise=denoise,
                     generator=torch.Generator().manual_seed(2), **options)
    assert x.shape == y.shape and bool(torch.isfinite(x).all()) and nfe >= 1
    assert torch.equal(x[mask == 1], y[mask == 1])
