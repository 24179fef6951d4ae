# Stage 8: Dice and HD95 (mm) per case and class, computed from the written masks.


rule evaluate:
    input:
        manifest="results/ingest/manifest.tsv",
        folds="results/splits/folds.json",
        predictions=expand("results/predictions/{arm}/fold{fold}", arm=ARMS, fold=FOLDS),
    output:
        "results/evaluation/metrics.csv",
    params:
        arms=",".join(ARMS),
        classes=as_json(config["classes"]),
    log:
        "logs/evaluate.log",
    benchmark:
        "results/benchmarks/evaluate.tsv"
    threads: 2
    resources:
        mem_mb=4000,
    shell:
        "medtl evaluate --manifest {input.manifest} --folds {input.folds} "
        "--predictions results/predictions --arms {params.arms} --classes {params.classes:q} "
        "--out {output} --threads {threads} > {log} 2>&1"
