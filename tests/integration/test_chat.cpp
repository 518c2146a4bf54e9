// `herd chat` as a user drives it: the answer cap, the /help and /reset commands, and Ctrl-C
// (SIGINT) stopping an answer without ending the conversation, then leaving at the prompt.
#include <gtest/gtest.h>

#include <regex>

#include "tests/integration/cluster_util.h"

namespace herd::test {
namespace {

using Clock = std::chrono::steady_clock;

ProcessResult herd(std::vector<std::string> args, double timeout_s, const std::string& in = "") {
  args.insert(args.begin(), herd_bin());
  return run_process(args, timeout_s, in);
}

// Polls `what` until it returns true or timeout_s passes.
template <typename F>
bool eventually(F what, double timeout_s) {
  const auto deadline = Clock::now() + std::chrono::duration<double>(timeout_s);
  while (!what()) {
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

size_t count(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t at = s.find(what); at != std::string::npos; at = s.find(what, at + what.size())) ++n;
  return n;
}

// The "prompt: N tokens" of each --speed line, in order.
std::vector<int> prompt_counts(const std::string& err) {
  std::vector<int> out;
  const std::regex re("prompt: ([0-9]+) tokens");
  for (auto it = std::sregex_iterator(err.begin(), err.end(), re); it != std::sregex_iterator(); ++it)
    out.push_back(std::stoi((*it)[1]));
  return out;
}

TEST(Chat, HelpNamesTheDefaultAnswerCapAndTheCommands) {
  const auto r = herd({"chat", "--help"}, 30);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const size_t at = r.out.find("--n-predict");
  ASSERT_NE(at, std::string::npos) << r.out;
  const size_t desc = r.out.find('\n', at) + 1;  // the option's description is on the next line
  const std::string line = r.out.substr(at, r.out.find('\n', desc) - at);
  EXPECT_NE(line.find("(default: 1024)"), std::string::npos) << line;
  EXPECT_NE(r.out.find("/reset"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("Ctrl-C"), std::string::npos) << r.out;
}

// /reset forgets the messages (the same greedy question gets the same answer again) and the KV
// cache (the second turn evaluates its whole prompt: nothing is reused). Without it, the second
// turn reuses the first turn's cache.
TEST(Chat, SlashHelpListsTheCommandsAndResetForgetsMessagesAndCache) {
  HERD_REQUIRE_FILE(smollm2_path());
  const std::vector<std::string> args = {"chat", "-m", smollm2_path(), "--temp", "0", "-n", "12", "--speed"};
  auto r = herd(args, 300, "/help\nHi\n/reset\nHi\n");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* c : {"/help", "/reset", "/exit", "Ctrl-C"}) EXPECT_NE(r.err.find(c), std::string::npos) << c;
  EXPECT_NE(r.err.find("conversation reset"), std::string::npos) << r.err;
  ASSERT_EQ(r.out.size() % 2, 0u) << r.out;
  const std::string first = r.out.substr(0, r.out.size() / 2);
  EXPECT_GT(first.size(), 1u);
  EXPECT_EQ(first, r.out.substr(r.out.size() / 2)) << "after /reset the same question gets the same answer";
  const auto counts = prompt_counts(r.err);
  ASSERT_EQ(counts.size(), 2u) << r.err;
  EXPECT_GT(counts[0], 1);
  EXPECT_EQ(counts[0], counts[1]) << "after /reset nothing of the cache is reused";

  r = herd(args, 300, "Hi\nHi\n");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto kept = prompt_counts(r.err);
  ASSERT_EQ(kept.size(), 2u) << r.err;
  EXPECT_EQ(kept[0], counts[0]);
  EXPECT_LT(kept[1], kept[0]) << "without /reset the second turn reuses the cache";
}

// Ctrl-C mid-answer stops that answer only: the next line is answered in the same conversation
// (its prompt reuses the cache of the first turn, partial answer included), and a Ctrl-C at the
// prompt leaves with status 0. (This 135M model rambles on once a story is in its context, so
// the second answer is stopped too.)
TEST(Chat, CtrlCStopsTheAnswerTheNextLineIsAnsweredCtrlCAtThePromptLeaves) {
  HERD_REQUIRE_FILE(smollm2_path());
  Child chat({herd_bin(), "chat", "-m", smollm2_path(), "--temp", "0", "-n", "100000", "--speed"},
             ChildOptions{.stdin_pipe = true});
  const auto stops = [&] { return count(chat.err(), "herd chat: stopped"); };
  // Sends `line`, waits for 20 bytes of its answer, Ctrl-C, waits for the stop.
  const auto ask_and_stop = [&](const std::string& line) {
    const size_t before = chat.out().size(), stops_before = stops();
    ASSERT_TRUE(chat.write_stdin(line + "\n"));
    ASSERT_TRUE(eventually([&] { return chat.out().size() >= before + 20 || !chat.running(); }, 240))
        << "no answer to '" << line << "': " << chat.err();
    ASSERT_TRUE(chat.running()) << chat.err();
    ::kill(chat.pid(), SIGINT);
    ASSERT_TRUE(eventually([&] { return stops() == stops_before + 1 || !chat.running(); }, 10))
        << "Ctrl-C did not stop the answer: " << chat.err();
    ASSERT_TRUE(chat.running()) << "Ctrl-C during an answer ended chat: " << chat.err();
    const size_t stopped_at = chat.out().size();
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    EXPECT_EQ(chat.out().size(), stopped_at) << "the answer went on after Ctrl-C";
  };
  ask_and_stop("Write a very long story about a dragon who learns to cook.");
  ask_and_stop("What happens next?");
  const auto counts = prompt_counts(chat.err());
  ASSERT_EQ(counts.size(), 2u) << chat.err();
  EXPECT_LT(counts[1], counts[0]) << "the second turn evaluates only what is new: " << chat.err();

  // At the prompt (after /help is answered), stdin still open: Ctrl-C leaves.
  ASSERT_TRUE(chat.write_stdin("/help\n"));
  ASSERT_TRUE(eventually([&] { return chat.err().find("commands:") != std::string::npos || !chat.running(); }, 10))
      << chat.err();
  ASSERT_TRUE(chat.running()) << chat.err();
  ::kill(chat.pid(), SIGINT);
  const auto t = Clock::now();
  EXPECT_EQ(chat.wait_exit(10), 0) << chat.err();
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - t).count(), 2.0);
}

// A line that no longer fits the context is refused; the conversation goes on (/reset frees it).
TEST(Chat, TurnBeyondTheContextIsRefusedAndResetRecovers) {
  HERD_REQUIRE_FILE(smollm2_path());
  std::string long_line;
  for (int i = 0; i < 20; ++i) long_line += "Tell me about the sea. ";  // ~120 tokens: one fits in 256, two do not
  const auto r = herd({"chat", "-m", smollm2_path(), "--temp", "0", "-n", "4", "-c", "256", "--speed"}, 300,
                      long_line + "\n" + long_line + "\n/reset\nHi\n");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(count(r.err, "/reset starts a new conversation"), 1u) << r.err;
  EXPECT_EQ(prompt_counts(r.err).size(), 2u) << "the first and the last line are answered: " << r.err;
}

}  // namespace
}  // namespace herd::test
