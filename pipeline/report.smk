# Stage 9: the self-contained HTML report; its figures also go to `snakemake --report`.
# The domain-shift figure (first among the outputs) exists only when the shift stage
# measured per-case distances: an arm starts from pretrained weights with source images.


rule report:
    input:
        metrics="results/evaluation/metrics.csv",
        manifest="results/ingest/manifest.tsv",
        plan="results/preprocess/plan.json",
        folds="results/splits/folds.json",
        curves=every_run("train", "curves.csv"),
        postprocess=expand("results/postprocess/{arm}.json", arm=ARMS),
        trust=expand("results/trust/{arm}.json", arm=ARMS),
        fractions=fraction_targets(),
        shift=shift_targets(),
    output:
        **(
            {
                "shift_gain": report(
                    "results/report/figures/shift_gain.png",
                    caption="report/shift_gain.rst",
                    category="Domain shift",
                )
            }
            if shift_source()
            else {}
        ),
        html="results/report/report.html",
        summary="results/report/summary.json",
        dice=report(
            "results/report/figures/dice_boxplot.png",
            caption="report/dice_boxplot.rst",
            category="Evaluation",
        ),
        nsd=report(
            "results/report/figures/nsd_boxplot.png",
            caption="report/nsd_boxplot.rst",
            category="Evaluation",
        ),
        forest=report(
            "results/report/figures/difference_forest.png",
            caption="report/difference_forest.rst",
            category="Evaluation",
        ),
        spacing=report(
            "results/report/figures/spacing_histogram.png",
            caption="report/spacing_histogram.rst",
            category="Dataset",
        ),
        volumes=report(
            "results/report/figures/label_volumes.png",
            caption="report/label_volumes.rst",
            category="Dataset",
        ),
        tables=multiext(
            "results/report/tables/",
            "per_arm.csv",
            "comparisons.csv",
            "per_fold.csv",
            "per_case.csv",
        ),
        hd95=report(
            "results/report/figures/hd95_boxplot.png",
            caption="report/hd95_boxplot.rst",
            category="Evaluation",
        ),
        paired=report(
            "results/report/figures/paired_differences.png",
            caption="report/paired_differences.rst",
            category="Evaluation",
        ),
        curves=report(
            "results/report/figures/training_curves.png",
            caption="report/training_curves.rst",
            category="Training",
        ),
        seeds=report(
            "results/report/figures/seed_spread.png",
            caption="report/seed_spread.rst",
            category="Evaluation",
        ),
        overlays=report(
            "results/report/figures/overlays.png",
            caption="report/overlays.rst",
            category="Cases",
        ),
        reliability=report(
            "results/report/figures/reliability.png",
            caption="report/reliability.rst",
            category="Trust",
        ),
        risk_coverage=report(
            "results/report/figures/risk_coverage.png",
            caption="report/risk_coverage.rst",
            category="Trust",
        ),
    log:
        "logs/report.log",
    benchmark:
        "results/benchmarks/report.tsv"
    conda:
        "../envs/medtl.yaml"
    threads: 1
    resources:
        mem_mb=4000,
    params:
        python=PYTHON,
        results=lambda wc, input: parent(parent(input.metrics)),
        figures=lambda wc, output: parent(output.dice),
        # The hashing salt is a secret: it stays out of the report (and its command line).
        settings=as_json({k: v for k, v in config.items() if k != "salt"}),
    shell:
        "{params.python} -m medtl report --results {params.results} --out {output.html} --figures {params.figures} "
        "--summary {output.summary} --settings {params.settings:q} > {log} 2>&1"
