# Stage 5b: the domain shift between the pretraining source and the target, measured
# before any arm trains (medtl shift, docs/domain-shift.md): acquisition, intensities after
# normalisation, labels, and the pretrained encoder's own view of both sets. Only when an
# arm starts from pretrained weights; the target `all` asks for it then.


if shift_encoder():

    rule shift:
        input:
            manifest="results/ingest/manifest.tsv",
            plan="results/preprocess/plan.json",
            checkpoint=shift_encoder()[0],
            source=[shift_source()[0]] if shift_source() else [],
        output:
            record="results/shift/shift.json",
            cases="results/shift/per_case.tsv",
        log:
            "logs/shift.log",
        benchmark:
            "results/benchmarks/shift.tsv"
        conda:
            "../envs/medtl.yaml"
        threads: 2
        resources:
            mem_mb=4000,
        params:
            python=PYTHON,
            out=lambda wc, output: parent(output.record),
            flags=shift_flags(),
            settings=as_json(config["shift"]),
            model=as_json(config["model"]),
            patch=",".join(
                str(p)
                for p in (
                    config["shift"]["patch_size"] or config["train"]["patch_size"]
                )
            ),
        shell:
            "{params.python} -m medtl shift --target {input.manifest} --plan {input.plan} "
            "--checkpoint {input.checkpoint} {params.flags} --model {params.model:q} "
            "--patch {params.patch} --settings {params.settings:q} --out {params.out} "
            "--threads {threads} > {log} 2>&1"
