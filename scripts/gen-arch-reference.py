#!/usr/bin/env python3
"""Reference logits for the tiny architecture-variant models (tests/tools/tiny_models.h).

Run once with llama-cpp-python (a dev-time tool, not a dependency of herd; 0.3.36 made the stored
files):
  build/tests/make_tiny_models ../shared/models/stories260K.gguf /tmp/tiny
  python3 scripts/gen-arch-reference.py /tmp/tiny tests/data [NAME...]
It evaluates the token sequence of tiny_models.cpp (first 6 as one batch, then one at a time, F32 KV
cache, no flash attention — as ../shared/reference was made) and writes tests/data/tiny-NAME.log1 for
each NAME (default: every tiny model: qwen2 llama-tied qwen3 qwen3moe mixtral qwen3moe-q8). For the
models of GREEDY it also decodes greedily from the first 6 tokens and writes tiny-NAME.greedy.log1:
rows are the prompt and then each generated id fed back (so the generated ids are the input tokens
of rows 6.. plus the argmax of the last row).
llama.cpp's extra CPU buffer types (AMX, repacked weights) are turned off (scripts/llama_reference.py):
its plain CPU dot products are the reference.
"""
import sys

import numpy as np
from llama_reference import N_PROMPT, TOKENS, load, teacher_forced, write_log1

NAMES = ["qwen2", "llama-tied", "qwen3", "qwen3moe", "mixtral", "qwen3moe-q8"]
GREEDY = ["qwen3", "qwen3moe", "mixtral", "qwen3moe-q8"]
N_GREEDY = 10

src, dst = sys.argv[1], sys.argv[2]
for name in sys.argv[3:] or NAMES:
    scores = teacher_forced(f"{src}/tiny-{name}.gguf")
    write_log1(f"{dst}/tiny-{name}.log1", TOKENS, scores)
    print(f"{dst}/tiny-{name}.log1: {len(TOKENS)} rows, argmax {scores.argmax(axis=1).tolist()}")
    if name not in GREEDY:
        continue
    llm = load(f"{src}/tiny-{name}.gguf")
    tokens = TOKENS[:N_PROMPT]
    llm.eval(tokens)
    generated = [int(np.argmax(llm.scores[N_PROMPT - 1]))]
    while len(generated) < N_GREEDY:
        tokens.append(generated[-1])
        llm.eval([generated[-1]])
        generated.append(int(np.argmax(llm.scores[len(tokens) - 1])))
    scores = np.asarray(llm.scores[: len(tokens)], dtype=np.float32)
    write_log1(f"{dst}/tiny-{name}.greedy.log1", tokens, scores)
    print(f"{dst}/tiny-{name}.greedy.log1: generated {generated}")
