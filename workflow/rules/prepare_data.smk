rule prepare_data:
    output:
        train="data/processed/{dataset}/train.pt",
        test="data/processed/{dataset}/test.pt",
        reference="data/processed/{dataset}/reference.pt",
        config="data/processed/{dataset}/config.json",
    log:
        "logs/prepare_data/{dataset}.log",
    benchmark:
        "logs/benchmarks/prepare_data/{dataset}.tsv"
    conda:
        "../envs/scoresde.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=30,
    params:
        cfg=stage_params("prepare-data"),
    shell:
        "python -m scoresde prepare-data --params-json {params.cfg:q} "
        "--dataset {wildcards.dataset} --train-out {output.train} "
        "--test-out {output.test} --reference-out {output.reference} "
        "--config-out {output.config} > {log} 2>&1"
