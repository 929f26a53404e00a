# The embedded benchmark and the manifests.


rule generate_synthetic:
    output:
        SYNTHETIC_MARKER,
    params:
        hiast=HIAST,
        root=lambda w, output: Path(output[0]).parent,
        args=hw.generate_args(SYNTHETIC),
    log:
        f"{RESULTS}/logs/generate_synthetic.log",
    benchmark:
        f"{RESULTS}/benchmarks/generate_synthetic.tsv"
    threads: SYNTHETIC.get("workers", 2)
    conda:
        ENV
    shell:
        "{params.hiast} generate --root {params.root} {params.args} > {log} 2>&1"


rule manifest:
    input:
        synthetic_input,
        shared=shared_manifest,
    output:
        f"{RESULTS}/{{scenario}}/manifests/{{side}}.csv",
    params:
        hiast=HIAST,
        data=lambda w: RESOLVED[w.scenario][w.side],
        splits=lambda w: hw.splits_of(RESOLVED[w.scenario][w.side]),
        reuse=lambda w, input: f"--copy-from {input.shared} " if input.shared else "",
    log:
        f"{RESULTS}/{{scenario}}/logs/manifest_{{side}}.log",
    benchmark:
        f"{RESULTS}/{{scenario}}/benchmarks/manifest_{{side}}.tsv"
    # Same priority as the warm-ups (warmup.smk): a priority does not reach a job's inputs, and a scenario
    # whose manifests wait behind other scenarios' rounds starts its warm-up last, alone on one core. The
    # other jobs' thread count too: a 2-thread job never finds 2 free cores while 1-thread jobs keep one busy.
    priority: SETUP_PRIORITY
    threads: JOB_THREADS
    conda:
        ENV
    shell:
        "{params.hiast} manifest {params.data[dataset]} {params.data[root]} {output} --splits {params.splits} "
        "{params.reuse}--workers {threads} > {log} 2>&1"
