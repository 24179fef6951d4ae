# Stage 8: Dice and HD95 (mm) per case and class, computed from the written masks.


rule evaluate:
    input:
        manifest="results/ingest/manifest.tsv",
        folds="results/splits/folds.json",
        predictions=expand("results/predictions/{arm}/fold{fold}", arm=ARMS, fold=FOLDS),
    output:
        "results/evaluation/metrics.csv",
    log:
        "logs/evaluate.log",
    benchmark:
        "results/benchmarks/evaluate.tsv"
    conda:
        "../envs/medtl.yaml"
    threads: 2
    resources:
        mem_mb=4000,
    params:
        predictions=lambda wc, input: parent(parent(input.predictions[0])),
        arms=",".join(ARMS),
        classes=as_json(config["classes"]),
    shell:
        "medtl evaluate --manifest {input.manifest} --folds {input.folds} "
        "--predictions {params.predictions} --arms {params.arms} --classes {params.classes:q} "
        "--out {output} --threads {threads} > {log} 2>&1"
