# Shared by all rule files -- parameter validation, wildcard grammar, small helpers.
# Parameters come from params.yaml (configfile) merged with any --configfile / --config.
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from scoresde.data import fingerprint
from scoresde.report import expected_figures
from scoresde.stages import cases, config as settings

try:  # one line naming the key, before any job starts
    # a key given twice in a config file: refused, not the last one kept
    for path in workflow.configfiles:
        settings.load_file(path)
    # --config reads nested values as text (train={"snapshot_every":10} gives '10'): typed by
    # the schema, as a parameter file would give them
    overrides = getattr(workflow.config_settings, "config", None) or {}
    config.update(settings.coerce(config, overrides))
    settings.validate(config)
except settings.ConfigError as err:
    raise WorkflowError(str(err)) from None
validate(config, "../schemas/params.schema.yaml")  # fills in the schema defaults

DATASET = config["data"]["dataset"]
SDES = config["sde"]["names"]
IMPORTED = config["select"]["source"] == "imported"  # best.pt from import-official
CASES = cases.sweep(
    config["sample"]["samplers"],
    config["sample"]["steps"],
    config["sample"]["denoise"],
    config["sample"]["extra_cases"],
)
SNAPSHOTS = settings.snapshot_steps(
    config["train"]["n_iters"], config["train"]["snapshot_every"]
)
CASE = cases.wildcard_constraints()


wildcard_constraints:
    dataset="digits|mnist|fashion_mnist|cifar10|image_folder",
    sde="ve|vp|subvp",
    sampler=CASE["sampler"],
    steps=CASE["steps"],
    denoise=CASE["denoise"],
    seed="[1-9][0-9]*",


# ---------------------------------------------------------------- what every rule shares
# Every rule takes its log and benchmark paths from log_file / benchmark_file (by its name
# and its wildcards), ENV as its conda environment, threads and resources from its parameter
# group (res, job_resources) and its shell command from scoresde(stage, arguments).
ENV = "../envs/scoresde.yaml"
SDE_JOB = "{dataset}/{sde}"  # the name of a job that runs once per (dataset, SDE)


# Scheduling: among the jobs ready to run, the long chains first (train -> select_checkpoint ->
# likelihood and sample -> fid), so that the short jobs (controllable generation, report inputs)
# fill the cores at the end rather than one long job running alone (docs/pipeline.md).
PRIORITY = {
    "train": 50,
    "select_checkpoint": 40,
    "likelihood": 30,
    "sample": 20,
    "fid": 10,
}


def log_file(rule, job=SDE_JOB):
    """logs/<rule>/<job>.log; `job` names one job of the rule by its wildcards."""
    return f"logs/{rule}/{job}.log"


def benchmark_file(rule, job=SDE_JOB):
    """logs/benchmarks/<rule>/<job>.tsv: the job's times (the report's stage-times table)."""
    return f"logs/benchmarks/{rule}/{job}.tsv"


def job_resources(group=None, **fixed):
    """A rule's resources: mem_mb, runtime and gpu of parameter group `group`'s resources,
    then `fixed` (values of their own, or for rules without a group)."""
    own = config[group]["resources"] if group else {}
    return {k: own[k] for k in ("mem_mb", "runtime", "gpu") if k in own} | fixed


def scoresde(stage, args, device=True):
    """A rule's shell command: `python -m scoresde <stage>` with the job's parameters
    (params.cfg), the stage's `args`, the device (params.device) and the rule's threads;
    stdout and stderr go to the log."""
    tail = " --device {params.device} --threads {threads}" if device else ""
    return (
        f"python -m scoresde {stage} --params-json {{params.cfg:q}} {args}{tail} "
        "> {log} 2>&1"
    )


def stage_params(stage, per_sde=False):
    """Input function: what a job of `stage` computes from, as JSON for --params-json."""

    def get(wildcards):
        sde = wildcards.sde if per_sde else None
        return settings.to_json(settings.job_params(config, stage, sde))

    return get


def raw_fingerprint(wildcards):
    """params of prepare_data: a digest of the raw files the dataset is read from."""
    return fingerprint(wildcards.dataset, config["data"]["root"])


def res(group, key):
    """A resource of a stage's parameter group (threads, mem_mb, runtime, gpu)."""
    return config[group]["resources"][key]


def train_gpus():
    """GPUs a train job asks for: train.resources.gpu, and one per process when the
    processes run on CUDA (train.processes > 1 with device cuda, or any GPU asked for).
    """
    train = config["train"]
    gpus = train["resources"]["gpu"]
    if gpus > 0 or (train["device"] == "cuda" and train["processes"] > 1):
        return max(gpus, train["processes"])
    return 0


