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
        "logs/train_classifier/{dataset}/{sde}.log",
    benchmark:
        "logs/benchmarks/train_classifier/{dataset}/{sde}.tsv"
    conda:
        "../envs/scoresde.yaml"
    threads: res("controllable", "threads")
    resources:
        mem_mb=res("controllable", "mem_mb"),
        runtime=res("controllable", "runtime"),
        gpu=res("controllable", "gpu"),
    params:
        cfg=stage_params("train-classifier", per_sde=True),
        device=CTRL["device"],
    shell:
        "python -m scoresde train-classifier --params-json {params.cfg:q} "
        "--data {input.train} --test {input.test} --sde {wildcards.sde} --out {output} "
        "--device {params.device} --threads {threads} > {log} 2>&1"


rule conditional_sample:
    input:
        checkpoint="checkpoints/{dataset}/{sde}/best.pt",
        classifier="controllable/{dataset}/{sde}/classifier.pt",
        train="data/processed/{dataset}/train.pt",
        extractor="checkpoints/{dataset}/fid_features.pt",
    output:
        samples="controllable/{dataset}/{sde}/conditional.pt",
        metrics="controllable/{dataset}/{sde}/conditional.json",
    log:
        "logs/conditional_sample/{dataset}/{sde}.log",
    benchmark:
        "logs/benchmarks/conditional_sample/{dataset}/{sde}.tsv"
    conda:
        "../envs/scoresde.yaml"
    threads: res("controllable", "threads")
    resources:
        mem_mb=res("controllable", "mem_mb"),
        runtime=res("controllable", "runtime"),
        gpu=res("controllable", "gpu"),
    params:
        cfg=stage_params("conditional-sample", per_sde=True),
        device=CTRL["device"],
    shell:
        "python -m scoresde conditional-sample --params-json {params.cfg:q} "
        "--checkpoint {input.checkpoint} --classifier {input.classifier} "
        "--data {input.train} --extractor {input.extractor} --sde {wildcards.sde} "
        "--out {output.samples} --metrics {output.metrics} "
        "--device {params.device} --threads {threads} > {log} 2>&1"


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
        "logs/inpaint/{dataset}/{sde}.log",
    benchmark:
        "logs/benchmarks/inpaint/{dataset}/{sde}.tsv"
    conda:
        "../envs/scoresde.yaml"
    threads: res("controllable", "threads")
    resources:
        mem_mb=res("controllable", "mem_mb"),
        runtime=res("controllable", "runtime"),
        gpu=res("controllable", "gpu"),
    params:
        cfg=stage_params("inpaint", per_sde=True),
        device=CTRL["device"],
        masks=CTRL["inpaint"]["masks"],
        methods=CTRL["inpaint"]["methods"],
    shell:
        "python -m scoresde inpaint --params-json {params.cfg:q} "
        "--checkpoint {input.checkpoint} --data {input.test} --reference {input.reference} "
        "--extractor {input.extractor} --masks {params.masks} --methods {params.methods} "
        "--sde {wildcards.sde} --out {output.completions} --inputs-out {output.inputs} "
        "--metrics {output.metrics} --device {params.device} --threads {threads} > {log} 2>&1"


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
        "logs/inpaint/{dataset}/{sde}_colorize.log",
    benchmark:
        "logs/benchmarks/inpaint/{dataset}/{sde}_colorize.tsv"
    conda:
        "../envs/scoresde.yaml"
    threads: res("controllable", "threads")
    resources:
        mem_mb=res("controllable", "mem_mb"),
        runtime=res("controllable", "runtime"),
        gpu=res("controllable", "gpu"),
    params:
        cfg=stage_params("colorize", per_sde=True),
        device=CTRL["device"],
        methods=CTRL["inpaint"]["methods"],
    shell:
        "python -m scoresde colorize --params-json {params.cfg:q} "
        "--checkpoint {input.checkpoint} --data {input.test} --reference {input.reference} "
        "--extractor {input.extractor} --methods {params.methods} --sde {wildcards.sde} "
        "--out {output.coloured} --inputs-out {output.inputs} --metrics {output.metrics} "
        "--device {params.device} --threads {threads} > {log} 2>&1"


# Linear inverse problems y = A x + noise (superres, deblur, noisy-projection), one job per
# (task, method) on held-out test images.
rule inverse:
    input:
        checkpoint="checkpoints/{dataset}/{sde}/best.pt",
        test="data/processed/{dataset}/test.pt",
        reference="data/processed/{dataset}/reference.pt",
        extractor="checkpoints/{dataset}/fid_features.pt",
    output:
        reconstructions="controllable/{dataset}/{sde}/inverse/{task}_{method}.pt",
        metrics="controllable/{dataset}/{sde}/inverse/{task}_{method}.json",
    log:
        "logs/inverse/{dataset}/{sde}/{task}_{method}.log",
    benchmark:
        "logs/benchmarks/inverse/{dataset}/{sde}/{task}_{method}.tsv"
    wildcard_constraints:
        task="superres|deblur|noisy-projection",
        method="dps|pigdm|smc",
    conda:
        "../envs/scoresde.yaml"
    threads: res("controllable", "threads")
    resources:
        mem_mb=res("controllable", "mem_mb"),
        runtime=res("controllable", "runtime"),
        gpu=res("controllable", "gpu"),
    params:
        cfg=stage_params("inverse", per_sde=True),
        device=CTRL["device"],
    shell:
        "python -m scoresde inverse --params-json {params.cfg:q} "
        "--checkpoint {input.checkpoint} --data {input.test} --reference {input.reference} "
        "--extractor {input.extractor} --task {wildcards.task} --method {wildcards.method} "
        "--sde {wildcards.sde} --out {output.reconstructions} --metrics {output.metrics} "
        "--device {params.device} --threads {threads} > {log} 2>&1"
