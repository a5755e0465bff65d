"""Command line: ``python -m scoresde <stage> ...`` runs one pipeline stage.

Every stage takes all of its input and output paths as arguments, and its parameters from
``--params FILE`` (e.g. params.yaml), ``--params-json JSON`` (what the Snakemake rules pass)
and ``--set group.key=value`` overrides, merged in that order over the schema defaults and
validated. Problems with the input (a bad parameter, a missing dataset root, a corrupt
checkpoint, an unknown sampler) end with one ``error: ...`` line on stderr and exit code 2;
set ``SCORESDE_TRACEBACK=1`` to see the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from scoresde.stages.cases import ADAPTIVE, SAMPLERS
from scoresde.stages.config import SDE_NAMES, ConfigError, job_params, resolve

EXIT_INPUT_ERROR = 2
EXIT_PREEMPTED = 128 + 15  # SIGTERM, as a shell reports a process it terminated


def _common(p: argparse.ArgumentParser, device: bool = True) -> None:
    g = p.add_argument_group("parameters")
    g.add_argument("--params", metavar="FILE", help="parameter file (YAML), e.g. params.yaml")
    g.add_argument("--params-json", metavar="JSON", help="parameters as a JSON object "
                   "(merged over --params; the Snakemake rules pass this)")
    g.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="sets",
                   help="override one parameter, e.g. --set train.n_iters=100 (repeatable)")
    g.add_argument("--threads", type=int, metavar="N",
                   help="torch threads (default: the stage's resources.threads)")
    if device:
        g.add_argument("--device", metavar="auto|cpu|cuda",
                       help="compute device (default: the stage's device parameter)")


def _path(p, flag: str, help: str, nargs=None, required: bool = True) -> None:
    p.add_argument(flag, required=required, nargs=nargs, metavar="PATH", help=help)


def _sde_arg(p, required: bool) -> None:
    p.add_argument("--sde", required=required, metavar="|".join(SDE_NAMES),
                   help="the SDE" + ("" if required else " the checkpoint must belong to"))


def _seed_index_arg(p) -> None:
    p.add_argument("--seed-index", type=int, default=0, metavar="K",
                   help="draw seed K of report.seeds: samples K*n .. K*n+n-1 of the "
                        "sample.seed streams (n = sample.n_samples; default 0)")


def _params(args) -> dict:
    return resolve(args.params, args.params_json, args.sets)


def _check_sde(name: str | None) -> str | None:
    if name is not None and name not in SDE_NAMES:
        raise ValueError(f"unknown SDE {name!r}; choose one of {', '.join(SDE_NAMES)}")
    return name


def _runtime(args, params: dict, group: str) -> dict:
    """device and threads: the command line's, else the parameter group's."""
    section = params[group]
    threads = args.threads if args.threads is not None else section["resources"]["threads"]
    device = getattr(args, "device", None) or section.get("device", "auto")
    return {"device_name": device, "threads": threads}


# --------------------------------------------------------------------------- stages


def cmd_prepare_data(args) -> None:
    from scoresde.stages import prepare_data

    data = {k: v for k, v in (("dataset", args.dataset), ("root", args.root)) if v}
    params = resolve(args.params, args.params_json, args.sets, overrides={"data": data})
    prepare_data.run(job_params(params, "prepare-data"), args.train_out, args.test_out,
                     args.reference_out, args.config_out)


def cmd_train_features(args) -> None:
    from scoresde.stages import fid

    params = _params(args)
    fid.train_features(job_params(params, "train-features"), args.data, args.test, args.out,
                       **_runtime(args, params, "eval"))


def cmd_train(args) -> None:
    from scoresde.stages import train

    sde = _check_sde(args.sde)
    params = _params(args)
    train.run(job_params(params, "train", sde), args.data, sde,
              args.out_dir, args.log_csv, args.config_out, **_runtime(args, params, "train"))


def cmd_select(args) -> None:
    from scoresde.stages import select

    params = _params(args)
    select.run(job_params(params, "select-checkpoint"), args.checkpoints, args.reference, args.extractor,
               args.best, args.table, args.config_out, expect_sde=_check_sde(args.sde),
               **_runtime(args, params, "select"))


def cmd_sample(args) -> None:
    from scoresde.stages import sample

    sde = _check_sde(args.sde)
    params = _params(args)
    sample.run(job_params(params, "sample", sde), args.checkpoint, args.sampler, args.steps,
               args.denoise, args.out, args.meta, expect_sde=sde, seed_index=args.seed_index,
               **_runtime(args, params, "sample"))


def cmd_sample_cases(args) -> None:
    from scoresde.stages import sample

    sde = _check_sde(args.sde)
    params = _params(args)
    sample.run_cases(job_params(params, "sample", sde), args.checkpoint, args.cases, args.out,
                     args.meta, expect_sde=sde, seed_index=args.seed_index,
                     **_runtime(args, params, "sample"))


def cmd_fid(args) -> None:
    from scoresde.stages import fid

    params = _params(args)
    fid.run(job_params(params, "fid"), args.samples, args.meta,
            args.reference, args.extractor, args.out, **_runtime(args, params, "eval"))


def cmd_likelihood(args) -> None:
    from scoresde.stages import likelihood

    params = _params(args)
    likelihood.run(job_params(params, "likelihood"), args.checkpoint, args.data, args.out,
                   expect_sde=_check_sde(args.sde), **_runtime(args, params, "eval"))


def cmd_report(args) -> None:
    from scoresde.stages import report

    benchmarks = []
    for path in map(Path, args.benchmarks):
        benchmarks += sorted(path.rglob("*.tsv")) if path.is_dir() else [path]
    report.run(_params(args), args.fid, args.nll, args.out_dir, args.checkpoints_dir,
               args.samples_dir, [str(p) for p in benchmarks], args.controllable)


def cmd_validate_config(args) -> None:
    from scoresde.stages.config import load_file, merge, set_dotted, validate

    cfg: dict = {}
    for path in args.files:
        cfg = merge(cfg, load_file(path))
    for assignment in args.sets:
        cfg = set_dotted(cfg, assignment)
    resolved = validate(cfg, f"params ({', '.join(args.files) or 'defaults'})")
    if args.print:
        sys.stdout.write(yaml.safe_dump(resolved, sort_keys=False))
    else:
        print(f"ok: {', '.join(args.files) or 'the schema defaults'} "
              "valid against the parameter schema")


def cmd_import_official(args) -> None:
    import json

    from scoresde import official
    from scoresde.stages.common import log

    if (args.preset is None) == (args.model_config is None):
        raise ValueError("give --preset NAME, or --model-config FILE with --sde (not both)")
    if args.model_config is not None and args.image_size is None:
        raise ValueError("--model-config needs --image-size N, the image size the checkpoint "
                         "was trained at (the official config.data.image_size, e.g. 32)")
    if args.preset is not None and args.image_size not in (
            None, official.preset(args.preset)["image_size"]):
        raise ValueError(f"--image-size {args.image_size}: preset {args.preset} fixes the image "
                         f"size at {official.preset(args.preset)['image_size']}; drop "
                         "--image-size, or use --model-config")
    config = None
    if args.model_config is not None:
        try:
            config = json.loads(Path(args.model_config).read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"--model-config {args.model_config} is not a readable JSON "
                             f"object of the official config.model ({err})") from None
    centered = None if args.centered is None else args.centered == "true"
    cfg = official.import_official(
        args.checkpoint, args.out, preset_name=args.preset, config=config,
        sde=_check_sde(args.sde), dataset=args.dataset, image_size=args.image_size,
        num_channels=args.num_channels, centered=centered, levels=args.levels)
    log(f"imported {args.checkpoint} (step {cfg['step']}, {cfg['sde']['name']}, "
        f"{cfg['model']['num_res_blocks']} blocks/resolution) -> {args.out}")


# --------------------------------------------------------------------------- parser


def _add_stage_parsers(sub) -> None:
    p = sub.add_parser("prepare-data", help="processed train/test splits and FID reference set")
    _path(p, "--train-out", "output: processed training split (train.pt)")
    _path(p, "--test-out", "output: processed test split (test.pt)")
    _path(p, "--reference-out", "output: FID reference images (reference.pt)")
    _path(p, "--config-out", "output: resolved parameters (config.json)", required=False)
    p.add_argument("--dataset", help="shortcut for --set data.dataset=NAME")
    p.add_argument("--root", metavar="DIR", help="shortcut for --set data.root=DIR")
    _common(p, device=False)
    p.set_defaults(func=cmd_prepare_data)

    p = sub.add_parser("train-features", help="train the classifier used as FID features")
    _path(p, "--data", "input: processed training split")
    _path(p, "--test", "input: processed test split (reports accuracy)", required=False)
    _path(p, "--out", "output: classifier checkpoint")
    _common(p)
    p.set_defaults(func=cmd_train_features)

    p = sub.add_parser("train", help="train a score model for one SDE (DSM, EMA, snapshots)")
    _path(p, "--data", "input: processed training split")
    _sde_arg(p, required=True)
    _path(p, "--out-dir", "output directory for step_{k}.pt snapshots")
    _path(p, "--log-csv", "output: training-loss log (step, loss, lr, seconds)")
    _path(p, "--config-out", "output: resolved parameters (config.json)")
    _common(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("select-checkpoint", help="quick FID of each snapshot; copy the best")
    _path(p, "--checkpoints", "input: snapshots to compare", nargs="+")
    _path(p, "--reference", "input: FID reference set")
    _path(p, "--extractor", "input: FID feature classifier checkpoint")
    _path(p, "--best", "output: copy of the best snapshot (best.pt)")
    _path(p, "--table", "output: selection.csv (step, fid, ...)")
    _path(p, "--config-out", "output: resolved parameters and the choice (selection.json)")
    _sde_arg(p, required=False)
    _common(p)
    p.set_defaults(func=cmd_select)

    p = sub.add_parser("sample", help="draw one sampler case from a checkpoint")
    _path(p, "--checkpoint", "input: score-model checkpoint (best.pt)")
    p.add_argument("--sampler", required=True,
                   help=f"one of {', '.join(SAMPLERS)} (ode-* / sde-*: the methods of "
                        "scoresde.sampling.METHODS; docs/samplers.md)")
    p.add_argument("--steps", required=True,
                   help=f"number of steps, or 'adaptive' ({', '.join(ADAPTIVE)})")
    p.add_argument("--denoise", required=True, nargs="+", metavar="tweedie|none",
                   help="tweedie and/or none (several: one trajectory serves them all)")
    _path(p, "--out", "output: samples ({case}.pt, uint8 images), one per --denoise", nargs="+")
    _path(p, "--meta", "output: sidecar JSON (nfe, seconds, case fields), one per --denoise",
          nargs="+")
    _seed_index_arg(p)
    _sde_arg(p, required=False)
    _common(p)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("sample-cases", help="draw several cases in one process (the "
                       "Snakemake sample rule: one job per SDE)")
    _path(p, "--checkpoint", "input: score-model checkpoint (best.pt)")
    p.add_argument("--cases", required=True, nargs="+", metavar="CASE",
                   help="cases {sampler}_{steps}_{denoise}, e.g. pc_10_tweedie "
                        "ode-rk45_adaptive_none; the denoise settings of one (sampler, steps) "
                        "share a trajectory")
    _path(p, "--out", "output: samples ({case}.pt), one per case, in order", nargs="+")
    _path(p, "--meta", "output: sidecar JSONs, one per case, in order", nargs="+")
    _seed_index_arg(p)
    _sde_arg(p, required=False)
    _common(p)
    p.set_defaults(func=cmd_sample_cases)

    p = sub.add_parser("fid", help="FID/KID of sample files (torch-fidelity)")
    _path(p, "--samples", "input: sample files ({case}.pt)", nargs="+")
    _path(p, "--meta", "input: their sidecar JSONs, in the same order", nargs="+")
    _path(p, "--reference", "input: FID reference set")
    _path(p, "--extractor", "input: FID feature classifier checkpoint")
    _path(p, "--out", "output: one metrics JSON per sample file, in the same order", nargs="+")
    _common(p)
    p.set_defaults(func=cmd_fid)

    p = sub.add_parser("likelihood", help="test-set bits/dim by the probability-flow ODE")
    _path(p, "--checkpoint", "input: score-model checkpoint (best.pt)")
    _path(p, "--data", "input: processed test split")
    _path(p, "--out", "output: nll.json")
    _sde_arg(p, required=False)
    _common(p)
    p.set_defaults(func=cmd_likelihood)

    p = sub.add_parser("report", help="tables, figures and report.html from the metrics")
    _path(p, "--fid", "input: FID metrics JSONs", nargs="*")
    _path(p, "--nll", "input: likelihood JSONs", nargs="*")
    _path(p, "--out-dir", "output directory (metrics.csv, likelihood.csv, report.html, ...)")
    _path(p, "--checkpoints-dir", "root of checkpoints/ (loss and selection figures)",
          required=False)
    _path(p, "--samples-dir", "root of samples/ (sample grids)", required=False)
    _path(p, "--benchmarks", "Snakemake benchmark TSVs or folders of them (stage times)",
          nargs="*",
          required=False)
    _path(p, "--controllable", "input: controllable-generation metrics JSONs", nargs="*",
          required=False)
    _common(p, device=False)
    p.set_defaults(func=cmd_report, benchmarks=[], controllable=[])

    p = sub.add_parser("import-official", help="convert a released score_sde_pytorch "
                       "checkpoint (DDPM++ / NCSN++) to best.pt for the sample/fid/likelihood "
                       "stages")
    _path(p, "--checkpoint", "input: official checkpoint_*.pth")
    _path(p, "--out", "output: scoresde checkpoint, e.g. checkpoints/cifar10/vp/best.pt")
    p.add_argument("--preset", metavar="SDE/CONFIG", help="the released config it was trained "
                   "with, by its official configs/ path: {ve/cifar10_ncsnpp, "
                   "vp/cifar10_ddpmpp, subvp/cifar10_ddpmpp}[_deep]_continuous")
    _path(p, "--model-config", "instead of --preset: the official config.model as JSON",
          required=False)
    _sde_arg(p, required=False)
    p.add_argument("--dataset", default="cifar10", help="dataset name (with --model-config)")
    p.add_argument("--image-size", type=int, help="with --model-config (required): the "
                   "official config.data.image_size, e.g. 32")
    p.add_argument("--num-channels", type=int, default=3, help="with --model-config")
    p.add_argument("--levels", type=int, default=256, help="grey levels of the data (>= 2; "
                   "256 for 8-bit images)")
    p.add_argument("--centered", choices=["true", "false"],
                   help="official config.data.centered (default: false for VE, true otherwise)")
    p.set_defaults(func=cmd_import_official)

    p = sub.add_parser("validate-config", help="check parameter files against the schema")
    p.add_argument("files", nargs="*", metavar="FILE",
                   help="parameter files merged in order (as snakemake --configfile)")
    p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="sets",
                   help="override one parameter (repeatable)")
    p.add_argument("--print", action="store_true", help="print the resolved parameters")
    p.set_defaults(func=cmd_validate_config)


# --------------------------------------------------------------------------- controllable


def cmd_train_classifier(args) -> None:
    from scoresde.stages import controllable

    sde = _check_sde(args.sde)
    params = _params(args)
    controllable.train_classifier(job_params(params, "train-classifier", sde), args.data,
                                  args.test, sde, args.out,
                                  **_runtime(args, params, "controllable"))


def cmd_conditional_sample(args) -> None:
    from scoresde.stages import controllable

    sde = _check_sde(args.sde)
    params = _params(args)
    controllable.conditional_sample(job_params(params, "conditional-sample", sde),
                                    args.checkpoint, args.classifier, args.data, args.extractor,
                                    args.out, args.metrics, expect_sde=sde,
                                    **_runtime(args, params, "controllable"))


def cmd_inpaint(args) -> None:
    from scoresde.stages import controllable

    sde = _check_sde(args.sde)
    params = _params(args)
    controllable.inpaint(job_params(params, "inpaint", sde), args.checkpoint, args.data,
                         args.extractor, args.reference, args.masks, args.methods, args.out,
                         args.inputs_out, args.metrics, expect_sde=sde,
                         **_runtime(args, params, "controllable"))


def cmd_colorize(args) -> None:
    from scoresde.stages import controllable

    sde = _check_sde(args.sde)
    params = _params(args)
    controllable.colorize(job_params(params, "colorize", sde), args.checkpoint, args.data,
                          args.extractor, args.reference, args.methods, args.out,
                          args.inputs_out, args.metrics, expect_sde=sde,
                          **_runtime(args, params, "controllable"))


def cmd_inverse(args) -> None:
    from scoresde.stages import inverse

    sde = _check_sde(args.sde)
    params = _params(args)
    inverse.inverse(job_params(params, "inverse", sde), args.checkpoint, args.data, args.extractor,
                    args.reference, args.task, args.method, args.out, args.metrics, expect_sde=sde,
                    **_runtime(args, params, "controllable"))


def _add_controllable_parsers(sub) -> None:
    p = sub.add_parser("train-classifier", help="noise-conditional classifier p_t(y | x(t))")
    _path(p, "--data", "input: processed training split")
    _path(p, "--test", "input: processed test split (reports accuracy)", required=False)
    _sde_arg(p, required=True)
    _path(p, "--out", "output: classifier checkpoint")
    _common(p)
    p.set_defaults(func=cmd_train_classifier)

    p = sub.add_parser("conditional-sample", help="class-conditional samples, accuracy, FID")
    _path(p, "--checkpoint", "input: score-model checkpoint (best.pt)")
    _path(p, "--classifier", "input: classifier checkpoint of the same dataset and SDE")
    _path(p, "--data", "input: processed training split (per-class FID reference)")
    _path(p, "--extractor", "input: FID feature classifier checkpoint")
    _path(p, "--out", "output: samples (images, labels)")
    _path(p, "--metrics", "output: metrics JSON (one row per class)")
    _sde_arg(p, required=False)
    _common(p)
    p.set_defaults(func=cmd_conditional_sample)

    p = sub.add_parser("inpaint", help="complete masked test images; PSNR, SSIM, FID")
    _completion_args(p, "completions, one per (mask, method), masks outermost",
                     "masked inputs", "(mask, method)", masks=True)
    p.set_defaults(func=cmd_inpaint)

    p = sub.add_parser("colorize", help="colour grey RGB test images (App. I.3); PSNR, SSIM, FID")
    _completion_args(p, "coloured images, one per method", "grey inputs", "method")
    p.set_defaults(func=cmd_colorize)

    p = sub.add_parser("inverse", help="a linear inverse problem on test images (superres, deblur, "
                                       "noisy-projection); PSNR, SSIM, residual, FID")
    _path(p, "--checkpoint", "input: score-model checkpoint (best.pt)")
    _path(p, "--data", "input: processed test split (ground truth)")
    _path(p, "--extractor", "input: FID feature classifier checkpoint")
    _path(p, "--reference", "input: FID reference set")
    p.add_argument("--task", required=True, choices=("superres", "deblur", "noisy-projection"))
    p.add_argument("--method", required=True, choices=("dps", "pigdm", "smc"))
    _path(p, "--out", "output: reconstructions, ground truth and the measurement's view")
    _path(p, "--metrics", "output: metrics JSON (one row)")
    _sde_arg(p, required=False)
    _common(p)
    p.set_defaults(func=cmd_inverse)


def _completion_args(p, outs: str, inputs: str, row: str, masks: bool = False) -> None:
    """The arguments inpaint and colorize share."""
    _path(p, "--checkpoint", "input: score-model checkpoint (best.pt)")
    _path(p, "--data", "input: processed test split (ground truth)")
    _path(p, "--extractor", "input: FID feature classifier checkpoint")
    _path(p, "--reference", "input: FID reference set")
    if masks:
        p.add_argument("--masks", nargs="+", required=True, help="centre, left and/or random")
    p.add_argument("--methods", nargs="+", required=True, help="replace, repaint and/or smc")
    _path(p, "--out", f"output: {outs}", nargs="+")
    _path(p, "--inputs-out", f"output: ground truth and {inputs} (for the figures)")
    _path(p, "--metrics", f"output: metrics JSON (one row per {row})")
    _sde_arg(p, required=False)
    _common(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m scoresde",
        description="Score-SDE pipeline stages (Song et al., ICLR 2021). Each stage is one "
                    "Snakemake rule; all paths are arguments.",
        epilog="Stage order: prepare-data -> train-features, train -> select-checkpoint -> "
               "sample -> fid; likelihood; report. Run `python -m scoresde STAGE --help`.")
    sub = parser.add_subparsers(dest="stage", metavar="STAGE", required=True)
    _add_stage_parsers(sub)
    _add_controllable_parsers(sub)
    return parser


def _known_errors() -> tuple[type[BaseException], ...]:
    from scoresde.checkpoint import CheckpointError
    from scoresde.data import DataError

    return ConfigError, DataError, CheckpointError, ValueError, FloatingPointError, OSError


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run one stage; returns the exit code (0 ok, 2 bad input, 130 interrupted, 143 stopped
    by SIGTERM after saving a resumable state)."""
    from scoresde.stages.common import Preempted

    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except Preempted as stop:
        print(f"stopped: {_one_line(stop)}", file=sys.stderr)
        return EXIT_PREEMPTED
    except _known_errors() as err:
        if os.environ.get("SCORESDE_TRACEBACK"):
            raise
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
