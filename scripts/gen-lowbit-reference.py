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
import sys

from llama_reference import TOKENS, teacher_forced, write_log1

src, dst = sys.argv[1], sys.argv[2]
for name in ["Q2_K", "Q2_K-deq", "Q3_K_M", "Q3_K_M-deq"]:
    scores = teacher_forced(f"{src}/lowbit-{name}.gguf")
    write_log1(f"{dst}/lowbit-{name}.log1", TOKENS, scores)
    print(f"{dst}/lowbit-{name}.log1: {len(TOKENS)} rows, argmax {scores.argmax(axis=1).tolist()}")
