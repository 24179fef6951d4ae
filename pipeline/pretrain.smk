# Stage 5: supervised pretraining on the source set. Skipped when the config names
# a checkpoint of your own (pretrain.checkpoint).


rule pretrain:
    input:
        device="results/device.json",
        manifest="results/pretrain/source/manifest.tsv",
        plan="results/preprocess/plan.json",
    output:
        checkpoint="results/pretrain/checkpoint.pt",
        curves="results/pretrain/curves.csv",
    log:
        "logs/pretrain.log",
    benchmark:
        "results/benchmarks/pretrain.tsv"
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
        out=lambda wc, output: parent(output.checkpoint),
        settings=as_json(
            {
                "model": config["model"],
                "pretrain": config["pretrain"],
                "seed": config["seed"],
                "device": config["device"],
            }
        ),
    shell:
        "medtl_job {resources.attempt} {log:q} {params.python} -m {params.launch} pretrain "
        "--manifest {input.manifest} --plan {input.plan} --out {params.out} "
        "--threads {params.threads} --settings {params.settings:q}"


rule pretrain_ssl:
    input:
        device="results/device.json",
        manifests=ssl_manifests(),
        plan="results/preprocess/plan.json",
    output:
        checkpoint="results/pretrain_ssl/checkpoint.pt",
        curves="results/pretrain_ssl/curves.csv",
    log:
        "logs/pretrain_ssl.log",
    benchmark:
        "results/benchmarks/pretrain_ssl.tsv"
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
        out=lambda wc, output: parent(output.checkpoint),
        manifests=lambda wc, input: " ".join(f"--manifest {m}" for m in input.manifests),
        settings=as_json(
            {
                "model": config["model"],
                "pretrain_ssl": config["pretrain_ssl"],
                "seed": config["seed"],
                "device": config["device"],
            }
        ),
    shell:
        "medtl_job {resources.attempt} {log:q} {params.python} -m {params.launch} pretrain-ssl "
        "{params.manifests} --plan {input.plan} --out {params.out} "
        "--threads {params.threads} --settings {params.settings:q}"
