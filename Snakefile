# Score-SDE (Song et al., ICLR 2021) end to end: data -> train -> select -> sample -> FID,
# likelihood -> report. `snakemake --cores all` runs the embedded default (params.yaml);
# `--configfile .test/params.yaml` the smoke test, `--configfile config/cifar10.yaml` the
# paper's scale. Every rule runs one `python -m scoresde <stage>` command.
from snakemake.utils import min_version

min_version("9.0")


configfile: "params.yaml"


report: "workflow/report/workflow.rst"  # `snakemake --report reports/snakemake-report.html`


include: "workflow/rules/common.smk"
include: "workflow/rules/prepare_data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/select.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/fid.smk"
include: "workflow/rules/likelihood.smk"
include: "workflow/rules/controllable.smk"
include: "workflow/rules/report.smk"


# Every output of the report, not only its tables: the figures are named by the dataset and
# SDE, so after a change of data.dataset (or of the SDEs) the new names are missing and the
# report reruns with the new data. Snakemake checks a job's parameters and code only when all
# of its outputs exist with their records; an output that no later job asks for is not missed.
rule all:
    default_target: True
    input:
        rules.report.output,


onstart:
    # On SLURM: check tools, partitions and job-state polling before submitting anything.
    if (
        workflow.executor_plugin is not None
        and workflow.executor_plugin.name == "slurm"
    ):
        slurm_preflight()
