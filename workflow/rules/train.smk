rule train:
    input:
        "data/processed/{dataset}/train.pt",
    output:
        snapshots=expand("checkpoints/{{dataset}}/{{sde}}/step_{k}.pt", k=SNAPSHOTS),
        log_csv=report(
            "checkpoints/{dataset}/{sde}/train_log.csv",
            caption="../report/train_log.rst",
            category="Tables",
            subcategory="Training",
            labels={"SDE": "{sde}"},
        ),
        config="checkpoints/{dataset}/{sde}/config.json",
    log:
        log_file("train"),
    benchmark:
        benchmark_file("train")
    priority: PRIORITY["train"]
    conda:
        ENV
    threads: res("train", "threads")
    resources:
        **job_resources("train", gpu=train_gpus()),
    params:
        cfg=stage_params("train", per_sde=True),
        out_dir=lambda wildcards, output: os.path.dirname(output.log_csv),
        device=config["train"]["device"],
    shell:
        scoresde(
            "train",
            "--data {input} --sde {wildcards.sde} --out-dir {params.out_dir} "
            "--log-csv {output.log_csv} --config-out {output.config}",
        )
