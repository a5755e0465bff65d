# Controllable generation (paper section 5): noise-conditional classifier, class-conditional
# samples, inpainting and linear inverse problems per SDE of controllable.sdes (helpers in
# common.smk); everything goes under controllable/{dataset}/{sde}/ (one DVC out).
rule train_classifier:
    input:
        train="data/processed/{dataset}/train.pt",
        test="data/processed/{dataset}/test.pt",
    output:
        "controllable/{dataset}/{sde}/classifier.pt",
    log:
        log_file("train_classifier"),
    benchmark:
        benchmark_file("train_classifier")
    conda:
        ENV
    threads: res("controllable", "threads")
    resources:
        **job_resources("controllable"),
    params:
        cfg=stage_params("train-classifier", per_sde=True),
        device=CTRL["device"],
    shell:
        scoresde(
            "train-classifier",
            "--data {input.train} --test {input.test} --sde {wildcards.sde} --out {output}",
        )


# Classifier-free guidance's class-conditional score network (controllable.free): the train
# stage with label dropout, one snapshot at the end.
rule train_conditional:
    input:
        "data/processed/{dataset}/train.pt",
    output:
        checkpoint=f"controllable/{{dataset}}/{{sde}}/free/step_{FREE_ITERS}.pt",
        log_csv="controllable/{dataset}/{sde}/free/train_log.csv",
        config="controllable/{dataset}/{sde}/free/config.json",
    log:
        log_file("train_conditional"),
    benchmark:
        benchmark_file("train_conditional")
    conda:
        ENV
    threads: res("train", "threads")
    resources:
        **job_resources("train"),
    params:
        cfg=stage_params("train-conditional", per_sde=True),
        out_dir=lambda wildcards, output: os.path.dirname(output.log_csv),
        device=config["train"]["device"],
    shell:
        scoresde(
            "train",
            "--class-conditional --data {input} --sde {wildcards.sde} "
            "--out-dir {params.out_dir} --log-csv {output.log_csv} "
            "--config-out {output.config}",
        )


rule conditional_sample:
    input:
        unpack(guidance_inputs),
        checkpoint="checkpoints/{dataset}/{sde}/best.pt",
        train="data/processed/{dataset}/train.pt",
        test="data/processed/{dataset}/test.pt",
        extractor="checkpoints/{dataset}/fid_features.pt",
    output:
        samples="controllable/{dataset}/{sde}/conditional.pt",
        metrics="controllable/{dataset}/{sde}/conditional.json",
    log:
        log_file("conditional_sample"),
    benchmark:
        benchmark_file("conditional_sample")
    conda:
        ENV
    threads: res("controllable", "threads")
    resources:
        **job_resources("controllable"),
    params:
        cfg=stage_params("conditional-sample", per_sde=True),
        device=CTRL["device"],
        guides=guidance_args,
    shell:
        scoresde(
            "conditional-sample",
            "--checkpoint {input.checkpoint} {params.guides} "
            "--data {input.train} --test {input.test} --extractor {input.extractor} "
            "--sde {wildcards.sde} --out {output.samples} --metrics {output.metrics}",
        )


# One job per (dataset, SDE) writes every (mask, method): few jobs, one start-up.
rule inpaint:
    input:
        checkpoint="checkpoints/{dataset}/{sde}/best.pt",
        test="data/processed/{dataset}/test.pt",
        reference="data/processed/{dataset}/reference.pt",
        extractor="checkpoints/{dataset}/fid_features.pt",
    output:
        completions=expand(
            "controllable/{{dataset}}/{{sde}}/inpaint/{case}.pt", case=INPAINT_CASES
        ),
        inputs="controllable/{dataset}/{sde}/inpaint/inputs.pt",
        metrics="controllable/{dataset}/{sde}/inpaint.json",
    log:
        log_file("inpaint"),
    benchmark:
        benchmark_file("inpaint")
    conda:
        ENV
    threads: res("controllable", "threads")
    resources:
        **job_resources("controllable"),
    params:
        cfg=stage_params("inpaint", per_sde=True),
        device=CTRL["device"],
        masks=CTRL["inpaint"]["masks"],
        methods=CTRL["inpaint"]["methods"],
    shell:
        scoresde(
            "inpaint",
            "--checkpoint {input.checkpoint} --data {input.test} "
            "--reference {input.reference} --extractor {input.extractor} "
            "--masks {params.masks} --methods {params.methods} --sde {wildcards.sde} "
            "--out {output.completions} --inputs-out {output.inputs} "
            "--metrics {output.metrics}",
        )


# RGB datasets (cifar10, image_folder): colour the grey test images with inpainting's methods.
rule colorize:
    input:
        checkpoint="checkpoints/{dataset}/{sde}/best.pt",
        test="data/processed/{dataset}/test.pt",
        reference="data/processed/{dataset}/reference.pt",
        extractor="checkpoints/{dataset}/fid_features.pt",
    output:
        coloured=expand(
            "controllable/{{dataset}}/{{sde}}/colorize/{method}.pt",
            method=CTRL["inpaint"]["methods"],
        ),
        inputs="controllable/{dataset}/{sde}/colorize/inputs.pt",
        metrics="controllable/{dataset}/{sde}/colorize.json",
    log:  # beside inpainting's (the same DVC outs)
        log_file("inpaint", f"{SDE_JOB}_colorize"),
    benchmark:
        benchmark_file("inpaint", f"{SDE_JOB}_colorize")
    conda:
        ENV
    threads: res("controllable", "threads")
    resources:
        **job_resources("controllable"),
    params:
        cfg=stage_params("colorize", per_sde=True),
        device=CTRL["device"],
        methods=CTRL["inpaint"]["methods"],
    shell:
        scoresde(
            "colorize",
            "--checkpoint {input.checkpoint} --data {input.test} "
            "--reference {input.reference} --extractor {input.extractor} "
            "--methods {params.methods} --sde {wildcards.sde} --out {output.coloured} "
            "--inputs-out {output.inputs} --metrics {output.metrics}",
        )


# Linear inverse problems y = A x + noise (superres, deblur, noisy-projection) on held-out test
# images: one job per (dataset, SDE) writes every (task, method), one start-up.
rule inverse:
    input:
        checkpoint="checkpoints/{dataset}/{sde}/best.pt",
        test="data/processed/{dataset}/test.pt",
        reference="data/processed/{dataset}/reference.pt",
        extractor="checkpoints/{dataset}/fid_features.pt",
    output:
        reconstructions=expand(
            "controllable/{{dataset}}/{{sde}}/inverse/{case}.pt", case=INVERSE_CASES
        ),
        metrics=expand(
            "controllable/{{dataset}}/{{sde}}/inverse/{case}.json", case=INVERSE_CASES
        ),
    log:
        log_file("inverse"),
    benchmark:
        benchmark_file("inverse")
    conda:
        ENV
    threads: res("controllable", "threads")
    resources:
        **job_resources("controllable"),
    params:
        cfg=stage_params("inverse", per_sde=True),
        device=CTRL["device"],
        tasks=CTRL["inverse"]["tasks"],
        methods=CTRL["inverse"]["methods"],
    shell:
        scoresde(
            "inverse",
            "--checkpoint {input.checkpoint} --data {input.test} "
            "--reference {input.reference} --extractor {input.extractor} "
            "--tasks {params.tasks} --methods {params.methods} --sde {wildcards.sde} "
            "--out {output.reconstructions} --metrics {output.metrics}",
        )
