# Stage 5: supervised pretraining on the source set. Skipped when the config names
# a checkpoint of your own (pretrain.checkpoint).


rule pretrain:
    input:
        manifest="results/pretrain/source/manifest.tsv",
        plan="results/preprocess/plan.json",
    output:
        checkpoint="results/pretrain/checkpoint.pt",
        curves="results/pretrain/curves.csv",
    params:
        settings=as_json(
            {
                "model": config["model"],
                "pretrain": config["pretrain"],
                "seed": config["seed"],
                "device": config["device"],
            }
        ),
    log:
        "logs/pretrain.log",
    benchmark:
        "results/benchmarks/pretrain.tsv"
    threads: config["threads"]
    resources:
        mem_mb=8000,
        runtime=240,
        **gpu_resources(),
    shell:
        "medtl pretrain --manifest {input.manifest} --plan {input.plan} "
        "--out results/pretrain --settings {params.settings:q} --threads {threads} "
        "> {log} 2>&1"
