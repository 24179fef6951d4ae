# Stage 8: metrics per case and class (Dice, IoU, HD95, ASSD, NSD, volume error, lesion
# detection), computed from the written masks. One job per arm and fold starts as soon as
# that fold's predictions exist, so evaluation never waits for the other arms' training.


rule evaluate_fold:
    input:
        manifest="results/ingest/manifest.tsv",
        folds="results/splits/folds.json",
        predictions="results/predictions/{arm}/fold{fold}",
    output:
        "results/evaluation/{arm}/fold{fold}.csv",
    log:
        "logs/evaluate/{arm}_fold{fold}.log",
    benchmark:
        "results/benchmarks/evaluate/{arm}_fold{fold}.tsv"
    conda:
        "../envs/medtl.yaml"
    threads: 2
    resources:
        mem_mb=4000,
    params:
        python=PYTHON,
        predictions=lambda wc, input: parent(parent(input.predictions)),
        classes=as_json(config["classes"]),
        settings=as_json(config["evaluate"]),
    shell:
        "{params.python} -m medtl evaluate --manifest {input.manifest} --folds {input.folds} "
        "--predictions {params.predictions} --arms {wildcards.arm} --fold {wildcards.fold} "
        "--classes {params.classes:q} --settings {params.settings:q} "
        "--out {output} --threads {threads} > {log} 2>&1"


rule evaluate:
    input:
        expand("results/evaluation/{arm}/fold{fold}.csv", arm=ARMS, fold=FOLDS),
    output:
        "results/evaluation/metrics.csv",
    log:
        "logs/evaluate.log",
    benchmark:
        "results/benchmarks/evaluate.tsv"
    conda:
        "../envs/medtl.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        python=PYTHON,
    shell:
        "{params.python} -m medtl evaluate-merge {input} --out {output} > {log} 2>&1"


# Post-processing chosen on each arm's cross-validation predictions (as nnU-Net does):
# keep the largest component, or drop small ones, only where that raises the CV Dice.
# `medtl predict` applies the decision.
rule postprocess:
    input:
        manifest="results/ingest/manifest.tsv",
        folds="results/splits/folds.json",
        predictions=expand("results/predictions/{{arm}}/fold{fold}", fold=FOLDS),
    output:
        "results/postprocess/{arm}.json",
    log:
        "logs/postprocess/{arm}.log",
    benchmark:
        "results/benchmarks/postprocess/{arm}.tsv"
    conda:
        "../envs/medtl.yaml"
    threads: 2
    resources:
        mem_mb=4000,
    params:
        python=PYTHON,
        predictions=lambda wc, input: parent(parent(input.predictions[0])),
        classes=as_json(config["classes"]),
        settings=as_json(config["postprocess"]),
    shell:
        "{params.python} -m medtl postprocess --manifest {input.manifest} --folds {input.folds} "
        "--predictions {params.predictions} --arm {wildcards.arm} "
        "--classes {params.classes:q} --settings {params.settings:q} "
        "--out {output} --threads {threads} > {log} 2>&1"
