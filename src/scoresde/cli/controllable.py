"""The controllable-generation commands (train-classifier, conditional-sample, inpaint,
colorize, inverse) and their argument parsers."""

from __future__ import annotations

from scoresde.stages.config import job_params

from .common import add_common, add_path, add_sde, check_sde, params_of, runtime


def cmd_train_classifier(args) -> None:
    from scoresde.stages import controllable

    sde = check_sde(args.sde)
    params = params_of(args)
    controllable.train_classifier(job_params(params, "train-classifier", sde), args.data,
                                  args.test, sde, args.out,
                                  **runtime(args, params, "controllable"))


def cmd_conditional_sample(args) -> None:
    from scoresde.stages import guidance

    sde = check_sde(args.sde)
    params = params_of(args)
    guidance.conditional_sample(job_params(params, "conditional-sample", sde), args.checkpoint,
                                args.classifier, args.free, args.data, args.test, args.extractor,
                                args.out, args.metrics, expect_sde=sde,
                                **runtime(args, params, "controllable"))


def cmd_inpaint(args) -> None:
    from scoresde.stages import controllable

    sde = check_sde(args.sde)
    params = params_of(args)
    controllable.inpaint(job_params(params, "inpaint", sde), args.checkpoint, args.data,
                         args.extractor, args.reference, args.masks, args.methods, args.out,
                         args.inputs_out, args.metrics, expect_sde=sde,
                         **runtime(args, params, "controllable"))


def cmd_colorize(args) -> None:
    from scoresde.stages import controllable

    sde = check_sde(args.sde)
    params = params_of(args)
    controllable.colorize(job_params(params, "colorize", sde), args.checkpoint, args.data,
                          args.extractor, args.reference, args.methods, args.out,
                          args.inputs_out, args.metrics, expect_sde=sde,
                          **runtime(args, params, "controllable"))


def cmd_inverse(args) -> None:
    from scoresde.stages import inverse

    sde = check_sde(args.sde)
    params = params_of(args)
    inverse.inverse(job_params(params, "inverse", sde), args.checkpoint, args.data, args.extractor,
                    args.reference, args.tasks, args.methods, args.out, args.metrics,
                    expect_sde=sde, **runtime(args, params, "controllable"))


def add_controllable_parsers(sub) -> None:
    p = sub.add_parser("train-classifier", help="noise-conditional classifier p_t(y | x(t))")
    add_path(p, "--data", "input: processed training split")
    add_path(p, "--test", "input: processed test split (reports accuracy)", required=False)
    add_sde(p, required=True)
    add_path(p, "--out", "output: classifier checkpoint")
    add_common(p)
    p.set_defaults(func=cmd_train_classifier)

    p = sub.add_parser("conditional-sample", help="class-conditional samples by classifier and "
                       "classifier-free guidance: strengths swept and chosen, accuracy, FID")
    add_path(p, "--checkpoint", "input: score-model checkpoint (best.pt)")
    add_path(p, "--classifier", "input: noise-conditional classifier of the same dataset and SDE "
             "(guidance 'classifier')", required=False)
    add_path(p, "--free", "input: class-conditional network of `train --class-conditional` "
             "(guidance 'free')", required=False)
    add_path(p, "--data", "input: processed training split (per-class FID reference)")
    add_path(p, "--test", "input: processed test split (held-out images the strength is chosen on)")
    add_path(p, "--extractor", "input: FID feature classifier checkpoint")
    add_path(p, "--out", "output: samples (images, labels)")
    add_path(p, "--metrics", "output: metrics JSON (one row per class)")
    add_sde(p, required=False)
    add_common(p)
    p.set_defaults(func=cmd_conditional_sample)

    p = sub.add_parser("inpaint", help="complete masked test images; PSNR, SSIM, FID")
    _completion_args(p, "completions, one per (mask, method), masks outermost",
                     "masked inputs", "(mask, method)", masks=True)
    p.set_defaults(func=cmd_inpaint)

    p = sub.add_parser("colorize", help="colour grey RGB test images (App. I.3); PSNR, SSIM, FID")
    _completion_args(p, "coloured images, one per method", "grey inputs", "method")
    p.set_defaults(func=cmd_colorize)

    p = sub.add_parser("inverse", help="linear inverse problems on test images (superres, deblur, "
                                       "noisy-projection); PSNR, SSIM, residual, FID")
    _test_image_inputs(p)
    p.add_argument("--tasks", nargs="+", required=True,
                   help="superres, deblur and/or noisy-projection")
    p.add_argument("--methods", nargs="+", required=True, help="dps, pigdm and/or smc")
    add_path(p, "--out", "output: reconstructions, ground truth and the measurement's view, one "
             "per (task, method), tasks outermost", nargs="+")
    add_path(p, "--metrics", "output: metrics JSON, one per (task, method) in --out's order",
             nargs="+")
    add_sde(p, required=False)
    add_common(p)
    p.set_defaults(func=cmd_inverse)


def _test_image_inputs(p) -> None:
    """The inputs of the stages that reconstruct test images (inpaint, colorize, inverse)."""
    add_path(p, "--checkpoint", "input: score-model checkpoint (best.pt)")
    add_path(p, "--data", "input: processed test split (ground truth)")
    add_path(p, "--extractor", "input: FID feature classifier checkpoint")
    add_path(p, "--reference", "input: FID reference set")


def _completion_args(p, outs: str, inputs: str, row: str, masks: bool = False) -> None:
    """The arguments inpaint and colorize share."""
    _test_image_inputs(p)
    if masks:
        p.add_argument("--masks", nargs="+", required=True, help="centre, left and/or random")
    p.add_argument("--methods", nargs="+", required=True, help="replace, repaint and/or smc")
    add_path(p, "--out", f"output: {outs}", nargs="+")
    add_path(p, "--inputs-out", f"output: ground truth and {inputs} (for the figures)")
    add_path(p, "--metrics", f"output: metrics JSON (one row per {row})")
    add_sde(p, required=False)
    add_common(p)
