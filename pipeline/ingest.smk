# Stage 2: ingest. Finds the cases (DICOM series with RTSTRUCT / DICOM-SEG labels,
# NIfTI / nnU-Net / MSD folders, a case sheet), converts them to NIfTI and lists them in
# manifest.tsv. A plain rule: later stages take the preprocessed folder as a whole, so the
# DAG never waits on the case list (no checkpoint).


rule pull_dicomweb:
    output:
        os.path.join(config["dataset"]["dicomweb"]["cache"], ".medtl-pull.json"),
    log:
        "logs/pull_dicomweb.log",
    benchmark:
        "results/benchmarks/pull_dicomweb.tsv"
    conda:
        "../envs/medtl.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        python=PYTHON,
        query=as_json(config["dataset"]["dicomweb"]),
        cache=lambda wc, output: parent(output[0]),
    shell:
        "{params.python} -m medtl pull --settings {params.query:q} --cache {params.cache:q} > {log} 2>&1"


rule ingest:
    input:
        target_input(),
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
        python=PYTHON,
        source=lambda wc, input: ingest_folder(input[0]),
        out=lambda wc, output: parent(output.manifest),
        salt=config["salt"],
        modality=config["dataset"]["modality"],
        classes=as_json(config["classes"]),
        synonyms=as_json(config["dataset"]["label_synonyms"]),
        workers=config["dataset"]["workers"],
    shell:
        "{params.python} -m medtl ingest {params.source:q} --out {params.out} --salt {params.salt:q} "
        "--modality {params.modality} --classes {params.classes:q} "
        "--synonyms {params.synonyms:q} --workers {params.workers} --quiet > {log} 2>&1"


rule ingest_source:
    input:
        pretrain_source,
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
        python=PYTHON,
        source=lambda wc, input: (
            os.path.dirname(input[0])
            if input[0].endswith("dataset.json")
            else input[0]
        ),
        out=lambda wc, output: parent(output.manifest),
        salt=config["salt"],
        modality=config["dataset"]["modality"],
    shell:
        "{params.python} -m medtl ingest {params.source:q} --out {params.out} --salt {params.salt:q} "
        "--modality {params.modality} --quiet > {log} 2>&1"
