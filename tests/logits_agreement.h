// Row-by-row agreement of two logits dumps (ours against a reference): each row's max |Δlogit|
// over the vocabulary and whether its argmax (first index of the maximum) is the same. The tests
// that replay against llama.cpp's dumps assert on it with their own tolerances.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

#include "coordinator/logits_file.h"

namespace herd::test {

struct LogitsAgreement {
  std::vector<double> row_max;  // [rows] max |ours - ref| of the row
  double worst = 0;             // max over the rows
  size_t argmax_equal = 0;      // rows whose argmax agrees
};

// Compares the first min(ours, ref) rows.
inline LogitsAgreement compare_logits(const LogitsFile& ours, const LogitsFile& ref) {
  LogitsAgreement a;
  const size_t rows = std::min(ours.rows.size(), ref.rows.size());
  for (size_t r = 0; r < rows; ++r) {
    const auto& o = ours.rows[r].logits;
    const auto& e = ref.rows[r].logits;
    double m = 0;
    size_t am_ref = 0, am_ours = 0;
    for (size_t i = 0; i < e.size(); ++i) {
      m = std::max(m, std::fabs(static_cast<double>(o[i]) - e[i]));
      if (e[i] > e[am_ref]) am_ref = i;
      if (o[i] > o[am_ours]) am_ours = i;
    }
    a.row_max.push_back(m);
    a.worst = std::max(a.worst, m);
    a.argmax_equal += am_ours == am_ref;
  }
  return a;
}

}  // namespace herd::test
