# Stage 1: the built-in demo data set (only when dataset.kind is demo).


rule demo_data:
    output:
        sheet=f"{DEMO_DIR}/target/cases.tsv",
        source=f"{DEMO_DIR}/source/dataset.json",
    log:
        "logs/demo_data.log",
    benchmark:
        "results/benchmarks/demo_data.tsv"
    conda:
        "../envs/medtl.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        python=PYTHON,
        out=lambda wc, output: parent(parent(output.sheet)),
        seed=config["dataset"]["demo"]["seed"],
        n_source=config["dataset"]["demo"]["n_source"],
        n_patients=config["dataset"]["demo"]["n_patients"],
        shift=config["dataset"]["demo"]["shift"],
    shell:
        "{params.python} -m medtl demo-data --out {params.out} --seed {params.seed} "
        "--n-source {params.n_source} --n-patients {params.n_patients} --shift {params.shift} "
        "--quiet > {log} 2>&1"