def snapshots(wildcards):
    return expand(
        "checkpoints/{dataset}/{sde}/step_{k}.pt",
        dataset=wildcards.dataset,
        sde=wildcards.sde,
        k=SNAPSHOTS,
    )


# report.seeds: seed 0 at the sweep's paths, seeds 1.. under seed{k}/
SEED_INDICES = list(range(1, config["report"]["seeds"]))


def fid_results(wildcards):
    seed_dirs = ["", *(f"seed{k}/" for k in SEED_INDICES)]
    return expand(
        "metrics/{dataset}/{sde}/fid/{seed}{case}.json",
        dataset=DATASET,
        sde=SDES,
        seed=seed_dirs,
        case=CASES,
    )


def nll_results(wildcards):
    return expand("metrics/{dataset}/{sde}/nll.json", dataset=DATASET, sde=SDES)


def denoise_files(pattern):
    """One path per denoise setting of the sweep; `pattern` has {denoise}."""
    return expand(pattern, denoise=config["sample"]["denoise"])


def case_files(pattern):
    """One path per case of the sweep; `pattern` has {case} and escaped {{wildcards}}."""
    return expand(pattern, case=CASES)


# sample.jobs: per_sde, one sample job per (dataset, SDE) draws every case (one start-up);
# per_case, one job per (SDE, sampler, steps) draws that trajectory's denoise settings.
PER_CASE = config["sample"]["jobs"] == "per_case"
TRAJECTORIES = list(dict.fromkeys(case.rsplit("_", 1)[0] for case in CASES))
# A per_case job is named by its cases' common stem and denoise settings: pc_10_tweedie_none.
TRAJECTORY_CASES = "_".join(config["sample"]["denoise"])
SAMPLE_JOB = (
    f"{{dataset}}/{{sde}}/{{sampler}}_{{steps}}_{TRAJECTORY_CASES}"
    if PER_CASE
    else SDE_JOB
)


def sample_files(pattern):
    """The files one sample job writes; `pattern` has {case} and escaped {{wildcards}}."""
    if PER_CASE:
        return denoise_files(
            pattern.replace("{case}", "{{sampler}}_{{steps}}_{denoise}")
        )
    return case_files(pattern)


def output_cases(wildcards, output):
    """params: the cases a sample job draws, the stems of its sample files in order."""
    return [Path(f).stem for f in output.samples]


def seed_job(job):
    """A job name of report.seeds' seed k >= 1: its SDE folder, then seed{seed}/."""
    return job.replace("{sde}", "{sde}/seed{seed}", 1)


# Each figure the report writes (expected_figures) with its caption for `snakemake --report`.
# kind: (caption, subcategory, label)
FIGURES = {
    "fid_vs_steps": ("../report/fid_curves.rst", "FID curves", "FID vs sampler steps"),
    "fid_vs_nfe": ("../report/fid_curves.rst", "FID curves", "FID vs NFE"),
    "tweedie": ("../report/tweedie.rst", "FID curves", "Tweedie denoising"),
    "samples": ("../report/samples.rst", "Samples", "lowest-FID samples"),
    "bpd": ("../report/bpd.rst", "Likelihood", "bits/dim per SDE"),
    "loss": ("../report/loss.rst", "Training", "training loss"),
    "selection": ("../report/selection.rst", "Training", "checkpoint selection"),
}


def report_figures():
    """{name: reports/figures/{name}.png} for every figure, marked for the Snakemake report."""
    tweedie = len(set(config["sample"]["denoise"])) > 1  # cases run with and without
    return {
        name: report(
            f"reports/figures/{name}.png",
            caption=FIGURES[kind][0],
            category="Figures",
            subcategory=FIGURES[kind][1],
            labels={"figure": FIGURES[kind][2], "SDE": sde or "all"},
        )
        for name, kind, sde in expected_figures(DATASET, SDES, tweedie)
        if not (IMPORTED and kind in ("loss", "selection"))  # no training, no selection
    }


# Controllable generation (controllable.smk): which SDEs, which inpainting cases.
CTRL = config["controllable"]
CTRL_SDES = [s for s in (CTRL["sdes"] or SDES) if s in SDES] if CTRL["enabled"] else []
INPAINT_CASES = expand(
    "{mask}_{method}", mask=CTRL["inpaint"]["masks"], method=CTRL["inpaint"]["methods"]
)
GUIDANCE = CTRL["conditional"]["guidance"]
FREE_ITERS = settings.free_iters(config)  # the classifier-free network's one snapshot
INVERSE_CASES = expand(
    "{task}_{method}", task=CTRL["inverse"]["tasks"], method=CTRL["inverse"]["methods"]
)


