#!/usr/bin/env python3
"""Write tokenizer test vectors for a GGUF model using llama.cpp (llama-cpp-python) as the oracle.

Inputs are the cases of shared/reference/tokenizer/ggml-vocab-llama-spm.gguf.inp (separated by
lines "__ggml_vocab_test__"), tokenized without BOS and without special-token parsing, plus a
few chat-style prompts tokenized with special=True into a separate "-special" pair of files.
Output format matches llama.cpp's: <name>.inp holds each input followed by
"\\n__ggml_vocab_test__\\n"; <name>.out holds one line of space-separated ids per input.

Usage: python scripts/gen-tokenizer-vectors.py MODEL.gguf SPM.inp OUT_PREFIX
  e.g. /tmp/setup/venv/bin/python scripts/gen-tokenizer-vectors.py \\
         models/SmolLM2-135M-Instruct.Q4_1.gguf \\
         ../shared/reference/tokenizer/ggml-vocab-llama-spm.gguf.inp tests/data/smollm2
"""
import sys

import llama_cpp

SEP = "\n__ggml_vocab_test__\n"

# Chat-style prompts with ChatML special tokens, and a literal special token mid-word.
SPECIAL_CASES = [
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>user\nHi!<|im_end|><|im_start|>assistant\nHello there 123<|im_end|>",
    "text<|endoftext|>more  <|im_end|>\n\n",
    "<|im_start|><|im_start|>",
]


def read_cases(path):
    with open(path, "rb") as f:
        data = f.read().decode("utf-8")
    parts = data.split(SEP)
    assert parts[-1] == "", "input must end with the separator"
    return parts[:-1]


def write(prefix, cases, llm, special):
    with open(prefix + ".inp", "wb") as f:
        for c in cases:
            f.write((c + SEP).encode("utf-8"))
    with open(prefix + ".out", "w") as f:
        for c in cases:
            ids = llm.tokenize(c.encode("utf-8"), add_bos=False, special=special)
            f.write(" " + " ".join(str(i) for i in ids) + "\n" if ids else "\n")


def main():
    model, spm_inp, prefix = sys.argv[1:4]
    llm = llama_cpp.Llama(model_path=model, vocab_only=True, verbose=False)
    write(prefix, read_cases(spm_inp), llm, special=False)
    write(prefix + "-special", SPECIAL_CASES, llm, special=True)


if __name__ == "__main__":
    main()
