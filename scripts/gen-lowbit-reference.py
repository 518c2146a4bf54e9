#!/usr/bin/env python3
"""Reference logits for the 2- and 3-bit K-quant test models (tests/tools/tiny_models.h, write_lowbit_model).

Run once with llama-cpp-python (a dev-time tool, not a dependency of herd; built from its sdist,
`pip install llama_cpp_python-X.tar.gz`):
  build/tests/make_tiny_models ../shared/models/stories260K.gguf /tmp/tiny
  python3 scripts/gen-lowbit-reference.py /tmp/tiny tests/data
For each mix (Q2_K, Q3_K_M) it evaluates the tiny-model token sequence (first 6 as one batch, then one
at a time, F32 KV cache, no flash attention — as ../shared/reference was made) on the quantized file
(llama.cpp's own 8-bit-activation dot products) and on its -deq twin (the same weights dequantized
to F32: the exact math), and writes tests/data/lowbit-MIX.log1 and lowbit-MIX-deq.log1.
llama.cpp's extra CPU buffer types (AMX, repacked weights) are turned off: its plain CPU dot products
are the reference (and 0.3.36's AMX matmul, picked on a CPU that reports AMX, segfaulted in this
project's VM on every K-quant file, ../shared's included).
"""
import struct
import sys

import numpy as np
import llama_cpp.llama_cpp as llama_c
from llama_cpp import Llama

_default_model_params = llama_c.llama_model_default_params


def _plain_cpu_model_params():
    p = _default_model_params()
    p.use_extra_bufts = False
    return p


llama_c.llama_model_default_params = _plain_cpu_model_params

TOKENS = [1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426]
N_PROMPT = 6

src, dst = sys.argv[1], sys.argv[2]
for name in ["Q2_K", "Q2_K-deq", "Q3_K_M", "Q3_K_M-deq"]:
    llm = Llama(model_path=f"{src}/lowbit-{name}.gguf", logits_all=True, n_ctx=64, n_threads=1,
                verbose=False, flash_attn=False, type_k=0, type_v=0)
    llm.eval(TOKENS[:N_PROMPT])
    for t in TOKENS[N_PROMPT:]:
        llm.eval([t])
    scores = np.asarray(llm.scores[: len(TOKENS)], dtype=np.float32)
    with open(f"{dst}/lowbit-{name}.log1", "wb") as f:
        f.write(struct.pack("<iiii", 0x4C4F4731, scores.shape[1], len(TOKENS), N_PROMPT))
        for pos, tok in enumerate(TOKENS):
            f.write(struct.pack("<ii", pos, tok))
            f.write(scores[pos].tobytes())
    print(f"{dst}/lowbit-{name}.log1: {len(TOKENS)} rows, argmax {scores.argmax(axis=1).tolist()}")
