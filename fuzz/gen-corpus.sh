#!/usr/bin/env bash
# Regenerates the committed seed corpus (fuzz/corpus/<harness>/) with fuzz/make_seeds.cpp: tiny
# GGUF files written by GgufWriter, every protocol message packed and framed as on the wire and on
# a data lane, the chat templates of each family (and SmolLM2's own when models/ has it), tokenizer
# texts. Needs the fuzz build (see fuzz/run.sh). Usage: fuzz/gen-corpus.sh [SMOLLM2.gguf]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${HERD_FUZZ_BUILD:-build-fuzz}
cmake --build "$bin" --target make_seeds >/dev/null
rm -rf fuzz/corpus
"$bin/fuzz/make_seeds" fuzz/corpus "${1:-models/SmolLM2-135M-Instruct.Q4_1.gguf}"
du -sh fuzz/corpus
