# Stage 6: one training job per (arm, seed, fold), all with the same budget, data and
# augmentation; arms differ only in initialisation, freezing and encoder learning rate.
# Seed s draws the same batch order and augmentation for every arm (common random
# numbers), so arm differences are paired within a seed.


rule train:
    input:
        device="results/device.json",
        folds="results/splits/folds.json",
        cases=preprocessed,
        pretrained=pretrained_input,
    output:
        model=run_path("train", "best.pt"),
        curves=run_path("train", "curves.csv"),
    log:
        "logs/train/{arm}_seed{seed}_fold{fold}.log",
    benchmark:
        "results/benchmarks/train/{arm}_seed{seed}_fold{fold}.tsv"
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
