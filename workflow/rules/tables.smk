# Results tables: per scenario (warm-up and each round) and across scenarios.


rule scenario_summary:
    input:
        warmup=f"{RESULTS}/{{scenario}}/warmup/eval.csv",
        rounds=lambda w: [f"{RESULTS}/{w.scenario}/round_{r}/eval.csv" for r in range(1, ROUNDS[w.scenario] + 1)],
    output:
        f"{RESULTS}/{{scenario}}/summary.csv",
    params:
        hiast=HIAST,
        cfg=lambda w: hw.stage_json(RESOLVED[w.scenario], "eval"),
    log:
        f"{RESULTS}/{{scenario}}/logs/summary.log",
    conda:
        ENV
    shell:
        "{params.hiast} summary --config {params.cfg:q} --warmup {input.warmup} --rounds {input.rounds} "
        "--output {output} > {log} 2>&1"


rule results_table:
    input:
        expand(f"{RESULTS}/{{scenario}}/summary.csv", scenario=list(SCENARIOS)),
    output:
        f"{RESULTS}/summary.md",
    params:
        hiast=HIAST,
    log:
        f"{RESULTS}/logs/results_table.log",
    conda:
        ENV
    shell:
        "{params.hiast} table {input} --output {output} > {log} 2>&1"


rule oracle:
    input:
        target=f"{RESULTS}/{{scenario}}/manifests/target.csv",
    output:
        model=f"{RESULTS}/{{scenario}}/oracle/model.pt",
        eval=f"{RESULTS}/{{scenario}}/oracle/eval.csv",
    params:
        hiast=HIAST,
        cfg=lambda w: hw.stage_json(RESOLVED[w.scenario], "oracle"),
        state=f"{RESULTS}/{{scenario}}/oracle/state",
        launch=launch("warmup"),
        spawn=spawn,
    log:
        f"{RESULTS}/{{scenario}}/logs/oracle.log",
    benchmark:
        f"{RESULTS}/{{scenario}}/benchmarks/oracle.tsv"
    threads: JOB_THREADS
    resources:
        gpu=1,
    conda:
        ENV
    shell:
        "{params.launch}{params.spawn}{params.hiast} oracle --config {params.cfg:q} --manifest {input.target} "
        "--output {output.model} --eval-output {output.eval} --state-dir {params.state} --threads {threads} "
        "> {log} 2>&1"


rule experiments_table:
    input:
        summaries=expand(f"{RESULTS}/{{scenario}}/summary.csv", scenario=list(SCENARIOS)),
        oracles=expand(f"{RESULTS}/{{scenario}}/oracle/eval.csv", scenario=ORACLE_RUNS),
    output:
        f"{RESULTS}/experiments.md",
    params:
        hiast=HIAST,
        oracles=" ".join(f"--oracle {name}={RESULTS}/{name}/oracle/eval.csv" for name in ORACLE_RUNS),
    log:
        f"{RESULTS}/logs/experiments_table.log",
    conda:
        ENV
    shell:
        "{params.hiast} experiments {input.summaries} {params.oracles} --output {output} > {log} 2>&1"
