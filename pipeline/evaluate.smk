# Stage 8: metrics per case and class (Dice, IoU, HD95, ASSD, NSD, volume error, lesion
# detection), computed from the written masks. One job per training run starts as soon as
# its predictions exist, so evaluation never waits for the other arms' training.


rule evaluate_fold:
    input:
        manifest="results/ingest/manifest.tsv",
        folds="results/splits/folds.json",
        predictions=run_path("predictions"),
    output:
        run_path("evaluation"),
    log:
        "logs/evaluate/{arm}_seed{seed}_fold{fold}.log",
    benchmark:
        "results/benchmarks/evaluate/{arm}_seed{seed}_fold{fold}.tsv"
    conda:
        "../envs/medtl.yaml"
    threads: 2
    resources:
        mem_mb=4000,
    params:
        python=PYTHON,
        predictions=lambda wc, input: parent(parent(parent(input.predictions))),
        classes=as_json(config["classes"]),
        settings=as_json(config["evaluate"]),
    shell:
        "{params.python} -m medtl evaluate --manifest {input.manifest} --folds {input.folds} "
        "--predictions {params.predictions} --arms {wildcards.arm} --seed {wildcards.seed} "
        "--fold {wildcards.fold} "
        "--classes {params.classes:q} --settings {params.settings:q} "
        "--out {output} --threads {threads} > {log} 2>&1"


rule evaluate:
    input:
        every_run("evaluation"),
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
        predictions=lambda wc: every_run("predictions", arms=[wc.arm]),
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
        predictions=lambda wc, input: parent(parent(parent(input.predictions[0]))),
        classes=as_json(config["classes"]),
        settings=as_json(config["postprocess"]),
        seeds=lambda wc: ",".join(str(s) for s in SEEDS[wc.arm]),
    shell:
        "{params.python} -m medtl postprocess --manifest {input.manifest} --folds {input.folds} "
        "--predictions {params.predictions} --arm {wildcards.arm} --seeds {params.seeds} "
        "--classes {params.classes:q} --settings {params.settings:q} "
        "--out {output} --threads {threads} > {log} 2>&1"


# Calibration and failure flags, fitted on each arm's cross-validation predictions: the
# temperature that calibrates its probabilities, and which per-case uncertainty score best
# predicts a Dice below trust.bad_dice, with its threshold. `medtl predict` applies both.
rule trust:
    input:
        predictions=lambda wc: every_run("predictions", arms=[wc.arm]),
        evaluation=lambda wc: every_run("evaluation", arms=[wc.arm]),
    output:
        "results/trust/{arm}.json",
    log:
        "logs/trust/{arm}.log",
    benchmark:
        "results/benchmarks/trust/{arm}.tsv"
    conda:
        "../envs/medtl.yaml"
    threads: 1
    resources:
        mem_mb=4000,
    params:
        python=PYTHON,
        results=lambda wc, output: parent(parent(output[0])),
        settings=as_json(config["trust"]),
        seeds=lambda wc: ",".join(str(s) for s in SEEDS[wc.arm]),
    shell:
        "{params.python} -m medtl trust --results {params.results} --arm {wildcards.arm} "
        "--seeds {params.seeds} --settings {params.settings:q} --out {output} > {log} 2>&1"
