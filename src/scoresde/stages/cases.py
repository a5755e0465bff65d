"""Sampler cases of the sweep: names, file-name patterns and the call into the library.

A case is ``{sampler}_{steps}_{denoise}``, e.g. ``pc_100_tweedie``, ``ode-rk45_adaptive_none`` or
``sde-edm_5_tweedie``. The samplers:

========== =========================================================== =========
sampler    meaning                                                     steps
========== =========================================================== =========
pc         reverse-diffusion predictor + Langevin corrector (Alg. 1)   integer
p          reverse-diffusion predictor only (eq. 46)                   integer
c          Langevin corrector only                                     integer
em         Euler-Maruyama predictor only                               integer
ancestral  ancestral-sampling predictor only (eq. 47)                  integer
ode-{m}    probability-flow ODE method m of ``sampling.ODE_METHODS``   integer (``ode-rk45``: adaptive)
sde-{m}    fast reverse-SDE method m of ``sampling.SDE_METHODS``       integer
========== =========================================================== =========

``ode-`` and ``sde-`` names come from the one method table ``scoresde.sampling.METHODS`` (default
schedule and NFE per step there: ``sde-edm_5`` is 10 NFE, ``ode-dpm-solver-3_3`` 9).
The sweep is samplers x steps x denoise, plus ``extra`` cases ``{sampler}_{steps}`` (each with
every denoise setting): solvers with several NFE per step run at the steps that give a target
NFE, and a long reference such as ``pc_1000``.

``denoise`` is ``tweedie`` (the last step's mean, then a final Tweedie step) or ``none``.
"""

from __future__ import annotations

from collections.abc import Sequence

from scoresde.sampling import METHODS

PC_SAMPLERS: dict[str, tuple[str, str]] = {
    "pc": ("reverse_diffusion", "langevin"),
    "p": ("reverse_diffusion", "none"),
    "c": ("none", "langevin"),
    "em": ("euler_maruyama", "none"),
    "ancestral": ("ancestral", "none"),
}
# sampler -> (predictor or ODE / SDE method, corrector); corrector None marks a method of METHODS.
SAMPLERS: dict[str, tuple[str, str | None]] = {
    **PC_SAMPLERS, **{f"{m.kind}-{name}": (name, None) for name, m in METHODS.items()}}
ADAPTIVE = tuple(f"{m.kind}-{name}" for name, m in METHODS.items() if m.nfe_per_step is None)
DENOISE = ("tweedie", "none")


