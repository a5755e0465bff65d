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
    shell:
        "python -m scoresde sample --params-json {params.cfg:q} --checkpoint {input} "
        "--sde {wildcards.sde} --sampler {wildcards.sampler} --steps {wildcards.steps} "
        "--denoise {params.denoise} --out {output.samples} --meta {output.meta} "
        "--device {params.device} --threads {threads} > {log} 2>&1"