RGB = DATASET in ("cifar10", "image_folder")  # colorization needs colour images


def controllable_results(wildcards=None):
    """The metrics JSONs the report's controllable section reads (none when disabled)."""
    return expand(
        "controllable/{dataset}/{sde}/{task}.json",
        dataset=DATASET,
        sde=CTRL_SDES,
        task=[
            "conditional",
            "inpaint",
            *(["colorize"] if RGB else []),
            *[f"inverse/{case}" for case in INVERSE_CASES],
        ],
    )


def guidance_inputs(wildcards):
    """conditional_sample's guides: the classifier and / or the classifier-free network."""
    base = f"controllable/{wildcards.dataset}/{wildcards.sde}"
    out = {}
    if "classifier" in GUIDANCE:
        out["classifier"] = f"{base}/classifier.pt"
    if "free" in GUIDANCE:
        out["free"] = f"{base}/free/step_{FREE_ITERS}.pt"
    return out


def guidance_args(wildcards, input):
    """conditional_sample's --classifier / --free arguments for the guides it has."""
    return " ".join(
        f"--{name} {path}"
        for name, path in (
            ("classifier", input.get("classifier")),
            ("free", input.get("free")),
        )
        if path
    )


def controllable_outputs():
    """The report's controllable outputs: the tidy table and one figure per SDE."""
    if not CTRL_SDES:
        return {}
    figs = {
        f"controllable_{sde}": f"reports/figures/controllable_{DATASET}_{sde}.png"
        for sde in CTRL_SDES
    }
    figs.update(
        {
            f"guidance_{sde}": f"reports/figures/guidance_{DATASET}_{sde}.png"
            for sde in CTRL_SDES
        }
    )
    if INVERSE_CASES:
        figs.update(
            {
                f"inverse_{sde}": f"reports/figures/inverse_{DATASET}_{sde}.png"
                for sde in CTRL_SDES
            }
        )
    return {"controllable_csv": "reports/controllable.csv", **figs}


def job_names():
    """{rule: the names of its jobs} in the configured DAG, as log_file / benchmark_file
    take them (the report's rule excepted)."""
    sdes = expand(SDE_JOB, dataset=DATASET, sde=SDES)
    seeds = expand(seed_job(SDE_JOB), dataset=DATASET, sde=SDES, seed=SEED_INDICES)
    samples = [
        f"{j}/{t}_{TRAJECTORY_CASES}" for j in sdes + seeds for t in TRAJECTORIES
    ]
    ctrl = expand(SDE_JOB, dataset=DATASET, sde=CTRL_SDES)
    return {
        "prepare_data": [DATASET],
        "train_features": [DATASET],
        "metric_checks": [DATASET],
        "train": [] if IMPORTED else sdes,
        "select_checkpoint": [] if IMPORTED else sdes,
        "sample": samples if PER_CASE else sdes + seeds,
        "fid": sdes + seeds,
        "likelihood": sdes,
        "train_classifier": ctrl if "classifier" in GUIDANCE else [],
        "train_conditional": ctrl if "free" in GUIDANCE else [],
        "conditional_sample": ctrl,
        "inpaint": ctrl + ([f"{job}_colorize" for job in ctrl] if RGB else []),
        "inverse": ctrl if INVERSE_CASES else [],
    }


def benchmark_files(wildcards=None):
    """Every job's benchmark TSV (the report's stage-times table)."""
    return [benchmark_file(r, job) for r, jobs in job_names().items() for job in jobs]


def slurm_preflight():
    """Fail before the first sbatch if the cluster cannot run this DAG."""
    import subprocess
    import sys

    settings = workflow.executor_settings
    partitions = sorted(
        {
            str(job.resources.get("slurm_partition"))
            for job in workflow.dag.needrun_jobs()
            if job.resources.get("slurm_partition")
        }
    )
    check = subprocess.run(
        [
            sys.executable,
            f"{workflow.basedir}/scripts/slurm/preflight.py",
            "--status-command",
            settings.status_command or "sacct",
            "--init-seconds",
            str(settings.init_seconds_before_status_checks),
            "--partition",
            *partitions,
        ],
        capture_output=True,
        text=True,
    )
    if check.returncode:
        raise WorkflowError(check.stderr.strip())
    logger.info(check.stderr.strip())
