# Stage 4: K folds grouped by patient, written once and reused by every arm.


rule split:
    input:
        manifest="results/ingest/manifest.tsv",
    output:
        "results/splits/folds.json",
    log:
        "logs/split.log",
    benchmark:
        "results/benchmarks/split.tsv"
    conda:
        "../envs/medtl.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    params:
        python=PYTHON,
        folds=config["splits"]["folds"],
        seed=config["splits"]["seed"],
        val_fraction=config["splits"]["val_fraction"],
    shell:
        "{params.python} -m medtl split --manifest {input.manifest} --out {output} --folds {params.folds} "
        "--seed {params.seed} --val-fraction {params.val_fraction} > {log} 2>&1"
