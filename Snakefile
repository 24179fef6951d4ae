# medtl: medical-image segmentation by transfer learning.
# Run with `make run`, or `snakemake --profile profiles/local`.
from snakemake.utils import min_version

from medtl.config import validate_config

min_version("9.0")


configfile: "config/config.yaml"


validate_config(config, workflow.source_path("pipeline/schemas/config.schema.yaml"))


report: "pipeline/report/workflow.rst"


include: "pipeline/common.smk"
include: "pipeline/device.smk"
include: "pipeline/demo.smk"
include: "pipeline/ingest.smk"
include: "pipeline/preprocess.smk"
include: "pipeline/split.smk"
include: "pipeline/pretrain.smk"
include: "pipeline/train.smk"
include: "pipeline/predict.smk"
include: "pipeline/evaluate.smk"
include: "pipeline/fractions.smk"
include: "pipeline/report.smk"


rule all:
    input:
        "results/report/report.html",
        FRACTION_TARGETS,
