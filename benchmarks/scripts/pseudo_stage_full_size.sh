#!/usr/bin/env bash
# `hiast bench pseudo` at the real datasets' size on a CPU: the GTA5 -> Cityscapes scenario's labeller
# (DeepLabV2 ResNet-101, fresh weights, 768x1536 from 1024x2048) on IMAGES Cityscapes-format images that the
# embedded generator draws at 1024x2048, once per HIAST_MALLOC mode given (default: reuse heap), in that order.
# Loader processes off (pseudo.workers=0), as in the embedded default run, so the streams decode.
# IMAGES: a multiple of 2 x THREADS (instances of 2, one stream per thread), or a stream idles.
#
#   bash benchmarks/scripts/pseudo_stage_full_size.sh THREADS IMAGES REPEATS OUTDIR [MODE...]
#
# About 10 minutes per mode at 2 threads, 4 images, 3 repeats on the 2-core machine.
set -euo pipefail
threads=${1:?threads} images=${2:?images} repeats=${3:?repeats} outdir=${4:?output folder}
shift 4
if (( images % (2 * threads) )); then
    echo "IMAGES=$images: expected a multiple of 2 x THREADS = $((2 * threads)) (instances of 2, one stream per thread)" >&2
    exit 2
fi
if [ $# -gt 0 ]; then modes=("$@"); else modes=(reuse heap); fi
hiast=${HIAST:-.venv/bin/hiast}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$outdir"
"$hiast" generate --root "$work/data" --height 1024 --width 2048 --workers 2 --count gta5=0 --count synthia=0 \
    --count "cityscapes_train=$images" --count cityscapes_val=1 --count oxford_train=0 --count oxford_val=0
# the scenario as it is, with both roots on the generated Cityscapes (the source is not read)
sed -e "s#root: data/cityscapes#root: $work/data/cityscapes#" -e "s#root: data/GTA5#root: $work/data/cityscapes#" \
    config/scenarios/gta5_to_cityscapes.yaml > "$work/scenario.yaml"
for mode in "${modes[@]}"; do
    HIAST_MALLOC=$mode "$hiast" bench pseudo --scenario "$work/scenario.yaml" --threads "$threads" \
        --max-images "$images" --repeats "$repeats" --every-round pseudo.workers=0 \
        --output "$outdir/pseudo_stage_resnet101_$mode.json"
done
