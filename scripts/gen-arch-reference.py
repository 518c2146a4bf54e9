#!/usr/bin/env python3
"""Reference logits for the tiny architecture-variant models (tests/tools/tiny_models.h).

Run once with llama-cpp-python (a dev-time tool, not a dependency of herd):
  build/tests/make_tiny_models ../shared/models/stories260K.gguf /tmp/tiny
  python3 scripts/gen-arch-reference.py /tmp/tiny tests/data
It evaluates the token sequence of tiny_models.cpp (first 6 as one batch, then one at a time, F32 KV
cache, no flash attention — as ../shared/reference was made) and writes tests/data/tiny-NAME.log1.
"""
import struct
import sys

import numpy as np
from llama_cpp import Llama

TOKENS = [1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426]
N_PROMPT = 6

src, dst = sys.argv[1], sys.argv[2]
for name in ["qwen2", "llama-tied"]:
    llm = Llama(model_path=f"{src}/tiny-{name}.gguf", logits_all=True, n_ctx=64, n_threads=1,
                verbose=False, flash_attn=False, type_k=0, type_v=0)
    llm.eval(TOKENS[:N_PROMPT])
    for t in TOKENS[N_PROMPT:]:
        llm.eval([t])
    scores = np.asarray(llm.scores[: len(TOKENS)], dtype=np.float32)
    with open(f"{dst}/tiny-{name}.log1", "wb") as f:
        f.write(struct.pack("<iiii", 0x4C4F4731, scores.shape[1], len(TOKENS), N_PROMPT))
        for pos, tok in enumerate(TOKENS):
            f.write(struct.pack("<ii", pos, tok))
            f.write(scores[pos].tobytes())
    print(f"{dst}/tiny-{name}.log1: {len(TOKENS)} rows, argmax {scores.argmax(axis=1).tolist()}")