def check_sampler(sampler: str) -> tuple[str, str | None]:
    """(predictor or ODE method, corrector) of a sampler name; ValueError naming the choices."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    return SAMPLERS[sampler]


def parse_steps(sampler: str, steps: str | int | None) -> int | None:
    """Step count of a case: None for adaptive samplers, a positive integer otherwise."""
    check_sampler(sampler)
    if sampler in ADAPTIVE:
        if steps not in (None, "adaptive"):
            raise ValueError(f"sampler {sampler} chooses its own steps; use steps 'adaptive', "
                             f"not {steps!r}")
        return None
    try:
        value = int(steps)
    except (TypeError, ValueError):
        value = 0
    if value < 1:
        raise ValueError(f"sampler {sampler} needs a positive integer step count, got {steps!r}")
    return value


def parse_denoise(denoise: str) -> bool:
    if denoise not in DENOISE:
        raise ValueError(f"unknown denoise {denoise!r}; choose one of {', '.join(DENOISE)}")
    return denoise == "tweedie"


def case_name(sampler: str, steps: int | str | None, denoise: str) -> str:
    steps = parse_steps(sampler, steps)
    parse_denoise(denoise)
    return f"{sampler}_{'adaptive' if steps is None else steps}_{denoise}"


def parse_extra(case: str) -> tuple[str, int | None]:
    """(sampler, steps) of an extra case ``{sampler}_{steps}``, e.g. ``pc_1000``."""
    sampler, sep, steps = str(case).rpartition("_")
    if not sep:
        raise ValueError(f"extra case {case!r} is not '{{sampler}}_{{steps}}' (e.g. pc_1000, "
                         "ode-dpmpp-2m_10)")
    return sampler, parse_steps(sampler, steps)


def sweep(samplers: Sequence[str], steps: Sequence[int], denoise: Sequence[str],
          extra: Sequence[str] = ()) -> list[str]:
    """All case names of the sweep (samplers x steps x denoise, then the ``extra`` cases);
    adaptive samplers appear once per denoise setting; no name twice."""
    names = []
    for sampler in samplers:
        counts = [None] if sampler in ADAPTIVE else steps
        names += [case_name(sampler, k, d) for k in counts for d in denoise]
    for case in extra:
        sampler, k = parse_extra(case)
        names += [case_name(sampler, k, d) for d in denoise]
    return list(dict.fromkeys(names))


def wildcard_constraints() -> dict[str, str]:
    """Exact Snakemake wildcard regexes for ``{sampler}_{steps}_{denoise}``.

    The look-aheads tie the step field to the sampler: integers for fixed-step samplers,
    ``adaptive`` for RK45, so no file name outside the sweep's grammar matches a rule.
    """
    fixed = "|".join(s for s in SAMPLERS if s not in ADAPTIVE)
    adaptive = "|".join(ADAPTIVE)
    return {
        "sampler": f"(?:{fixed})(?=_[1-9][0-9]*_)|(?:{adaptive})(?=_adaptive_)",
        "steps": "[1-9][0-9]*|adaptive",
        "denoise": "|".join(DENOISE),
    }


def sampler_options(sample: dict, sde: str, sampler: str) -> dict:
    """The options of an ``sde-`` sampler for one SDE from the ``sample`` parameters
    (``sde_options.{sde}.{method}``, its grid ``schedule`` included; a null value leaves the
    library default); {} otherwise."""
    method, corrector = check_sampler(sampler)
    if corrector is not None or METHODS[method].kind != "sde":
        return {}
    given = sample.get("sde_options", {}).get(sde, {}).get(method, {})
    return {k: v for k, v in given.items() if v is not None}


def describe(sampler: str, steps: int | None, denoise: bool) -> dict:
    """The case fields recorded in every sample / FID JSON."""
    predictor, corrector = check_sampler(sampler)
    return {"sampler": sampler, "predictor": predictor, "corrector": corrector or "none",
            "steps": steps, "denoise": denoise}


def run_sampler(score_fn, sde, shape, sampler: str, steps: int | None,
                denoise: Sequence[bool], *, snr: float, corrector_steps: int = 1,
                eps: float | None = None, rtol: float = 1e-5, atol: float = 1e-5,
                sigma_min: float | None = None, options: dict | None = None,
                schedule: str | None = None, generator=None, device=None) -> dict[bool, tuple]:
    """Draw samples (model space) with one case's sampler: ``{denoise: (samples, nfe)}`` for
    each setting in `denoise`, all from one trajectory (Tweedie on / off share every step;
    Tweedie maps the last step's mean). ``options``: the ``sde-`` method's own options;
    ``sigma_min``: where ``ode-`` / ``sde-`` grids end (None: the library's default);
    ``schedule``: their grid (None: the method's default)."""
    from scoresde.sampling import finish, pc_trajectory, trajectory

    method, corrector = check_sampler(sampler)
    if corrector is not None:
        x, x_mean, t_end, nfe = pc_trajectory(score_fn, sde, shape, steps, method, corrector, snr,
                                              corrector_steps, eps, generator, device)
    else:
        extra = {"rtol": rtol, "atol": atol} if METHODS[method].nfe_per_step is None else {}
        options = dict(options or {})
        schedule = options.pop("schedule", schedule)
        x, x_mean, t_end, nfe = trajectory(score_fn, sde, shape, method, steps, schedule, eps=eps,
                                           sigma_min=sigma_min, generator=generator, device=device,
                                           **extra, **options)
    what = f"{sampler} sampling"
    out = {}
    for d in denoise:
        sample, n = finish(score_fn, sde, x, x_mean, t_end, d, what)
        out[d] = (sample, nfe + n)
    return out


# the fields that identify a case, stored in its sample file as well as its sidecar: the fid stage
# refuses a sample file paired with another case's sidecar
CASE_KEYS = ("dataset", "sde", "sampler", "steps", "denoise", "seed_index")
