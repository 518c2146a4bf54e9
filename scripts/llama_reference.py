"""What the reference-logits scripts share (gen-arch-reference.py, gen-lowbit-reference.py): llama.cpp
through llama-cpp-python on its plain CPU dot products, the tiny models' token sequence and the LOG1
writer. A dev-time tool, never needed by herd or its tests.

Importing it turns llama.cpp's extra CPU buffer types (AMX, repacked weights) off: its plain CPU dot
products are the reference (and 0.3.36's AMX matmul, picked on a CPU that reports AMX, segfaulted
in this project's VM on every K-quant file).
"""
import struct

import numpy as np
import llama_cpp.llama_cpp as llama_c
from llama_cpp import Llama

_default_model_params = llama_c.llama_model_default_params


def _plain_cpu_model_params():
    p = _default_model_params()
    p.use_extra_bufts = False
    return p


llama_c.llama_model_default_params = _plain_cpu_model_params

# tests/tools/tiny_models.cpp's sequence: the first N_PROMPT as one batch, then one at a time.
TOKENS = [1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426]
N_PROMPT = 6


def load(path):
    """F32 KV cache, no flash attention, one thread — as ../shared/reference was made."""
    return Llama(model_path=path, logits_all=True, n_ctx=64, n_threads=1, verbose=False, flash_attn=False,
                 type_k=0, type_v=0)


def teacher_forced(path):
    """Logits of every position of TOKENS, [len(TOKENS), n_vocab] f32."""
    llm = load(path)
    llm.eval(TOKENS[:N_PROMPT])
    for t in TOKENS[N_PROMPT:]:
        llm.eval([t])
    return np.asarray(llm.scores[: len(TOKENS)], dtype=np.float32)


def write_log1(path, tokens, scores):
    with open(path, "wb") as f:
        f.write(struct.pack("<iiii", 0x4C4F4731, scores.shape[1], len(tokens), N_PROMPT))
        for pos, tok in enumerate(tokens):
            f.write(struct.pack("<ii", pos, tok))
            f.write(scores[pos].tobytes())
