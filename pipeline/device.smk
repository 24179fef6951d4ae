# Stage 0: check, on the kind of node the GPU jobs get, that the device the config asks
# for exists, before any data is processed. Every GPU rule waits for it, so a config that
# asks for CUDA on a machine without it fails at the start, not after an hour.


rule check_device:
    output:
        "results/device.json",
    log:
        "logs/check_device.log",
    conda:
        "../envs/medtl.yaml"
    threads: 1
    resources:
        **gpu_resources(),
        mem_mb=2000,
        runtime=10,
    params:
        python=PYTHON,
        device=config["device"],
        gpus=config["gpus"],
    shell:
        "{params.python} -m medtl check-device --device {params.device} --gpus {params.gpus} --out {output} "
        "> {log} 2>&1"
