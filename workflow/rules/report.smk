# Figures of the HTML report (`snakemake --report report.html`): one light, local rule per plot kind and
# scenario (the example grids: per round), each calling `python -m hiast.report KIND` (hiast/report.py),
# writing PNGs under results/<scenario>/report/. The report files them in one category per scenario.

# Every figure of every scenario (rule all asks for them, so that --report finds them).
REPORT_FILES = [
    f"{RESULTS}/{scenario}/report/{name}"
    for scenario in SCENARIOS
    for name in ["miou_by_round.png", "per_class_iou.png", "thresholds.png", "pseudo_labels.png"]
    + [f"examples_round_{r}.png" for r in range(1, ROUNDS[scenario] + 1)]
]


rule report_miou:
    input:
        f"{RESULTS}/{{scenario}}/summary.csv",
    output:
        report(
            f"{RESULTS}/{{scenario}}/report/miou_by_round.png",
            caption="../report/miou_by_round.rst",
            category="{scenario}",
            subcategory="1. results",
            labels={"figure": "mIoU by round"},
        ),
    params:
        python=sys.executable,
    log:
        f"{RESULTS}/{{scenario}}/logs/report_miou.log",
    localrule: True
    conda:
        ENV
    shell:
        "{params.python} -m hiast.report miou --summary {input} --output {output} > {log} 2>&1"


rule report_per_class:
    input:
        f"{RESULTS}/{{scenario}}/summary.csv",
    output:
        report(
            f"{RESULTS}/{{scenario}}/report/per_class_iou.png",
            caption="../report/per_class_iou.rst",
            category="{scenario}",
            subcategory="1. results",
            labels={"figure": "per-class IoU, warm-up vs final"},
        ),
    params:
        python=sys.executable,
    log:
        f"{RESULTS}/{{scenario}}/logs/report_per_class.log",
    localrule: True
    conda:
        ENV
    shell:
        "{params.python} -m hiast.report per-class --summary {input} --model student --output {output} "
        "> {log} 2>&1"


rule report_thresholds:
    input:
        lambda w: [f"{RESULTS}/{w.scenario}/round_{r}/pseudo_labels.h5" for r in range(1, ROUNDS[w.scenario] + 1)],
    output:
        report(
            f"{RESULTS}/{{scenario}}/report/thresholds.png",
            caption="../report/thresholds.rst",
            category="{scenario}",
            subcategory="2. pseudo-labels",
            labels={"figure": "thresholds over instances"},
        ),
    params:
        python=sys.executable,
    log:
        f"{RESULTS}/{{scenario}}/logs/report_thresholds.log",
    localrule: True
    conda:
        ENV
    shell:
        "{params.python} -m hiast.report thresholds --pseudo-labels {input} --output {output} > {log} 2>&1"


rule report_pseudo_labels:
    input:
        pseudo=lambda w: [
            f"{RESULTS}/{w.scenario}/round_{r}/pseudo_labels.h5" for r in range(1, ROUNDS[w.scenario] + 1)
        ],
        banks=lambda w: [
            f"{RESULTS}/{w.scenario}/round_{r}/instance_bank.h5" for r in range(1, ROUNDS[w.scenario] + 1)
        ],
        target=f"{RESULTS}/{{scenario}}/manifests/target.csv",
    output:
        figure=report(
            f"{RESULTS}/{{scenario}}/report/pseudo_labels.png",
            caption="../report/pseudo_labels.rst",
            category="{scenario}",
            subcategory="2. pseudo-labels",
            labels={"figure": "coverage and precision"},
        ),
        table=report(
            f"{RESULTS}/{{scenario}}/report/pseudo_labels.csv",
            caption="../report/pseudo_labels_table.rst",
            category="{scenario}",
            subcategory="2. pseudo-labels",
            labels={"figure": "coverage and precision (table)"},
        ),
    params:
        python=sys.executable,
        train_split=lambda w: RESOLVED[w.scenario]["target"]["train_split"],
    log:
        f"{RESULTS}/{{scenario}}/logs/report_pseudo_labels.log",
    localrule: True
    conda:
        ENV
    shell:
        "{params.python} -m hiast.report pseudo-labels --pseudo-labels {input.pseudo} --banks {input.banks} "
        "--manifest {input.target} --train-split {params.train_split} --output {output.figure} "
        "--table {output.table} > {log} 2>&1"


rule report_examples:
    input:
        pseudo=f"{RESULTS}/{{scenario}}/round_{{round}}/pseudo_labels.h5",
        # the evaluation writes the colour masks (round_<r>/masks/<model>/) along with eval.csv
        evaluation=f"{RESULTS}/{{scenario}}/round_{{round}}/eval.csv",
        target=f"{RESULTS}/{{scenario}}/manifests/target.csv",
    output:
        report(
            f"{RESULTS}/{{scenario}}/report/examples_round_{{round}}.png",
            caption="../report/examples.rst",
            category="{scenario}",
            subcategory="3. examples",
            labels={"figure": "examples, round {round}"},
        ),
    params:
        python=sys.executable,
        masks=f"{RESULTS}/{{scenario}}/round_{{round}}/masks",
        train_split=lambda w: RESOLVED[w.scenario]["target"]["train_split"],
        val_split=lambda w: RESOLVED[w.scenario]["target"]["val_split"],
    log:
        f"{RESULTS}/{{scenario}}/logs/report_examples_{{round}}.log",
    localrule: True
    conda:
        ENV
    shell:
        "{params.python} -m hiast.report examples --round {wildcards.round} --pseudo-labels {input.pseudo} "
        "--manifest {input.target} --masks {params.masks} --model student --count 3 "
        "--train-split {params.train_split} --val-split {params.val_split} --output {output} > {log} 2>&1"
