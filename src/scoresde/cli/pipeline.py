"""The pipeline's stage commands (prepare-data .. report, validate-config, import-official)
and their argument parsers."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from scoresde.stages.cases import ADAPTIVE, SAMPLERS
from scoresde.stages.config import job_params, resolve

from .common import add_common, add_path, add_sde, add_seed_index, check_sde, params_of, runtime


def cmd_prepare_data(args) -> None:
    from scoresde.stages import prepare_data

    data = {k: v for k, v in (("dataset", args.dataset), ("root", args.root)) if v}
    params = resolve(args.params, args.params_json, args.sets, overrides={"data": data})
    prepare_data.run(job_params(params, "prepare-data"), args.train_out, args.test_out,
                     args.reference_out, args.config_out)


def cmd_train_features(args) -> None:
    from scoresde.stages import fid

    params = params_of(args)
    fid.train_features(job_params(params, "train-features"), args.data, args.test, args.out,
                       **runtime(args, params, "eval"))


def cmd_train(args) -> None:
    from scoresde.stages import train

    sde = check_sde(args.sde)
    params = params_of(args)
    if args.class_conditional:
        from scoresde.stages.train.loop import class_conditional_params

        job = class_conditional_params(job_params(params, "train-conditional", sde))
    else:
        job = job_params(params, "train", sde)
    train.run(job, args.data, sde, args.out_dir, args.log_csv, args.config_out,
              **runtime(args, params, "train"))


def cmd_select(args) -> None:
    from scoresde.stages import select

    params = params_of(args)
    select.run(job_params(params, "select-checkpoint"), args.checkpoints, args.reference, args.extractor,
               args.best, args.table, args.config_out, expect_sde=check_sde(args.sde),
               **runtime(args, params, "select"))


def cmd_sample(args) -> None:
    from scoresde.stages import sample

    sde = check_sde(args.sde)
    params = params_of(args)
    sample.run(job_params(params, "sample", sde), args.checkpoint, args.sampler, args.steps,
               args.denoise, args.out, args.meta, expect_sde=sde, seed_index=args.seed_index,
               **runtime(args, params, "sample"))


def cmd_sample_cases(args) -> None:
    from scoresde.stages import sample

    sde = check_sde(args.sde)
    params = params_of(args)
    sample.run_cases(job_params(params, "sample", sde), args.checkpoint, args.cases, args.out,
                     args.meta, expect_sde=sde, seed_index=args.seed_index,
                     **runtime(args, params, "sample"))


def cmd_fid(args) -> None:
    from scoresde.stages import fid

    params = params_of(args)
    fid.run(job_params(params, "fid"), args.samples, args.meta, args.reference, args.extractor,
            args.out, args.train, args.test, **runtime(args, params, "eval"))


def cmd_check_metrics(args) -> None:
    from scoresde.stages import fid

    params = params_of(args)
    fid.check_metrics(job_params(params, "check-metrics"), args.train, args.test, args.reference,
                      args.extractor, args.out, **runtime(args, params, "eval"))


def cmd_likelihood(args) -> None:
    from scoresde.stages import likelihood

    params = params_of(args)
    likelihood.run(job_params(params, "likelihood"), args.checkpoint, args.data, args.out,
                   expect_sde=check_sde(args.sde), **runtime(args, params, "eval"))


def cmd_report(args) -> None:
    from scoresde.stages import report

    benchmarks = []
    for path in map(Path, args.benchmarks):
        benchmarks += sorted(path.rglob("*.tsv")) if path.is_dir() else [path]
    report.run(params_of(args), args.fid, args.nll, args.out_dir, args.checkpoints_dir,
               args.samples_dir, [str(p) for p in benchmarks], args.controllable, args.checks)


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
        sde=check_sde(args.sde), dataset=args.dataset, image_size=args.image_size,
        num_channels=args.num_channels, centered=centered, levels=args.levels)
    log(f"imported {args.checkpoint} (step {cfg['step']}, {cfg['sde']['name']}, "
        f"{cfg['model']['num_res_blocks']} blocks/resolution) -> {args.out}")


def add_stage_parsers(sub) -> None:
    p = sub.add_parser("prepare-data", help="processed train/test splits and FID reference set")
    add_path(p, "--train-out", "output: processed training split (train.pt)")
    add_path(p, "--test-out", "output: processed test split (test.pt)")
    add_path(p, "--reference-out", "output: FID reference images (reference.pt)")
    add_path(p, "--config-out", "output: resolved parameters (config.json)", required=False)
    p.add_argument("--dataset", help="shortcut for --set data.dataset=NAME")
    p.add_argument("--root", metavar="DIR", help="shortcut for --set data.root=DIR")
    add_common(p, device=False)
    p.set_defaults(func=cmd_prepare_data)

    p = sub.add_parser("train-features", help="train the classifier used as FID features")
    add_path(p, "--data", "input: processed training split")
    add_path(p, "--test", "input: processed test split (reports accuracy)", required=False)
    add_path(p, "--out", "output: classifier checkpoint")
    add_common(p)
    p.set_defaults(func=cmd_train_features)

    p = sub.add_parser("train", help="train a score model for one SDE (DSM, EMA, snapshots)")
    add_path(p, "--data", "input: processed training split")
    add_sde(p, required=True)
    add_path(p, "--out-dir", "output directory for step_{k}.pt snapshots")
    add_path(p, "--log-csv", "output: training-loss log (step, loss, lr, seconds)")
    add_path(p, "--config-out", "output: resolved parameters (config.json)")
    p.add_argument("--class-conditional", action="store_true",
                   help="train the class-conditional network of classifier-free guidance "
                        "(controllable.free: label dropout, steps, seed; one snapshot)")
    add_common(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("select-checkpoint", help="quick FID of each snapshot; copy the best")
    add_path(p, "--checkpoints", "input: snapshots to compare", nargs="+")
    add_path(p, "--reference", "input: FID reference set")
    add_path(p, "--extractor", "input: FID feature classifier checkpoint")
    add_path(p, "--best", "output: copy of the best snapshot (best.pt)")
    add_path(p, "--table", "output: selection.csv (step, fid, ...)")
    add_path(p, "--config-out", "output: resolved parameters and the choice (selection.json)")
    add_sde(p, required=False)
    add_common(p)
    p.set_defaults(func=cmd_select)

    p = sub.add_parser("sample", help="draw one sampler case from a checkpoint")
    add_path(p, "--checkpoint", "input: score-model checkpoint (best.pt)")
    p.add_argument("--sampler", required=True,
                   help=f"one of {', '.join(SAMPLERS)} (ode-* / sde-*: the methods of "
                        "scoresde.sampling.METHODS; docs/samplers.md)")
    p.add_argument("--steps", required=True,
                   help=f"number of steps, or 'adaptive' ({', '.join(ADAPTIVE)})")
    p.add_argument("--denoise", required=True, nargs="+", metavar="tweedie|none",
                   help="tweedie and/or none (several: one trajectory serves them all)")
    add_path(p, "--out", "output: samples ({case}.pt, uint8 images), one per --denoise", nargs="+")
    add_path(p, "--meta", "output: sidecar JSON (nfe, seconds, case fields), one per --denoise",
          nargs="+")
    add_seed_index(p)
    add_sde(p, required=False)
    add_common(p)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("sample-cases", help="draw several cases in one process (the "
                       "Snakemake sample rule: one job per SDE)")
    add_path(p, "--checkpoint", "input: score-model checkpoint (best.pt)")
    p.add_argument("--cases", required=True, nargs="+", metavar="CASE",
                   help="cases {sampler}_{steps}_{denoise}, e.g. pc_10_tweedie "
                        "ode-rk45_adaptive_none; the denoise settings of one (sampler, steps) "
                        "share a trajectory")
    add_path(p, "--out", "output: samples ({case}.pt), one per case, in order", nargs="+")
    add_path(p, "--meta", "output: sidecar JSONs, one per case, in order", nargs="+")
    add_seed_index(p)
    add_sde(p, required=False)
    add_common(p)
    p.set_defaults(func=cmd_sample_cases)

    p = sub.add_parser("fid", help="FID, KID, precision / recall, density / coverage and the "
                                   "memorised share of sample files")
    add_path(p, "--samples", "input: sample files ({case}.pt)", nargs="+")
    add_path(p, "--meta", "input: their sidecar JSONs, in the same order", nargs="+")
    add_path(p, "--reference", "input: FID reference set")
    add_path(p, "--extractor", "input: FID feature classifier checkpoint")
    add_path(p, "--train", "input: processed training split (the memorised share's copies)")
    add_path(p, "--test", "input: processed test split (held-out distances for the memorised share)")
    add_path(p, "--out", "output: one metrics JSON per sample file, in the same order", nargs="+")
    add_common(p)
    p.set_defaults(func=cmd_fid)

    p = sub.add_parser("check-metrics", help="what the metrics see: held-out images scored as "
                                             "they are and with known defects")
    add_path(p, "--train", "input: processed training split")
    add_path(p, "--test", "input: processed test split (the held-out images)")
    add_path(p, "--reference", "input: FID reference set")
    add_path(p, "--extractor", "input: feature-extractor checkpoint")
    add_path(p, "--out", "output: metric_checks.json")
    add_common(p)
    p.set_defaults(func=cmd_check_metrics)

    p = sub.add_parser("likelihood", help="test-set bits/dim by the probability-flow ODE")
    add_path(p, "--checkpoint", "input: score-model checkpoint (best.pt)")
    add_path(p, "--data", "input: processed test split")
    add_path(p, "--out", "output: nll.json")
    add_sde(p, required=False)
    add_common(p)
    p.set_defaults(func=cmd_likelihood)

    p = sub.add_parser("report", help="tables, figures and report.html from the metrics")
    add_path(p, "--fid", "input: FID metrics JSONs", nargs="*")
    add_path(p, "--nll", "input: likelihood JSONs", nargs="*")
    add_path(p, "--out-dir", "output directory (metrics.csv, likelihood.csv, report.html, ...)")
    add_path(p, "--checkpoints-dir", "root of checkpoints/ (loss and selection figures)",
          required=False)
    add_path(p, "--samples-dir", "root of samples/ (sample grids)", required=False)
    add_path(p, "--benchmarks", "Snakemake benchmark TSVs or folders of them (stage times)",
          nargs="*",
          required=False)
    add_path(p, "--controllable", "input: controllable-generation metrics JSONs", nargs="*",
          required=False)
    add_path(p, "--checks", "input: metric_checks.json (what the metrics see)", nargs="*",
             required=False)
    add_common(p, device=False)
    p.set_defaults(func=cmd_report, benchmarks=[], controllable=[], checks=[])

    p = sub.add_parser("import-official", help="convert a released score_sde_pytorch "
                       "checkpoint (DDPM++ / NCSN++) to best.pt for the sample/fid/likelihood "
                       "stages")
    add_path(p, "--checkpoint", "input: official checkpoint_*.pth")
    add_path(p, "--out", "output: scoresde checkpoint, e.g. checkpoints/cifar10/vp/best.pt")
    p.add_argument("--preset", metavar="SDE/CONFIG", help="the released config it was trained "
                   "with, by its official configs/ path: {ve/cifar10_ncsnpp, "
                   "vp/cifar10_ddpmpp, subvp/cifar10_ddpmpp}[_deep]_continuous")
    add_path(p, "--model-config", "instead of --preset: the official config.model as JSON",
          required=False)
    add_sde(p, required=False)
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
