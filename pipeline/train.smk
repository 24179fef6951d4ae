# Stage 6: one training job per (arm, fold), all with the same budget, data and
# augmentation; arms differ only in initialisation, freezing and encoder learning rate.


def uses_pretrained(arm):
    return config["arms"][arm]["init"] == "pretrained"


def pretrained_input(wildcards):
    return [pretrained_checkpoint()] if uses_pretrained(wildcards.arm) else []


def train_settings(wildcards):
    return as_json(
        {
            "model": config["model"],
            "train": config["train"],
            "arm": config["arms"][wildcards.arm],
            "predict": config["predict"],
            "seed": config["seed"],
            "device": config["device"],
            "classes": config["classes"],
            "min_loaded_fraction": config["pretrain"]["min_loaded_fraction"],
        }
    )


def pretrained_flag(wildcards):
    return f"--pretrained {pretrained_checkpoint()}" if uses_pretrained(wildcards.arm) else ""


rule train:
    input:
        folds="results/splits/folds.json",
        cases=preprocessed,
        pretrained=pretrained_input,
    output:
        model="results/train/{arm}/fold{fold}/best.pt",
        curves="results/train/{arm}/fold{fold}/curves.csv",
    params:
        settings=train_settings,
        pretrained=pretrained_flag,
        out="results/train/{arm}/fold{fold}",
    log:
        "logs/train/{arm}_fold{fold}.log",
    benchmark:
        "results/benchmarks/train/{arm}_fold{fold}.tsv"
    threads: config["threads"]
    resources:
        mem_mb=8000,
        runtime=240,
        **gpu_resources(),
    shell:
        "medtl train --arm {wildcards.arm} --fold {wildcards.fold} --folds {input.folds} "
        "--cases results/preprocess/cases --out {params.out} --settings {params.settings:q} "
        "{params.pretrained} --threads {threads} > {log} 2>&1"
