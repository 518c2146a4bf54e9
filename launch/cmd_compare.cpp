// herd compare: row-by-row agreement of two LOG1 logits files.
#include <cmath>
#include <cstdio>

#include "coordinator/logits_file.h"
#include "launch/args.h"
#include "launch/commands.h"

namespace herd::cli {
namespace {

int32_t argmax(const std::vector<float>& v) {
  size_t best = 0;
  for (size_t i = 1; i < v.size(); ++i)
    if (v[i] > v[best]) best = i;
  return static_cast<int32_t>(best);
}

}  // namespace

int cmd_compare(const Args& args) {
  std::vector<std::string> files;
  double tol = 1e-3;
  bool quiet = false, require_argmax = false;
  ArgParser p("herd compare A.log1 B.log1 [--tol T]",
              "Prints, for each row, max |A - B| over the vocabulary and whether the argmax agrees, then a summary. "
              "Exits 1 when any row differs by more than --tol (or, with --argmax, when any argmax differs), "
              "2 on bad input.");
  p.positional("A.log1 B.log1", "the two dumps (same vocabulary; rows compared up to the shorter)", &files);
  p.add("--tol", "T", "largest acceptable max |delta logit| on any row", &tol);
  p.add("--argmax", "", "also fail when any row's argmax differs", &require_argmax);
  p.add("-q,--quiet", "", "print only the summary line", &quiet);
  if (!p.parse(args)) {
    std::fputs(p.help().c_str(), stdout);
    return 0;
  }
  if (files.size() != 2) throw UsageError("give two LOG1 files (see --help)");
  const LogitsFile a = LogitsFile::read(files[0]);
  const LogitsFile b = LogitsFile::read(files[1]);
  if (a.n_vocab != b.n_vocab)
    throw UsageError("vocabulary sizes differ: " + std::to_string(a.n_vocab) + " vs " + std::to_string(b.n_vocab));
  if (a.rows.size() != b.rows.size())
    std::fprintf(stderr, "warning: %zu vs %zu rows; comparing the first %zu\n", a.rows.size(), b.rows.size(),
                 std::min(a.rows.size(), b.rows.size()));
  const size_t n = std::min(a.rows.size(), b.rows.size());
  double worst = 0;
  size_t worst_row = 0, agree = 0, input_mismatch = 0;
  if (!quiet) std::printf("%5s %6s %12s %8s %8s\n", "row", "token", "max|delta|", "argmaxA", "argmaxB");
  for (size_t r = 0; r < n; ++r) {
    const auto& ra = a.rows[r];
    const auto& rb = b.rows[r];
    if (ra.input_token != rb.input_token) ++input_mismatch;
    double m = 0;
    for (size_t i = 0; i < ra.logits.size(); ++i) {
      const double d = std::fabs(static_cast<double>(ra.logits[i]) - rb.logits[i]);
      if (!(d <= m)) m = d;  // NaN propagates as the worst case
    }
    const int32_t ma = argmax(ra.logits), mb = argmax(rb.logits);
    agree += ma == mb;
    if (!(m <= worst)) {
      worst = m;
      worst_row = r;
    }
    if (!quiet) std::printf("%5zu %6d %12.3e %8d %8d%s\n", r, ra.input_token, m, ma, mb, ma == mb ? "" : "  <- argmax");
  }
  const bool ok = n > 0 && worst <= tol && (!require_argmax || agree == n);
  std::printf("summary: %zu rows, max|delta| %.3e (row %zu), argmax agree %zu/%zu, tol %.1e: %s\n", n, worst,
              worst_row, agree, n, tol, ok ? "OK" : "FAIL");
  if (input_mismatch) std::printf("warning: %zu rows have different input tokens\n", input_mismatch);
  return ok ? 0 : 1;
}

}  // namespace herd::cli
