# DVC's entry point into the Snakemake workflow (used by the stages of dvc.yaml, nothing else).
# It is the whole workflow of ../Snakefile plus one wildcard-free target rule per DVC stage, each
# asking for exactly the files that stage's rules write in the full DAG -- patterns and sweeps
# come from the rules themselves, so nothing here restates the DAG. A stage runs
#   snakemake -s workflow/dvc.smk --allowed-rules <its rules> dvc_<stage> --forceall -- dvc_<stage>
# so Snakemake never touches another stage's files (DVC owns those) and always rebuilds the
# stage's own (DVC decided it must rerun). tests/test_dvc.py checks both files stay in step.


include: "../Snakefile"


rule dvc_prepare_data:
    input:
        expand(rules.prepare_data.output, dataset=DATASET),


rule dvc_train:
    input:
        expand(rules.train_features.output, dataset=DATASET),
        expand(rules.select_checkpoint.output, dataset=DATASET, sde=SDES),


rule dvc_sample:
    input:
        expand(rules.fid.input.samples, dataset=DATASET, sde=SDES),
        expand(rules.fid.input.meta, dataset=DATASET, sde=SDES),
        expand(
            rules.fid_seed.input.samples, dataset=DATASET, sde=SDES, seed=SEED_INDICES
        ),
        expand(rules.fid_seed.input.meta, dataset=DATASET, sde=SDES, seed=SEED_INDICES),


rule dvc_controllable:
    input:
        controllable_results,


rule dvc_evaluate:
    input:
        fid_results,
        nll_results,
        expand(rules.metric_checks.output, dataset=DATASET),
