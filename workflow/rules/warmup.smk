# Warm-up: source-only, then adversarial training (or an imported checkpoint named in the scenario).


rule warmup:
    input:
        source=f"{RESULTS}/{{scenario}}/manifests/source.csv",
        target=f"{RESULTS}/{{scenario}}/manifests/target.csv",
        shared=shared_warmup,
    output:
        model=f"{RESULTS}/{{scenario}}/warmup/model.pt",
    params:
        hiast=HIAST,
        cfg=lambda w: hw.stage_json(RESOLVED[w.scenario], "warmup"),
        import_shared=lambda w, input: f"--copy-from {input.shared} " if input.shared else "",
        state=f"{RESULTS}/{{scenario}}/warmup/state",
        launch=launch("warmup"),
        spawn=spawn,
    log:
        f"{RESULTS}/{{scenario}}/logs/warmup.log",
    benchmark:
        f"{RESULTS}/{{scenario}}/benchmarks/warmup.tsv"
    # The warm-ups are the longest jobs: started first, they run beside other scenarios' rounds instead of
    # leaving a core idle at the end (default run: three 1-thread job slots on 2 cores, three scenarios). Their
    # manifests have the same priority (data.smk).
    priority: SETUP_PRIORITY
    threads: JOB_THREADS
    resources:
        gpu=1,
    conda:
        ENV
    shell:
        "{params.launch}{params.spawn}{params.hiast} warmup --config {params.cfg:q} --source-manifest {input.source} "
        "--target-manifest {input.target} {params.import_shared}--output {output.model} --state-dir {params.state} "
        "--threads {threads} > {log} 2>&1"


rule eval_warmup:
    input:
        model=f"{RESULTS}/{{scenario}}/warmup/model.pt",
        target=f"{RESULTS}/{{scenario}}/manifests/target.csv",
    output:
        f"{RESULTS}/{{scenario}}/warmup/eval.csv",
    params:
        hiast=HIAST,
        cfg=lambda w: hw.stage_json(RESOLVED[w.scenario], "eval"),
        masks=f"{RESULTS}/{{scenario}}/warmup/masks",
        launch=launch("eval"),
    log:
        f"{RESULTS}/{{scenario}}/logs/eval_warmup.log",
    benchmark:
        f"{RESULTS}/{{scenario}}/benchmarks/eval_warmup.tsv"
    threads: JOB_THREADS
    resources:
        gpu=1,
    conda:
        ENV
    shell:
        "{params.launch}{params.hiast} eval --config {params.cfg:q} --manifest {input.target} "
        "--model warmup={input.model} --output {output} --masks {params.masks} --threads {threads} > {log} 2>&1"
