# Shared helpers: the command that runs medtl in every job, config sections as JSON for
# the rules, the label fractions and the targets they add, and the resources of GPU rules.
# Defined here, included first, so that no other file depends on the order of the includes.
import json
import os
import shlex
import sys

from snakemake_interface_executor_plugins.settings import DeploymentMethod

from medtl.checks import check_job_python, stop_on_error
from medtl.config import training_seeds
import medtl.layout
from medtl.split.subsets import fraction_folders


def conda_jobs():
    """Whether jobs run in the rules' conda environment (`snakemake --sdm conda`)."""
    settings = workflow.deployment_settings
    return settings is not None and DeploymentMethod.CONDA in settings.deployment_method


# The Python every job runs medtl with (each rule's `params.python`, its shell
# `{params.python} -m medtl ...`): the one running Snakemake, so that jobs find medtl
# however Snakemake was started (`.venv/bin/snakemake`, `make run`, a cluster job) without
# the environment on PATH; with `--sdm conda`, the Python of the rules' conda environment
# (envs/medtl.yaml installs medtl there). As a parameter it is recorded with each result:
# running the workflow with another Python (another venv, or conda) reruns the jobs.
PYTHON = "python" if conda_jobs() else shlex.quote(sys.executable)

# A job that could not start would fail only when its turn comes: check now, once.
if workflow.is_main_process and not conda_jobs():
    with stop_on_error():
        check_job_python([sys.executable])

ARMS = list(config["arms"])
FOLDS = list(range(config["splits"]["folds"]))
# The seeds each arm trains with (config `seeds`, arms' `repeats`), and every training
# run: a value for each axis of medtl.layout.RUN_AXES (arm, seed, fold), a job of its own.
# A new axis gives its values here.
SEEDS = training_seeds(config)
RUNS = [
    {"arm": arm, "seed": seed, "fold": fold}
    for arm in ARMS
    for seed in SEEDS[arm]
    for fold in FOLDS
]
DEMO = config["dataset"]["kind"] == "demo"
DEMO_DIR = "data/demo"

# Label-fraction curves (config key label_fractions, pipeline/fractions.smk): whole percent
# (folder frac<pct>) → fraction, for the configured fractions below 1, and the table that
# evaluate_fractions writes of them.
LABEL_FRACTIONS = fraction_folders(config.get("label_fractions"))
LABEL_FRACTION_TABLE = "results/evaluation/label_fraction.csv"


def fraction_targets():
    """What the target `all` and the report ask for: the label-fraction table, when configured."""
    return [LABEL_FRACTION_TABLE] if LABEL_FRACTIONS else []


wildcard_constraints:
    arm="|".join(ARMS),
    seed=r"\d+",
    fold=r"\d+",
    case=r"[A-Za-z0-9_.-]+",


def run_path(kind, name="", root="results", **values):
    """The path of a training run's folder (kind train), masks (predictions) or metrics
    (evaluation), by medtl.layout; each axis a wildcard unless given, `name` a file
    inside a folder.
    """
    path = medtl.layout.run_path(kind, root, **{**medtl.layout.wildcards(), **values})
    return (path / name if name else path).as_posix()


def every_run(kind, name="", root="results", arms=None):
    """run_path of every training run (of `arms`, default all): the inputs of merges."""
    return [
        run_path(kind, name, root, **run)
        for run in RUNS
        if arms is None or run["arm"] in arms
    ]


def as_json(value):
    """A config value as compact, stable JSON (also the params that trigger reruns)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def plan_settings():
    """The preprocess section without `workers`: how many cases run at once changes
    neither the plan nor the cases, so it must not rerun them."""
    return as_json({k: v for k, v in config["preprocess"].items() if k != "workers"})


def like_pretrained():
    """Whether the plan takes its spacing or normalisation from pretrain.checkpoint."""
    pre = config["preprocess"]
    return "like_pretrained" in (pre["target_spacing"], pre["normalization"])


def plan_pretrained():
    """The checkpoint `like_pretrained` reads: an input of the plan, so that new weights
    make a new plan (medtl.checks refuses like_pretrained without one)."""
    weights = config["pretrain"]["checkpoint"]
    return [weights] if like_pretrained() and weights else []


def plan_pretrained_flags():
    """`medtl plan`'s options naming that checkpoint and its format (empty without)."""
    if not plan_pretrained():
        return ""
    return "--pretrained {} --pretrained-format {}".format(
        shlex.quote(plan_pretrained()[0]), config["pretrain"]["format"]
    )


