# Stage 2: ingest. Finds the cases (DICOM series, NIfTI pairs, case sheet), converts
# them to NIfTI and lists them; a checkpoint, so later stages fan out over the cases.


checkpoint ingest:
    input:
        target_source(),
    output:
        manifest="results/ingest/manifest.tsv",
        rejected="results/ingest/rejected.tsv",
    log:
        "logs/ingest.log",
    benchmark:
        "results/benchmarks/ingest.tsv"
    conda:
        "../envs/medtl.yaml"
    threads: 1
    resources:
        mem_mb=4000,
    params:
        out=lambda wc, output: parent(output.manifest),
        salt=config["salt"],
        modality=config["dataset"]["modality"],
    shell:
        "medtl ingest {input:q} --out {params.out} --salt {params.salt:q} "
        "--modality {params.modality} --quiet > {log} 2>&1"


rule ingest_source:
    input:
        pretrain_source(),
    output:
        manifest="results/pretrain/source/manifest.tsv",
        rejected="results/pretrain/source/rejected.tsv",
    log:
        "logs/ingest_source.log",
    benchmark:
        "results/benchmarks/ingest_source.tsv"
    conda:
        "../envs/medtl.yaml"
    threads: 1
    resources:
        mem_mb=4000,
    params:
        source=lambda wc, input: (
            os.path.dirname(input[0])
            if input[0].endswith("dataset.json")
            else input[0]
        ),
        out=lambda wc, output: parent(output.manifest),
        salt=config["salt"],
        modality=config["dataset"]["modality"],
    shell:
        "medtl ingest {params.source:q} --out {params.out} --salt {params.salt:q} "
        "--modality {params.modality} --quiet > {log} 2>&1"
