# Stage 3: the preprocessing plan from the data set's fingerprint, then each case
# reoriented, cropped, resampled, normalised and cached.


rule plan:
    input:
        manifest="results/ingest/manifest.tsv",
    output:
        "results/preprocess/plan.json",
    log:
        "logs/plan.log",
    benchmark:
        "results/benchmarks/plan.tsv"
    retries: 1
    conda:
        "../envs/medtl.yaml"
    threads: 1
    resources:
        mem_mb=attempt_mem(4000),
    params:
        settings=as_json(config["preprocess"]),
        classes=as_json(config["classes"]),
    shell:
        "medtl plan --manifest {input.manifest} --out {output} "
        "--settings {params.settings:q} --classes {params.classes:q} > {log} 2>&1"


rule preprocess:
    input:
        manifest="results/ingest/manifest.tsv",
        plan="results/preprocess/plan.json",
    output:
        "results/preprocess/cases/{case}.npz",
    log:
        "logs/preprocess/{case}.log",
    benchmark:
        "results/benchmarks/preprocess/{case}.tsv"
    conda:
        "../envs/medtl.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    shell:
        "medtl preprocess --manifest {input.manifest} --plan {input.plan} "
        "--case {wildcards.case} --out {output} > {log} 2>&1"
