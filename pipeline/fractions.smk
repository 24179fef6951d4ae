# Label-fraction curves (optional, config key label_fractions): every arm is trained
# again, with each of its seeds, on nested, patient-grouped shares of each fold's training
# cases and evaluated on the same held-out cases; the 100 % point is the normal run's
# metrics.csv. Runs of a fraction live under results/fractions/frac<pct>/ in the layout of
# the normal runs (medtl.layout).
# The fractions themselves (LABEL_FRACTIONS) and the table of them (LABEL_FRACTION_TABLE,
# fraction_targets) are defined in common.smk.
from medtl.split.subsets import folder_fraction

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


# Training and prediction at a fraction are the normal run's rules (pipeline/train.smk,
# pipeline/predict.smk: same command, resources and retries) on the fold's subset of
# training cases, with outputs under FRACTION_ROOT and logs and benchmarks of their own.
use rule train as train_fraction with:
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


use rule predict_fold as predict_fraction with:
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
        LABEL_FRACTION_TABLE,
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
