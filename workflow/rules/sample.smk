# The sampler sweep (sample.jobs, helpers in common.smk): per_sde, one job per (dataset, SDE)
# draws every case in one process; per_case, one job per (SDE, sampler, steps). The Tweedie
# on / off cases of a (sampler, steps) share one trajectory either way.
rule sample:
    input:
        "checkpoints/{dataset}/{sde}/best.pt",
    output:
        samples=sample_files("samples/{{dataset}}/{{sde}}/{case}.pt"),
        meta=sample_files("samples/{{dataset}}/{{sde}}/{case}.json"),
    log:
        log_file("sample", SAMPLE_JOB),
    benchmark:
        benchmark_file("sample", SAMPLE_JOB)
    priority: PRIORITY["sample"]
    conda:
        ENV
    threads: res("sample", "threads")
    resources:
        **job_resources("sample"),
    params:
        cfg=stage_params("sample", per_sde=True),
        cases=output_cases,
        device=config["sample"]["device"],
        seed_index=0,
    shell:
        scoresde(
            "sample-cases",
            "--checkpoint {input} --sde {wildcards.sde} --cases {params.cases} "
            "--out {output.samples} --meta {output.meta} --seed-index {params.seed_index}",
        )


# report.seeds > 1: seed k = 1, 2, ... of every case draws the next n_samples per-sample
# streams (seed 0 is the rule above); the report averages the seeds' FIDs.
use rule sample as sample_seed with:
    output:
        samples=sample_files("samples/{{dataset}}/{{sde}}/seed{{seed}}/{case}.pt"),
        meta=sample_files("samples/{{dataset}}/{{sde}}/seed{{seed}}/{case}.json"),
    log:
        log_file("sample", seed_job(SAMPLE_JOB)),
    benchmark:
        benchmark_file("sample", seed_job(SAMPLE_JOB))
    params:
        seed_index=lambda wildcards: int(wildcards.seed),
