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
            log_file("select_checkpoint"),
        benchmark:
            benchmark_file("select_checkpoint")
        priority: PRIORITY["select_checkpoint"]
        conda:
            ENV
        threads: res("select", "threads")
        resources:
            **job_resources("select"),
        params:
            cfg=stage_params("select-checkpoint"),
            device=config["select"]["device"],
        shell:
            scoresde(
                "select-checkpoint",
                "--checkpoints {input.snapshots} --reference {input.reference} "
                "--extractor {input.extractor} --sde {wildcards.sde} --best {output.best} "
                "--table {output.table} --config-out {output.config}",
            )
