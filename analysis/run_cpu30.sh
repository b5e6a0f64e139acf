#!/usr/bin/env bash
# The comparison at CPU scale committed in analysis/cpu30/ (analysis/README.md says what it is).
# CIFAR-10-LT IF 100 from ../shared/data, every base at 30 epochs with seeds 0 and 1, each
# + GML and + GML ensemble (t1/t2 searched on val), CE + BSCE re-train. One study per base, so
# that each base's rows are complete (bases built, trials run) before the next base starts;
# `lt-ray analyze` merges them into one table. Resumable: run it again after an interruption;
# finished trials are not run again, stage builds continue from their last epoch.
set -euo pipefail
cd "$(dirname "$0")/.."
S=${STORAGE:-results}
COMMON=(--storage "$S" --data-root ../shared/data --no-dashboard
        --set grid.data.dataset=[cifar10] --set grid.data.imb_factor=[100]
        --set pretrained.train.eval_every=3 --set search.num_samples=8
        --set repeat.seeds=[0,1] --set resources.gpu=0)
STUDIES=()

study() {  # NAME SPACE [--set ...]: a new study, or the rest of one (nothing if it finished)
    local name=$1 space=$2
    shift 2
    STUDIES+=("$S/$name")
    local again=()
    if [ -f "$S/$name/study.json" ]; then again=(--resume); fi
    echo "== $name ($(date -u +%H:%M:%S) UTC)"
    lt-ray sweep "$space" --name "$name" "${COMMON[@]}" "$@" "${again[@]}"
}

for base in ce bsce ldam_drw lade ride paco; do  # 30-epoch bases, their recipes scaled
    study "cpu30_$base" search_spaces/paper.yaml --set "grid.pretrained.method.name=[$base]" \
        --set pretrained.train.epochs=30
    if [ "$base" = ce ]; then  # CE + BSCE re-train, on the same CE bases
        study cpu30_crt search_spaces/crt.yaml --set grid.pretrained.method.name=[ce] \
            --set pretrained.train.epochs=30
    fi
done
study cpu30_mislas search_spaces/paper.yaml --set grid.pretrained.method.name=[mislas] \
    --set pretrained.pretrained.train.epochs=30 --set pretrained.pretrained.train.eval_every=3
echo "== analyze ($(date -u +%H:%M:%S) UTC)"
lt-ray analyze "${STUDIES[@]}" --out analysis/cpu30
