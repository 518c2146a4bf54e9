// Teacher-forced replay: evaluate a fixed token sequence and keep every row's logits, the way
// llama.cpp produced ../shared/reference (the first n_prompt tokens as one batch, then one token
// at a time). Used by `herd logits` and by the numerics tests.
#pragma once

#include <cstdint>
#include <vector>

#include "coordinator/logits_file.h"
#include "engine/pipeline.h"

namespace herd {

// Throws std::runtime_error when the tokens do not fit the context or the vocabulary.
LogitsFile replay_logits(Pipeline& pipeline, const std::vector<int32_t>& tokens, int64_t n_prompt);

// The input tokens of a reference dump, checking its rows are positions 0, 1, 2, ...
std::vector<int32_t> replay_tokens(const LogitsFile& ref, const std::string& name);

}  // namespace herd
