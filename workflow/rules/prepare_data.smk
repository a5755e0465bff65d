rule prepare_data:
    output:
        train="data/processed/{dataset}/train.pt",
        test="data/processed/{dataset}/test.pt",
        reference="data/processed/{dataset}/reference.pt",
        config="data/processed/{dataset}/config.json",
    log:
        log_file("prepare_data", "{dataset}"),
    benchmark:
        benchmark_file("prepare_data", "{dataset}")
    conda:
        ENV
    threads: 1
    resources:
        **job_resources(mem_mb=8000, runtime=30),
    params:
        cfg=stage_params("prepare-data"),
        # The raw files' paths, sizes and modification times (data.fingerprint): an added,
        # removed or edited file under data.root reruns prepare_data and all that follows.
        raw=raw_fingerprint,
    shell:
        scoresde(
            "prepare-data",
            "--dataset {wildcards.dataset} --train-out {output.train} "
            "--test-out {output.test} --reference-out {output.reference} "
            "--config-out {output.config}",
            device=False,
        )
