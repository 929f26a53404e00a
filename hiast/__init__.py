"""hiast: HIAST (hard-aware instance adaptive self-training) for unsupervised domain adaptation of semantic
segmentation, as a Snakemake pipeline. `hiast --help` lists the stages; README.md the flows."""

__version__ = "0.1.0"