def attempt_mem(mb):
    """Memory request (MB) that grows with each attempt: a job killed for exceeding its
    memory is retried (see `retries:`) with twice the request."""
    return lambda wildcards, attempt: mb * attempt


def attempt(wildcards, attempt):
    """The attempt number, as the resource `attempt` that medtl_job reads."""
    return attempt


# Rules with `retries: 1` retry a failed job once, for what a second attempt can cure: a
# kill for memory (it then asks for twice the memory, attempt_mem), a time limit, a lost
# node. An error medtl reported (`medtl: error: ...`: a bad input or setting) would only
# repeat, so those rules run their command as `medtl_job ATTEMPT LOG COMMAND...`: it runs
# COMMAND with its output in LOG and, when it fails with a medtl error, keeps that log
# beside it (LOG.first-attempt: Snakemake deletes a job's log before each attempt); a
# second attempt then puts it back, adds that it was not retried, and stops at once.
# Snakemake itself retries whatever failed. Every job's shell starts with this prefix:
# bash's strict mode (Snakemake's default) and medtl_job.
shell.prefix(
    "set -euo pipefail; "
    "medtl_job() {{ local attempt=$1 log=$2 status=0; shift 2; "
    'local kept="$log.first-attempt"; '
    'if [ "$attempt" -gt 1 ] && [ -f "$kept" ]; then mv "$kept" "$log"; '
    "echo '[workflow] not retried: the first attempt stopped on the error above, which a "
    'second attempt would repeat. Fix it, then run the workflow again.\' >> "$log"; '
    "return 1; fi; "
    'rm -f "$kept"; "$@" > "$log" 2>&1 || status=$?; '
    'if [ "$status" -ne 0 ] && grep -qs \'^medtl: error:\' "$log"; then '
    'cp "$log" "$kept"; fi; return "$status"; }}; '
)


def launcher(wildcards):
    """What `{params.python} -m` starts: `medtl`, or torchrun starting one medtl process
    per GPU (PyTorch DDP) when the config gives training jobs more than one GPU."""
    n = config["gpus"]
    if n > 1:
        return f"torch.distributed.run --standalone --nproc-per-node {n} -m medtl"
    return "medtl"


