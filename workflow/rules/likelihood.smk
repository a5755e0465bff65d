rule likelihood:
    input:
        checkpoint="checkpoints/{dataset}/{sde}/best.pt",
        data="data/processed/{dataset}/test.pt",
    output:
        "metrics/{dataset}/{sde}/nll.json",
    log:
        "logs/likelihood/{dataset}/{sde}.log",
    benchmark:
        "logs/benchmarks/likelihood/{dataset}/{sde}.tsv"
    conda:
        "../envs/scoresde.yaml"
    threads: res("eval", "threads")
    resources:
        mem_mb=res("eval", "mem_mb"),
        runtime=res("eval", "runtime"),
        gpu=res("eval", "gpu"),
    params:
        cfg=stage_params("likelihood"),
        device=config["eval"]["device"],
    shell:
        "python -m scoresde likelihood --params-json {params.cfg:q} "
        "--checkpoint {input.checkpoint} --data {input.data} --sde {wildcards.sde} "
        "--out {output} --device {params.device} --threads {threads} > {log} 2>&1"
