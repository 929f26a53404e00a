# Self-training rounds r = 1..R: pseudo-labels -> instance bank -> student and teacher -> evaluation.
# Round 1 starts from the warm-up; round r+1 labels with round r's teacher and trains from its student.


rule pseudo_shard:
    input:
        model=labeller,
        target=f"{RESULTS}/{{scenario}}/manifests/target.csv",
    output:
        temp(f"{RESULTS}/{{scenario}}/round_{{round}}/shards/model_outputs_{{shard}}.h5"),
    params:
        hiast=HIAST,
        cfg=lambda w: hw.stage_json(RESOLVED[w.scenario], "pseudo", int(w.round)),
        launch=launch("pseudo_labels"),
    log:
        f"{RESULTS}/{{scenario}}/logs/pseudo_shard_{{round}}_{{shard}}.log",
    benchmark:
        f"{RESULTS}/{{scenario}}/benchmarks/pseudo_shard_{{round}}_{{shard}}.tsv"
    threads: JOB_THREADS
    resources:
        gpu=1,
    conda:
        ENV
    shell:
        "{params.launch}{params.hiast} pseudo --config {params.cfg:q} --round {wildcards.round} --model {input.model} "
        "--manifest {input.target} --shard {wildcards.shard} --output {output} --threads {threads} > {log} 2>&1"


rule pseudo_labels:
    input:
        model=labeller,
        target=f"{RESULTS}/{{scenario}}/manifests/target.csv",
        shards=shard_outputs,
    output:
        f"{RESULTS}/{{scenario}}/round_{{round}}/pseudo_labels.h5",
    params:
        hiast=HIAST,
        cfg=lambda w: hw.stage_json(RESOLVED[w.scenario], "pseudo", int(w.round)),
        launch=launch("pseudo_labels"),
        from_shards=lambda w, input: f"--from-shards {' '.join(input.shards)} " if input.shards else "",
    log:
        f"{RESULTS}/{{scenario}}/logs/pseudo_labels_{{round}}.log",
    benchmark:
        f"{RESULTS}/{{scenario}}/benchmarks/pseudo_labels_{{round}}.tsv"
    threads: JOB_THREADS
    resources:
        gpu=1,
    conda:
        ENV
    shell:
        "{params.launch}{params.hiast} pseudo --config {params.cfg:q} --round {wildcards.round} --model {input.model} "
        "--manifest {input.target} {params.from_shards}--output {output} --threads {threads} > {log} 2>&1"


rule instance_bank:
    input:
        pseudo=f"{RESULTS}/{{scenario}}/round_{{round}}/pseudo_labels.h5",
        target=f"{RESULTS}/{{scenario}}/manifests/target.csv",
    output:
        f"{RESULTS}/{{scenario}}/round_{{round}}/instance_bank.h5",
    params:
        hiast=HIAST,
        cfg=lambda w: hw.stage_json(RESOLVED[w.scenario], "bank", int(w.round)),
    log:
        f"{RESULTS}/{{scenario}}/logs/instance_bank_{{round}}.log",
    benchmark:
        f"{RESULTS}/{{scenario}}/benchmarks/instance_bank_{{round}}.tsv"
    threads: 1
    conda:
        ENV
    shell:
        "{params.hiast} bank --config {params.cfg:q} --round {wildcards.round} --pseudo-labels {input.pseudo} "
        "--manifest {input.target} --output {output} > {log} 2>&1"


rule self_train:
    input:
        init=initial_student,
        pseudo=f"{RESULTS}/{{scenario}}/round_{{round}}/pseudo_labels.h5",
        bank=f"{RESULTS}/{{scenario}}/round_{{round}}/instance_bank.h5",
        target=f"{RESULTS}/{{scenario}}/manifests/target.csv",
        source=round_source,
    output:
        model=f"{RESULTS}/{{scenario}}/round_{{round}}/model.pt",
        teacher=f"{RESULTS}/{{scenario}}/round_{{round}}/teacher.pt",
    params:
        hiast=HIAST,
        cfg=lambda w: hw.stage_json(RESOLVED[w.scenario], "train", int(w.round)),
        state=f"{RESULTS}/{{scenario}}/round_{{round}}/state",
        launch=launch("self_train"),
        spawn=spawn,
        source=source_option,
    log:
        f"{RESULTS}/{{scenario}}/logs/self_train_{{round}}.log",
    benchmark:
        f"{RESULTS}/{{scenario}}/benchmarks/self_train_{{round}}.tsv"
    threads: JOB_THREADS
    resources:
        gpu=1,
    conda:
        ENV
    shell:
        "{params.launch}{params.spawn}{params.hiast} train --config {params.cfg:q} --round {wildcards.round} --init {input.init} "
        "--pseudo-labels {input.pseudo} --bank {input.bank} --manifest {input.target} {params.source}"
        "--output {output.model} --teacher-output {output.teacher} --state-dir {params.state} "
        "--threads {threads} > {log} 2>&1"


rule eval_round:
    input:
        model=f"{RESULTS}/{{scenario}}/round_{{round}}/model.pt",
        teacher=f"{RESULTS}/{{scenario}}/round_{{round}}/teacher.pt",
        target=f"{RESULTS}/{{scenario}}/manifests/target.csv",
    output:
        f"{RESULTS}/{{scenario}}/round_{{round}}/eval.csv",
    params:
        hiast=HIAST,
        cfg=lambda w: hw.stage_json(RESOLVED[w.scenario], "eval"),
        masks=f"{RESULTS}/{{scenario}}/round_{{round}}/masks",
        launch=launch("eval"),
    log:
        f"{RESULTS}/{{scenario}}/logs/eval_round_{{round}}.log",
    benchmark:
        f"{RESULTS}/{{scenario}}/benchmarks/eval_round_{{round}}.tsv"
    threads: JOB_THREADS
    resources:
        gpu=1,
    conda:
        ENV
    shell:
        "{params.launch}{params.hiast} eval --config {params.cfg:q} --manifest {input.target} "
        "--model student={input.model} --model teacher={input.teacher} --output {output} "
        "--masks {params.masks} --threads {threads} > {log} 2>&1"
