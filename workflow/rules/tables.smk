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
