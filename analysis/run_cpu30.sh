#!/usr/bin/env bash
# The comparison at CPU scale committed in analysis/cpu30/ (analysis/README.md says what it is).
# CIFAR-10-LT IF 100 from ../shared/data, every base at 30 epochs with seeds 0 and 1, each
# + GML and + GML ensemble (t1/t2 searched on val), CE + BSCE re-train. Resumable: run it again
# after an interruption; finished stage artifacts and trials are kept in $STORAGE.
set -euo pipefail
cd "$(dirname "$0")/.."
S=${STORAGE:-results}
COMMON=(--storage "$S" --data-root ../shared/data --no-dashboard
        --set grid.data.dataset=[cifar10] --set grid.data.imb_factor=[100]
        --set pretrained.train.eval_every=3 --set search.num_samples=8
        --set repeat.seeds=[0,1] --set resources.gpu=0)

study() {  # NAME SPACE [--set ...]: a new study, or the rest of an interrupted one
    local name=$1 space=$2
    shift 2
    local again=()
    if [ -f "$S/$name/study.json" ]; then again=(--resume); fi
    echo "== $name ($(date -u +%H:%M:%S) UTC)"
    lt-ray sweep "$space" --name "$name" "${COMMON[@]}" "$@" "${again[@]}"
}

study cpu30 search_spaces/paper.yaml --set pretrained.train.epochs=30 \
    --set grid.pretrained.method.name=[ce,bsce,ldam_drw,lade,ride,paco]
study cpu30_mislas search_spaces/paper.yaml --set grid.pretrained.method.name=[mislas] \
    --set pretrained.pretrained.train.epochs=30 --set pretrained.pretrained.train.eval_every=3
study cpu30_crt search_spaces/crt.yaml --set pretrained.train.epochs=30 \
    --set grid.pretrained.method.name=[ce]
echo "== analyze ($(date -u +%H:%M:%S) UTC)"
lt-ray analyze "$S/cpu30" "$S/cpu30_mislas" "$S/cpu30_crt" --out analysis/cpu30
