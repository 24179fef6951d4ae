# Stage 7: each training run's model segments its fold's held-out cases; masks are written in the
# original image space (preprocessing inverted). Beside them: each case's uncertainty scores and
# the voxels calibration is fitted on (read by the trust rule), and the model's size and memory.


rule predict_fold:
    input:
        device="results/device.json",
        model=run_path("train", "best.pt"),
        folds="results/splits/folds.json",
        cases=preprocessed,
    output:
        directory(run_path("predictions")),
    log:
        "logs/predict/{arm}_seed{seed}_fold{fold}.log",
    benchmark:
        "results/benchmarks/predict/{arm}_seed{seed}_fold{fold}.tsv"
    retries: 1
    conda:
        "../envs/medtl.yaml"
    threads: config["threads"]
    resources:
        **gpu_resources(),
        mem_mb=attempt_mem(8000),
        runtime=60,
        attempt=attempt,
    params:
        python=PYTHON,
        settings=as_json(config["predict"]),
        trust=as_json(config["trust"]),
        run=lambda wc, input: parent(input.model),
        cases=lambda wc, input: input.cases,
        device=config["device"],
    shell:
        "medtl_job {resources.attempt} {log:q} {params.python} -m medtl predict-fold "
        "--run {params.run} --folds {input.folds} --fold {wildcards.fold} "
        "--cases {params.cases} --out {output} --settings {params.settings:q} "
        "--trust {params.trust:q} --device {params.device} --threads {threads}"
