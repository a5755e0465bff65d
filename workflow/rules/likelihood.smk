rule likelihood:
    input:
        checkpoint="checkpoints/{dataset}/{sde}/best.pt",
        data="data/processed/{dataset}/test.pt",
    output:
        "metrics/{dataset}/{sde}/nll.json",
    log:
        log_file("likelihood"),
    benchmark:
        benchmark_file("likelihood")
    priority: PRIORITY["likelihood"]
    conda:
        ENV
    threads: res("eval", "threads")
    resources:
        **job_resources("eval"),
    params:
        cfg=stage_params("likelihood"),
        device=config["eval"]["device"],
    shell:
        scoresde(
            "likelihood",
            "--checkpoint {input.checkpoint} --data {input.data} --sde {wildcards.sde} "
            "--out {output}",
        )
