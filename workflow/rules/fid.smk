rule train_features:
    input:
        train="data/processed/{dataset}/train.pt",
        test="data/processed/{dataset}/test.pt",
    output:
        "checkpoints/{dataset}/fid_features.pt",
    log:
        "logs/train_features/{dataset}.log",
    benchmark:
        "logs/benchmarks/train_features/{dataset}.tsv"
    conda:
        "../envs/scoresde.yaml"
    threads: res("eval", "threads")
    resources:
        mem_mb=res("eval", "mem_mb"),
        runtime=res("eval", "runtime"),
        gpu=res("eval", "gpu"),
    params:
        cfg=stage_params("train-features"),
        device=config["eval"]["device"],
    shell:
        "python -m scoresde train-features --params-json {params.cfg:q} "
        "--data {input.train} --test {input.test} --out {output} "
        "--device {params.device} --threads {threads} > {log} 2>&1"


# One job per (dataset, sde) scores all of its cases: the FID itself takes a fraction of a
# second at the default scale, loading torch-fidelity several seconds.
rule fid:
    input:
        samples=case_files("samples/{{dataset}}/{{sde}}/{case}.pt"),
        meta=case_files("samples/{{dataset}}/{{sde}}/{case}.json"),
        reference="data/processed/{dataset}/reference.pt",
        extractor="checkpoints/{dataset}/fid_features.pt",
    output:
        case_files("metrics/{{dataset}}/{{sde}}/fid/{case}.json"),
    log:
        "logs/fid/{dataset}/{sde}.log",
    benchmark:
        "logs/benchmarks/fid/{dataset}/{sde}.tsv"
    conda:
        "../envs/scoresde.yaml"
    threads: res("eval", "threads")
    resources:
        mem_mb=res("eval", "mem_mb"),
        runtime=res("eval", "runtime"),
        gpu=res("eval", "gpu"),
    params:
        cfg=stage_params("fid"),
        device=config["eval"]["device"],
    shell:
        "python -m scoresde fid --params-json {params.cfg:q} --samples {input.samples} "
        "--meta {input.meta} --reference {input.reference} "
        "--extractor {input.extractor} --out {output} "
        "--device {params.device} --threads {threads} > {log} 2>&1"


# Seed k >= 1 of report.seeds (sample_seed's files).
use rule fid as fid_seed with:
    input:
        samples=case_files("samples/{{dataset}}/{{sde}}/seed{{seed}}/{case}.pt"),
        meta=case_files("samples/{{dataset}}/{{sde}}/seed{{seed}}/{case}.json"),
        reference="data/processed/{dataset}/reference.pt",
        extractor="checkpoints/{dataset}/fid_features.pt",
    output:
        case_files("metrics/{{dataset}}/{{sde}}/fid/seed{{seed}}/{case}.json"),
    log:
        "logs/fid/{dataset}/{sde}/seed{seed}.log",
    benchmark:
        "logs/benchmarks/fid/{dataset}/{sde}/seed{seed}.tsv"
