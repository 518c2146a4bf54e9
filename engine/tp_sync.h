// How the partial sums of a tensor-parallel layer are joined (--tp-sync): each rank's partial
// [n_rows, n_embd] after the attention output projection and after the FFN down projection is
// rounded to the wire precision, then summed over the ranks in rank order (Comm::all_reduce_sum,
// ((p0 + p1) + p2) + ... in f32), so the same inputs give the same bits whatever order the
// partials arrive in.
//   f32: exact partials (default).
//   f16: each value rounded to f16 (nearest even): half the bytes.
//   q8:  each row in blocks of 32 values with one f16 scale (Q8_0, the 8-bit activation format):
//        34 bytes per 32 values, about a quarter.
// f32 goes through Comm::all_reduce_sum while it is bandwidth-bound, and is all-gathered like
// f16 / q8 while it is latency-bound (f32_sync_gathers): the same bits either way (Comm's
// contract: all_reduce_sum is the rank-order sum). f16 and q8 send only the rounded form: each rank's
// f16 values / Q8_0 rows are all-gathered (n-1 hops of sync_bytes per rank instead of the chain's
// 2(n-1) hops of 4 bytes per value) and every rank sums the decoded partials in rank order, which
// is bit for bit the rounded partials all-reduced in f32.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace herd {

class Backend;
class Comm;

enum class TpSync { F32, F16, Q8 };

// "f32" | "f16" | "q8"; throws std::invalid_argument naming the value otherwise.
TpSync parse_tp_sync(const std::string& s);
const char* tp_sync_name(TpSync s);

// Rounds x [n_rows, row] in place as `s` says (row % 32 == 0 for Q8: throws std::invalid_argument).
void round_for_sync(TpSync s, float* x, int64_t n_rows, int64_t row);

// Bytes of one rank's rounded partial [n_rows, row] on the wire: 4, 2 or 34/32 per value.
size_t sync_bytes(TpSync s, int64_t n_rows, int64_t row);

// Whether tp_all_reduce joins f32 partials of `values` floats over `ranks` ranks by all-gather
// and a rank-order sum rather than Comm::all_reduce_sum: always with 2 ranks (one exchange, both
// ways at once, where the chain sends the partial one way and the sum back: half the sequential
// hops for the same bytes), and with more while the bytes each rank gathers, (ranks - 1) x values x
// 4, stay within kF32GatherBytes (a decode step's n_embd: the hops' latency dominates; a prompt
// batch: the chain's 2 x values x 4 per rank is what counts).
constexpr size_t kF32GatherBytes = 256 << 10;
bool f32_sync_gathers(int ranks, size_t values);

// Rounds x, then all-reduces it through `comm`; throws std::runtime_error with comm's error.
// `rows`: a host backend whose store_rows / load_rows convert the f16 partials (its ISA's
// vector conversions: the same round-to-nearest-even bits as kernels/fp16.h, which null uses).
void tp_all_reduce(Comm& comm, TpSync s, float* x, int64_t n_rows, int64_t row, Backend* rows = nullptr);

}  // namespace herd
