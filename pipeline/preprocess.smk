# Stage 3: the preprocessing plan from the data set's fingerprint, then every case
# reoriented, cropped, resampled, normalised and cached.


rule plan:
    input:
        manifest="results/ingest/manifest.tsv",
        pretrained=plan_pretrained(),
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
        attempt=attempt,
    params:
        python=PYTHON,
        settings=plan_settings(),
        classes=as_json(config["classes"]),
        pretrained=plan_pretrained_flags(),
    shell:
        "medtl_job {resources.attempt} {log:q} {params.python} -m medtl plan "
        "--manifest {input.manifest} --out {output} --settings {params.settings:q} "
        "--classes {params.classes:q} {params.pretrained}"


# One job for all cases: starting Python and PyTorch costs seconds, a case a fraction of
# one, so the cases share one start and run in parallel inside it (preprocess.workers).
# The output is the folder: the case list is known only after ingest.
rule preprocess:
    input:
        manifest="results/ingest/manifest.tsv",
        plan="results/preprocess/plan.json",
    output:
        directory("results/preprocess/cases"),
    log:
        "logs/preprocess.log",
    benchmark:
        "results/benchmarks/preprocess.tsv"
    retries: 1
    conda:
        "../envs/medtl.yaml"
    threads: config["preprocess"]["workers"]
    resources:
        mem_mb=lambda wildcards, threads, attempt: 2000 * threads * attempt,
        attempt=attempt,
    params:
        python=PYTHON,
    shell:
        "medtl_job {resources.attempt} {log:q} {params.python} -m medtl preprocess "
        "--manifest {input.manifest} --plan {input.plan} --out-dir {output} "
        "--workers {threads} --labelled-only --quiet"
