# medtl: medical-image segmentation by transfer learning.
# Run with `make run`, or `snakemake --profile profiles/local`.
from snakemake.utils import min_version

from medtl.checks import check_workflow_config, stop_on_error

min_version("9.0")


# The project's config, unless you name your own with --configfile: yours then replaces
# it whole (keys it leaves out take the schema's defaults; arms never add up).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


# Every key against the schema, then every check that spans several keys (arms, patch
# sizes, the data and the weights they need), before any job runs.
with stop_on_error():
    check_workflow_config(
        config,
        workflow.source_path("pipeline/schemas/config.schema.yaml"),
        sources=[
            *workflow.configfiles,
            *(["--config"] if workflow.config_settings.config else []),
        ],
        read_checkpoint=workflow.is_main_process,
    )


report: "pipeline/report/workflow.rst"


include: "pipeline/common.smk"
include: "pipeline/device.smk"
include: "pipeline/demo.smk"
include: "pipeline/ingest.smk"
include: "pipeline/preprocess.smk"
include: "pipeline/split.smk"
include: "pipeline/pretrain.smk"
include: "pipeline/shift.smk"
include: "pipeline/train.smk"
include: "pipeline/predict.smk"
include: "pipeline/evaluate.smk"
include: "pipeline/fractions.smk"
include: "pipeline/report.smk"


rule all:
    input:
        "results/report/report.html",
        fraction_targets(),
        shift_targets(),
