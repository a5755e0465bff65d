if not IMPORTED:  # else best.pt is a released checkpoint from import-official

    rule select_checkpoint:
        input:
            snapshots=snapshots,
            reference="data/processed/{dataset}/reference.pt",
            extractor="checkpoints/{dataset}/fid_features.pt",
        output:
            best="checkpoints/{dataset}/{sde}/best.pt",
            table=report(
                "checkpoints/{dataset}/{sde}/selection.csv",
                caption="../report/selection_table.rst",
                category="Tables",
                subcategory="Checkpoint selection",
                labels={"SDE": "{sde}"},
            ),
            config="checkpoints/{dataset}/{sde}/selection.json",
        log:
            "logs/select_checkpoint/{dataset}/{sde}.log",
        benchmark:
            "logs/benchmarks/select_checkpoint/{dataset}/{sde}.tsv"
        conda:
            "../envs/scoresde.yaml"
        threads: res("select", "threads")
        resources:
            mem_mb=res("select", "mem_mb"),
            runtime=res("select", "runtime"),
            gpu=res("select", "gpu"),
        params:
            cfg=stage_params("select-checkpoint"),
            device=config["select"]["device"],
        shell:
            "python -m scoresde select-checkpoint --params-json {params.cfg:q} "
            "--checkpoints {input.snapshots} --reference {input.reference} "
            "--extractor {input.extractor} --sde {wildcards.sde} --best {output.best} "
            "--table {output.table} --config-out {output.config} "
            "--device {params.device} --threads {threads} > {log} 2>&1"
