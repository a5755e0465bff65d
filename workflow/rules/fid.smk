rule train_features:
    input:
        train="data/processed/{dataset}/train.pt",
        test="data/processed/{dataset}/test.pt",
    output:
        "checkpoints/{dataset}/fid_features.pt",
    log:
        log_file("train_features", "{dataset}"),
    benchmark:
        benchmark_file("train_features", "{dataset}")
    conda:
        ENV
    threads: res("eval", "threads")
    resources:
        **job_resources("eval"),
    params:
        cfg=stage_params("train-features"),
        device=config["eval"]["device"],
    shell:
        scoresde(
            "train-features",
            "--data {input.train} --test {input.test} --out {output}",
        )


# One job per (dataset, sde) scores all of its cases: the FID itself takes a fraction of a
# second at the default scale, loading torch-fidelity several seconds.
rule fid:
    input:
        samples=case_files("samples/{{dataset}}/{{sde}}/{case}.pt"),
        meta=case_files("samples/{{dataset}}/{{sde}}/{case}.json"),
        reference="data/processed/{dataset}/reference.pt",
        extractor="checkpoints/{dataset}/fid_features.pt",
        train="data/processed/{dataset}/train.pt",
        test="data/processed/{dataset}/test.pt",
    output:
        case_files("metrics/{{dataset}}/{{sde}}/fid/{case}.json"),
    log:
        log_file("fid"),
    benchmark:
        benchmark_file("fid")
    priority: PRIORITY["fid"]
    conda:
        ENV
    threads: res("eval", "threads")
    resources:
        **job_resources("eval"),
    params:
        cfg=stage_params("fid"),
        device=config["eval"]["device"],
    shell:
        scoresde(
            "fid",
            "--samples {input.samples} --meta {input.meta} --reference {input.reference} "
            "--extractor {input.extractor} --train {input.train} --test {input.test} "
            "--out {output}",
        )


# Seed k >= 1 of report.seeds (sample_seed's files).
use rule fid as fid_seed with:
    input:
        samples=case_files("samples/{{dataset}}/{{sde}}/seed{{seed}}/{case}.pt"),
        meta=case_files("samples/{{dataset}}/{{sde}}/seed{{seed}}/{case}.json"),
        reference="data/processed/{dataset}/reference.pt",
        extractor="checkpoints/{dataset}/fid_features.pt",
        train="data/processed/{dataset}/train.pt",
        test="data/processed/{dataset}/test.pt",
    output:
        case_files("metrics/{{dataset}}/{{sde}}/fid/seed{{seed}}/{case}.json"),
    log:
        log_file("fid", seed_job(SDE_JOB)),
    benchmark:
        benchmark_file("fid", seed_job(SDE_JOB))


# What the metrics see: held-out images as they are and with known defects, scored like samples.
rule metric_checks:
    input:
        train="data/processed/{dataset}/train.pt",
        test="data/processed/{dataset}/test.pt",
        reference="data/processed/{dataset}/reference.pt",
        extractor="checkpoints/{dataset}/fid_features.pt",
    output:
        "metrics/{dataset}/metric_checks.json",
    log:
        log_file("metric_checks", "{dataset}"),
    benchmark:
        benchmark_file("metric_checks", "{dataset}")
    priority: PRIORITY["fid"]
    conda:
        ENV
    threads: res("eval", "threads")
    resources:
        **job_resources("eval"),
    params:
        cfg=stage_params("check-metrics"),
        device=config["eval"]["device"],
    shell:
        scoresde(
            "check-metrics",
            "--train {input.train} --test {input.test} --reference {input.reference} "
            "--extractor {input.extractor} --out {output}",
        )