def threads_per_process(wildcards, threads):
    """CPU threads of each training process: the job's threads shared among its GPUs."""
    return max(1, threads // max(1, config["gpus"]))


def gpu_resources():
    """The `gpu` resource of GPU rules, only when the config asks for GPUs."""
    return {"gpu": config["gpus"]} if config["gpus"] > 0 else {}


def target_source():
    """The target data set: the demo's case sheet, the user's path, or the DICOMweb cache."""
    kind = config["dataset"]["kind"]
    if kind == "demo":
        return f"{DEMO_DIR}/target/cases.tsv"
    if kind == "dicomweb":
        return config["dataset"]["dicomweb"]["cache"]
    return config["dataset"]["path"]  # set: medtl.checks refuses an empty one at start


def ingest_folder(path):
    """What ingest reads: the DICOMweb cache holding the pull record, or the input itself."""
    return parent(path) if path.endswith(".medtl-pull.json") else path


def target_input():
    """What ingest waits for: the source itself, or the record of the DICOMweb pull."""
    if config["dataset"]["kind"] == "dicomweb":
        return os.path.join(target_source(), ".medtl-pull.json")
    return target_source()


def pretrain_source(wildcards=None):
    """The labelled source set (a file the rule can depend on). Asked for only when a job
    needs it (pretraining without pretrain.checkpoint, or SSL with use_source), so that
    `source: null` with a checkpoint of your own is fine; medtl.checks refuses a missing
    source at start when pretraining needs one."""
    if DEMO and config["pretrain"]["source"] in (None, f"{DEMO_DIR}/source"):
        return f"{DEMO_DIR}/source/dataset.json"
    return config["pretrain"]["source"]


def ssl_manifests():
    """The image sets self-supervised pretraining learns from: the target, and the source."""
    manifests = ["results/ingest/manifest.tsv"]
    if config["pretrain_ssl"]["use_source"] and (DEMO or config["pretrain"]["source"]):
        manifests.append("results/pretrain/source/manifest.tsv")
    return manifests


def pretrained_checkpoint():
    """The weights file arms with init: pretrained start from."""
    return config["pretrain"]["checkpoint"] or "results/pretrain/checkpoint.pt"


def preprocessed(wildcards=None):
    """The folder of the preprocessed cases (`<case>.npz` of every labelled case)."""
    return "results/preprocess/cases"


def arm_weights(arm):
    """The weights file an arm starts from, or None for a random start."""
    init = config["arms"][arm]["init"]
    if init == "pretrained":
        return pretrained_checkpoint()
    if init == "ssl":
        return "results/pretrain_ssl/checkpoint.pt"
    return None


def pretrained_input(wildcards):
    weights = arm_weights(wildcards.arm)
    return [weights] if weights else []


def train_settings(wildcards):
    return as_json(
        {
            "model": config["model"],
            "train": config["train"],
            # Not `repeats`: asking for more seeds must not retrain the ones there are.
            "arm": {
                k: v for k, v in config["arms"][wildcards.arm].items() if k != "repeats"
            },
            "predict": config["predict"],
            "seed": int(wildcards.seed),
            "device": config["device"],
            "classes": config["classes"],
            "min_loaded_fraction": config["pretrain"]["min_loaded_fraction"],
            "max_unused_fraction": config["pretrain"]["max_unused_fraction"],
            "weights_format": (
                config["pretrain"]["format"]
                if config["pretrain"]["checkpoint"]
                else "medtl"
            ),
        }
    )


def pretrained_flag(wildcards):
    weights = arm_weights(wildcards.arm)
    return f"--pretrained {weights}" if weights else ""


def parent(path):
    """The folder of a file path (outputs name their folder through this, not by hand)."""
    return os.path.dirname(path)


# The domain-shift stage (pipeline/shift.smk): which weights, source and options.
def shift_encoder():
    """The weights the first arm with a pretrained start uses, and that arm's init; None."""
    for arm in ARMS:
        weights = arm_weights(arm)
        if weights:
            return weights, config["arms"][arm]["init"]
    return None


def shift_arms():
    """The arms that start from the weights the shift stage measures, sorted: the order of
    the config's arms must not make the rule's command differ (a rerun)."""
    weights = shift_encoder()[0]
    return sorted(arm for arm in ARMS if arm_weights(arm) == weights)


def shift_source():
    """The source manifest the encoder was pretrained on, and what it is; None without one.

    Supervised pretraining (no pretrain.checkpoint): its source set. Self-supervised with
    use_source: the source part of its pool (the target part is the target itself). An
    external checkpoint: its images are not here, so only the metadata is compared. None
    without a pretrained arm too (no shift stage)."""
    if not shift_encoder():
        return None
    weights, init = shift_encoder()
    own = "results/pretrain/source/manifest.tsv"
    if init == "pretrained" and not config["pretrain"]["checkpoint"]:
        return own, "supervised pretraining source"
    if init == "ssl" and own in ssl_manifests():
        return own, "source part of the self-supervised pool"
    return None


def shift_targets():
    """What the target `all` asks of this stage: the record, when an arm is pretrained."""
    return ["results/shift/shift.json"] if shift_encoder() else []


def shift_flags():
    """The command's options naming the arms the weights start, the source, the weights'
    format and their plan."""
    weights, init = shift_encoder()
    source = shift_source()
    flags = ["--arms", ",".join(shift_arms())]
    if source:
        flags += ["--source", source[0], "--source-name", shlex.quote(source[1])]
    if init == "pretrained" and config["pretrain"]["checkpoint"]:
        flags += ["--format", config["pretrain"]["format"]]
    else:  # medtl's own pretraining (supervised or SSL) runs on the target's plan
        flags += ["--format", "medtl", "--pretrained-with-plan"]
    return " ".join(flags)
