rule report:
    input:
        fid=fid_results,
        nll=nll_results,
        train_logs=(
            []
            if IMPORTED
            else expand(
                "checkpoints/{dataset}/{sde}/train_log.csv", dataset=DATASET, sde=SDES
            )
        ),
        selections=(
            []
            if IMPORTED
            else expand(
                "checkpoints/{dataset}/{sde}/selection.csv", dataset=DATASET, sde=SDES
            )
        ),
        controllable=controllable_results,
        checks=expand("metrics/{dataset}/metric_checks.json", dataset=DATASET),
        samples=expand(  # the sample grids of the lowest-FID cases
            "samples/{dataset}/{sde}/{case}.pt", dataset=DATASET, sde=SDES, case=CASES
        ),
        benchmarks=benchmark_files,
    output:
        **report_figures(),
        **controllable_outputs(),
        metrics=report(
            "reports/metrics.csv",
            caption="../report/metrics.rst",
            category="Tables",
            subcategory="Sampler sweep",
        ),
        likelihood=report(
            "reports/likelihood.csv",
            caption="../report/likelihood.rst",
            category="Tables",
            subcategory="Likelihood",
        ),
        train_loss=report(
            "reports/train_loss.csv",
            caption="../report/train_loss.rst",
            category="Tables",
            subcategory="Training",
        ),
        html=report(
            "reports/report.html",
            caption="../report/report_html.rst",
            category="Report",
            labels={"format": "HTML (self-contained)"},
        ),
        md=report(
            "reports/report.md",
            caption="../report/report.rst",
            category="Report",
            labels={"format": "Markdown (links figures/)"},
        ),
        metrics_json="reports/metrics.json",
        fid_vs_steps="reports/fid_vs_steps.csv",
    log:
        "logs/report.log",
    conda:
        ENV
    threads: 1
    resources:
        **job_resources(mem_mb=4000, runtime=30),
    params:
        cfg=stage_params("report"),
    shell:
        scoresde(
            "report",
            "--fid {input.fid} --nll {input.nll} --out-dir reports "
            "--checkpoints-dir checkpoints --samples-dir samples "
            "--benchmarks {input.benchmarks} --controllable {input.controllable} "
            "--checks {input.checks}",
            device=False,
        )
