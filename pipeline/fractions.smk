# Label-fraction curves (optional, config key label_fractions): every arm is trained
# again, with each of its seeds, on nested, patient-grouped shares of each fold's training
# cases and evaluated on the same held-out cases; the 100 % point is the normal run's
# metrics.csv. Runs of a fraction live under results/fractions/frac<pct>/ in the layout of
# the normal runs (medtl.layout).
from medtl.split.subsets import folder_fraction, fraction_folders

# Whole percent (folder frac<pct>) → fraction, for the configured fractions below 1.
LABEL_FRACTIONS = fraction_folders(config.get("label_fractions"))
FRACTION_PCTS = list(LABEL_FRACTIONS)


wildcard_constraints:
    pct=r"\d+",


# The root of one fraction's runs (train/, predictions/ as under results/).
FRACTION_ROOT = "results/fractions/frac{pct}"
# The arms trained at each fraction (label_fraction_arms; all by default), each with the
# first label_fraction_seeds of its seeds (all by default).
FRACTION_ARMS = config.get("label_fraction_arms") or ARMS
FRACTION_SEEDS = {
    arm: SEEDS[arm][: config.get("label_fraction_seeds") or None]
    for arm in FRACTION_ARMS
}


rule subset_folds:
    input:
        folds="results/splits/folds.json",
    output:
        "results/fractions/frac{pct}/fold{fold}/folds.json",
    log:
        "logs/fractions/subset/frac{pct}_fold{fold}.log",
    benchmark:
        "results/benchmarks/subset_folds/frac{pct}_fold{fold}.tsv"
    conda:
        "../envs/medtl.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    params:
        python=PYTHON,
        fraction=lambda wc: folder_fraction(LABEL_FRACTIONS, wc.pct),
        seed=config["splits"]["seed"],
    shell:
        "{params.python} -m medtl subset --folds {input.folds} --fold {wildcards.fold} "
        "--fraction {params.fraction} --seed {params.seed} --out {output} > {log} 2>&1"


rule train_fraction:
    input:
        device="results/device.json",
        folds="results/fractions/frac{pct}/fold{fold}/folds.json",
        cases=preprocessed,
        pretrained=pretrained_input,
    output:
        model=run_path("train", "best.pt", root=FRACTION_ROOT),
        curves=run_path("train", "curves.csv", root=FRACTION_ROOT),
    log:
        "logs/fractions/train/frac{pct}_{arm}_seed{seed}_fold{fold}.log",
    benchmark:
        "results/benchmarks/train_fraction/frac{pct}_{arm}_seed{seed}_fold{fold}.tsv"
    retries: 1
    conda:
        "../envs/medtl.yaml"
    threads: config["threads"]
    resources:
        **gpu_resources(),
        mem_mb=attempt_mem(8000),
        runtime=240,
        attempt=attempt,
    params:
        python=PYTHON,
        launch=launcher,
        threads=threads_per_process,
        settings=train_settings,
        pretrained=pretrained_flag,
        out=lambda wc, output: parent(output.model),
        cases=lambda wc, input: input.cases,
    shell:
        "medtl_job {resources.attempt} {log:q} {params.python} -m {params.launch} train "
        "--arm {wildcards.arm} --fold {wildcards.fold} --folds {input.folds} "
        "--cases {params.cases} --out {params.out} "
        "--threads {params.threads} {params.pretrained} --settings {params.settings:q}"


rule predict_fraction:
    input:
        device="results/device.json",
        model=run_path("train", "best.pt", root=FRACTION_ROOT),
        folds="results/fractions/frac{pct}/fold{fold}/folds.json",
        cases=preprocessed,
    output:
        directory(run_path("predictions", root=FRACTION_ROOT)),
    log:
        "logs/fractions/predict/frac{pct}_{arm}_seed{seed}_fold{fold}.log",
    benchmark:
        "results/benchmarks/predict_fraction/frac{pct}_{arm}_seed{seed}_fold{fold}.tsv"
    retries: 1
    conda:
        "../envs/medtl.yaml"
    threads: config["threads"]
    resources:
        **gpu_resources(),
        mem_mb=attempt_mem(8000),
        runtime=60,
        attempt=attempt,
    params:
        python=PYTHON,
        settings=as_json(config["predict"]),
        run=lambda wc, input: parent(input.model),
        cases=lambda wc, input: input.cases,
        device=config["device"],
    shell:
        "medtl_job {resources.attempt} {log:q} {params.python} -m medtl predict-fold "
        "--run {params.run} --folds {input.folds} --fold {wildcards.fold} "
        "--cases {params.cases} --out {output} --settings {params.settings:q} "
        "--device {params.device} --threads {threads}"


rule evaluate_fractions:
    input:
        manifest="results/ingest/manifest.tsv",
        folds="results/splits/folds.json",
        full="results/evaluation/metrics.csv",
        subsets=expand(
            "results/fractions/frac{pct}/fold{fold}/folds.json",
            pct=FRACTION_PCTS,
            fold=FOLDS,
        ),
        predictions=[
            path
            for pct in FRACTION_PCTS
            for arm in FRACTION_ARMS
            for seed in FRACTION_SEEDS[arm]
            for fold in FOLDS
            for path in [
                run_path(
                    "predictions",
                    root=f"results/fractions/frac{pct}",
                    arm=arm,
                    seed=seed,
                    fold=fold,
                )
            ]
        ],
    output:
        "results/evaluation/label_fraction.csv",
    log:
        "logs/evaluate_fractions.log",
    benchmark:
        "results/benchmarks/evaluate_fractions.tsv"
    retries: 1
    conda:
        "../envs/medtl.yaml"
    threads: 2
    resources:
        mem_mb=attempt_mem(4000),
        attempt=attempt,
    params:
        python=PYTHON,
        # The folder holding frac<pct>/: three levels above a subset folds file.
        root=lambda wc, input: (
            parent(parent(parent(input.subsets[0]))) if input.subsets else "."
        ),
        fractions=",".join(str(f) for f in LABEL_FRACTIONS.values()),
        arms=",".join(FRACTION_ARMS),
        seeds=as_json(FRACTION_SEEDS),
        classes=as_json(config["classes"]),
    shell:
        "medtl_job {resources.attempt} {log:q} {params.python} -m medtl evaluate-fractions "
        "--manifest {input.manifest} --folds {input.folds} --fractions-root {params.root} "
        "--full-metrics {input.full} --fractions {params.fractions:q} --arms {params.arms} "
        "--seeds {params.seeds:q} "
        "--classes {params.classes:q} --out {output} --threads {threads}"


# What `rule all` and the report ask for: the label-fraction table, when configured.
FRACTION_TARGETS = list(rules.evaluate_fractions.output) if LABEL_FRACTIONS else []
