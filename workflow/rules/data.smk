# The embedded benchmark and the manifests.


rule generate_synthetic:
    output:
        SYNTHETIC_MARKER,
    params:
        root=SYNTHETIC.get("root", "data/synthetic"),
        args=hw.generate_args(SYNTHETIC),
    log:
        f"{RESULTS}/logs/generate_synthetic.log",
    benchmark:
        f"{RESULTS}/benchmarks/generate_synthetic.tsv"
    threads: SYNTHETIC.get("workers", 2)
    shell:
        "{HIAST} generate --root {params.root} {params.args} > {log} 2>&1"


def synthetic_input(wildcards):
    return [SYNTHETIC_MARKER] if RESOLVED[wildcards.scenario]["synthetic"] else []


rule manifest:
    input:
        synthetic_input,
    output:
        f"{RESULTS}/{{scenario}}/manifests/{{side}}.csv",
    params:
        data=lambda w: RESOLVED[w.scenario][w.side],
        splits=lambda w: hw.splits_of(RESOLVED[w.scenario][w.side]),
    log:
        f"{RESULTS}/{{scenario}}/logs/manifest_{{side}}.log",
    benchmark:
        f"{RESULTS}/{{scenario}}/benchmarks/manifest_{{side}}.tsv"
    threads: 2
    shell:
        "{HIAST} manifest {params.data[dataset]} {params.data[root]} {output} --splits {params.splits} "
        "--workers {threads} > {log} 2>&1"
