# One job per (SDE, sampler, steps): the Tweedie on / off cases share one trajectory.
rule sample:
    input:
        "checkpoints/{dataset}/{sde}/best.pt",
    output:
        samples=denoise_files(
            "samples/{{dataset}}/{{sde}}/{{sampler}}_{{steps}}_{denoise}.pt"
        ),
        meta=denoise_files(
            "samples/{{dataset}}/{{sde}}/{{sampler}}_{{steps}}_{denoise}.json"
        ),
    log:
        "logs/sample/{dataset}/{sde}/{sampler}_{steps}.log",
    benchmark:
        "logs/benchmarks/sample/{dataset}/{sde}/{sampler}_{steps}.tsv"
    conda:
        "../envs/scoresde.yaml"
    threads: res("sample", "threads")
    resources:
        mem_mb=res("sample", "mem_mb"),
        runtime=res("sample", "runtime"),
        gpu=res("sample", "gpu"),
    params:
        cfg=stage_params("sample", per_sde=True),
        device=config["sample"]["device"],
        denoise=config["sample"]["denoise"],
        seed_index=0,
    shell:
        "python -m scoresde sample --params-json {params.cfg:q} --checkpoint {input} "
        "--sde {wildcards.sde} --sampler {wildcards.sampler} --steps {wildcards.steps} "
        "--denoise {params.denoise} --out {output.samples} --meta {output.meta} "
        "--seed-index {params.seed_index} --device {params.device} --threads {threads} "
        "> {log} 2>&1"


# report.seeds > 1: seed k = 1, 2, ... of every case draws the next n_samples per-sample
# streams (seed 0 is the rule above); the report averages the seeds' FIDs.
use rule sample as sample_seed with:
    output:
        samples=denoise_files(
            "samples/{{dataset}}/{{sde}}/seed{{seed}}/{{sampler}}_{{steps}}_{denoise}.pt"
        ),
        meta=denoise_files(
            "samples/{{dataset}}/{{sde}}/seed{{seed}}/{{sampler}}_{{steps}}_{denoise}.json"
        ),
    log:
        "logs/sample/{dataset}/{sde}/seed{seed}/{sampler}_{steps}.log",
    benchmark:
        "logs/benchmarks/sample/{dataset}/{sde}/seed{seed}/{sampler}_{steps}.tsv"
    params:
        seed_index=lambda wildcards: int(wildcards.seed),
