# Stage 5b: the domain shift between the pretraining source and the target, measured
# before any arm trains (medtl shift, docs/domain-shift.md): acquisition, intensities after
# normalisation, labels, and the pretrained encoder's own view of both sets. Only when an
# arm starts from pretrained weights; the target `all` asks for it then.


def shift_encoder():
    """The weights the first arm with a pretrained start uses, and that arm's init; None."""
    for arm in ARMS:
        weights = arm_weights(arm)
        if weights:
            return weights, config["arms"][arm]["init"]
    return None


def shift_source():
    """The source manifest the encoder was pretrained on, and what it is; None without one.

    Supervised pretraining (no pretrain.checkpoint): its source set. Self-supervised with
    use_source: the source part of its pool (the target part is the target itself). An
    external checkpoint: its images are not here, so only the metadata is compared."""
    weights, init = shift_encoder()
    own = "results/pretrain/source/manifest.tsv"
    if init == "pretrained" and not config["pretrain"]["checkpoint"]:
        return own, "supervised pretraining source"
    if init == "ssl" and own in ssl_manifests():
        return own, "source part of the self-supervised pool"
    return None


def shift_targets():
    """What the target `all` asks of this stage: the record, when an arm is pretrained."""
    return ["results/shift/shift.json"] if shift_encoder() else []


def shift_flags():
    """The command's options naming the source, the weights' format and their plan."""
    weights, init = shift_encoder()
    source = shift_source()
    flags = []
    if source:
        flags += ["--source", source[0], "--source-name", shlex.quote(source[1])]
    if init == "pretrained" and config["pretrain"]["checkpoint"]:
        flags += ["--format", config["pretrain"]["format"]]
    else:  # medtl's own pretraining (supervised or SSL) runs on the target's plan
        flags += ["--format", "medtl", "--pretrained-with-plan"]
    return " ".join(flags)


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
