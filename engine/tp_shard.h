// One tensor-parallel rank's share of a model (the shard plan's ranges, engine/shard_plan.h):
//   rows (contiguous views into the file, no copy): wq (its query heads), wk/wv (its KV heads),
//     ffn_gate/ffn_up (its FFN rows), output (its vocabulary rows); the q/k/v biases sliced alike;
//   columns (views with the whole matrix's row stride, whole quant blocks of each row, no copy):
//     attn_output (the columns of its query heads), ffn_down (the columns of its FFN rows).
//   replicated: norms, the embedding table, rope factors (every rank computes them identically).
// The rank's config says its own n_heads, n_kv_heads and n_ff, so a Stage runs it unchanged: its
// KV cache holds its KV heads only.
#pragma once

#include "engine/shard_plan.h"
#include "model/arch.h"
#include "model/weights.h"

namespace herd {

// The shape the plan is made for: heads, n_ff in blocks of ffn_down's type, vocabulary.
// Throws std::invalid_argument for a mixture-of-experts model (its experts are not sharded yet).
ShardShape shard_shape(const model::ModelConfig& c, const model::StageWeights& full);

// Rank `rank`'s config (its heads and FFN rows; n_vocab stays the model's).
model::ModelConfig shard_config(const model::ModelConfig& c, const ShardPlan& p, int rank);

// Rank `rank`'s weights from its stage's (full: a stage's weights, e.g. one stage of every layer
// for in-process TP, or one pipeline stage's layers for a worker group: the output matrix is sliced
// only on the last stage). Throws std::invalid_argument naming the tensor when a column cut falls inside a quant
// block (attn_output of a K-quant type whose rank's heads do not start on a 256-value block).
model::StageWeights shard_weights(const model::ModelConfig& c, const model::StageWeights& full, const ShardPlan& p,
                                  int rank);

}  // namespace herd
