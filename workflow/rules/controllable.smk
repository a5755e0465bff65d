# Controllable generation (paper section 5): noise-conditional classifier, class-conditional
# samples and inpainting, per SDE of controllable.sdes, when controllable.enabled. Everything
# goes under controllable/{dataset}/{sde}/ (one DVC out).
CTRL = config["controllable"]
CTRL_SDES = [s for s in (CTRL["sdes"] or SDES) if s in SDES] if CTRL["enabled"] else []
INPAINT_CASES = expand(
    "{mask}_{method}", mask=CTRL["inpaint"]["masks"], method=CTRL["inpaint"]["methods"]
)


def controllable_results(wildcards=None):
    """The metrics JSONs the report's controllable section reads (none when disabled)."""
    return expand(
        "controllable/{dataset}/{sde}/{task}.json",
        dataset=DATASET,
        sde=CTRL_SDES,
        task=["conditional", "inpaint"],
    )


def controllable_outputs():
    """The report's controllable outputs: the tidy table and one figure per SDE."""
    if not CTRL_SDES:
        return {}
    figs = {
        f"controllable_{sde}": f"reports/figures/controllable_{DATASET}_{sde}.png"
        for sde in CTRL_SDES
    }
    return {"controllable_csv": "reports/controllable.csv", **figs}


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
