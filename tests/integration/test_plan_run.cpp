// Plan to run: `herd plan --cluster F --json` fed back with `--plan` runs exactly that plan over real
// workers on 127.0.0.1 (the stages, their layers and order, as the run's own report shows them), the
// herd-cluster script does the same from the one cluster file, the text is the one-process text,
// and a plan that does not match the workers or the model is refused naming the mismatch.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>

#include "tests/integration/cluster_util.h"
#include "tests/process.h"
#include "tests/test_paths.h"

namespace herd::test {
namespace {

using json = nlohmann::json;

struct StageLayers {
  std::string address;  // HOST:PORT
  int64_t first = 0, last = 0;
  bool operator==(const StageLayers&) const = default;
};

std::string temp(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("herd-plan-run-" + std::to_string(getpid()) + "-" + name)).string();
}

// The stages of the one plan in a `herd plan --json` output, by their devices' addresses.
std::vector<StageLayers> planned_stages(const std::string& plan_json) {
  const json j = json::parse(plan_json);
  std::map<std::string, std::string> address;
  for (const auto& d : j.at("devices")) address[d.at("name")] = d.value("address", "");
  std::vector<StageLayers> out;
  for (const auto& s : j.at("plans").at(0).at("stages"))
    out.push_back({address.at(s.at("device")), s.at("first").get<int64_t>(), s.at("end").get<int64_t>() - 1});
  return out;
}

// The stages as the run reports them at its end ("stage 2 127.0.0.1:PORT layers 3-4 ...").
std::vector<StageLayers> run_stages(const std::string& err) {
  std::vector<StageLayers> out;
  static const std::regex re(R"(\n  stage (\d+) (\S+) layers (\d+)-(\d+) )");
  for (std::sregex_iterator it(err.begin(), err.end(), re), end; it != end; ++it)
    out.push_back({(*it)[2], std::stoll((*it)[3]), std::stoll((*it)[4])});
  return out;
}

std::string port_of(const WorkerProcess& w) { return w.port(); }

// A port nobody listens on right now (bound to 0, read back, closed).
int free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

// Three workers whose stated figures make an uneven split (the third is 4x faster): the plan
// gives it the most layers, and `--strategy speed` puts it where its speed says.
std::string cluster_text(const std::vector<std::string>& ports) {
  return "worker host=127.0.0.1 port=" + ports[0] + " threads=1 mem=8GB bw=5GB/s\n"
         "worker host=127.0.0.1 port=" + ports[1] + " threads=1 mem=8GB bw=5GB/s\n"
         "worker host=127.0.0.1 port=" + ports[2] + " threads=1 mem=8GB bw=20GB/s\n";
}

std::vector<std::string> run_args(const std::string& model) {
  return {"run", "-m", model, "-p", "Once upon a time", "--temp", "0", "-n", "16", "-t", "1"};
}

TEST(PlanRun, PlanJsonFedBackRunsThatSplitOnRealWorkers) {
  const std::string model = model_path("stories260K.gguf");
  HERD_REQUIRE_FILE(model);
  WorkerProcess a, b, c;
  const std::string cl = temp("cluster.txt"), plan = temp("plan.json");
  std::ofstream(cl) << cluster_text({port_of(a), port_of(b), port_of(c)});
  const ProcessResult p = run_process({herd_bin(), "plan", "-m", model, "--cluster", cl, "--strategy", "speed", "--ctx",
                                       "256", "--json"}, 60);
  ASSERT_EQ(p.exit_code, 0) << p.err;
  std::ofstream(plan) << p.out;
  const auto want = planned_stages(p.out);
  ASSERT_EQ(want.size(), 3u) << p.out;
  EXPECT_GT(want[2].last - want[2].first, want[0].last - want[0].first) << "the faster worker should hold more layers";

  auto local = run_args(model);
  local.insert(local.begin(), herd_bin());
  const ProcessResult ref = run_process(local, 60);
  ASSERT_EQ(ref.exit_code, 0) << ref.err;

  auto args = run_args(model);
  args.insert(args.begin(), herd_bin());
  args.insert(args.end(), {"--workers", a.address() + "," + b.address() + "," + c.address(), "--plan", plan});
  const ProcessResult r = run_process(args, 120);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, ref.out) << "the same text as one process";
  EXPECT_NE(r.err.find("plan: " + plan + " (speed):"), std::string::npos) << r.err;
  EXPECT_EQ(run_stages(r.err), want) << r.err;
  // The report: measured beside the plan file's predictions, a row per stage and hop.
  EXPECT_NE(r.err.find("per decode token: mean of"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("beside " + plan + " (speed)"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("coordinator -> stage 1"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("stage 3 -> coordinator"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("token (submit -> result)"), std::string::npos) << r.err;

  // The workers in another order on the command line: the plan's order still holds (matched by address).
  args = run_args(model);
  args.insert(args.begin(), herd_bin());
  args.insert(args.end(), {"--workers", c.address() + "," + a.address() + "," + b.address(), "--plan", plan});
  const ProcessResult shuffled = run_process(args, 120);
  ASSERT_EQ(shuffled.exit_code, 0) << shuffled.err;
  EXPECT_EQ(shuffled.out, ref.out);
  EXPECT_EQ(run_stages(shuffled.err), want) << shuffled.err;
  std::remove(cl.c_str());
  std::remove(plan.c_str());
}

// A tensor-parallel plan (herd plan --tp 2) runs as that group, with the plan's shares.
TEST(PlanRun, TensorParallelPlanRunsAsItsGroup) {
  const std::string model = model_path("stories260K.gguf");
  HERD_REQUIRE_FILE(model);
  WorkerProcess a, b;
  const std::string cl = temp("cluster-tp.txt"), plan = temp("plan-tp.json");
  std::ofstream(cl) << "worker host=127.0.0.1 port=" << a.port() << " threads=1 mem=8GB bw=5GB/s\n"
                    << "worker host=127.0.0.1 port=" << b.port() << " threads=1 mem=8GB bw=10GB/s\n";
  const ProcessResult p =
      run_process({herd_bin(), "plan", "-m", model, "--cluster", cl, "--tp", "2", "--ctx", "256", "--json"}, 60);
  ASSERT_EQ(p.exit_code, 0) << p.err;
  std::ofstream(plan) << p.out;
  const json stage = json::parse(p.out).at("plans").at(0).at("stages").at(0);
  ASSERT_EQ(stage.at("tp").get<int>(), 2) << p.out;
  auto args = run_args(model);
  args.insert(args.begin(), herd_bin());
  args.insert(args.end(), {"--workers", b.address() + "," + a.address(), "--plan", plan});
  const ProcessResult r = run_process(args, 120);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // One stage: the group of both workers, in the plan's rank order (a first), all 5 layers.
  EXPECT_NE(r.err.find("worker 2 (" + a.address() + ")+worker 1 (" + b.address() + ") layers 0-4"), std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("stage 1 127.0.0.1:" + a.port() + " +1 tp layers 0-4"), std::string::npos) << r.err;
  std::remove(cl.c_str());
  std::remove(plan.c_str());
}

TEST(PlanRun, MismatchedPlansAreRefusedNamingTheMismatch) {
  const std::string model = model_path("stories260K.gguf");
  HERD_REQUIRE_FILE(model);
  WorkerProcess a, b, c;
  const std::string cl = temp("cluster2.txt"), plan = temp("plan2.json"), other = temp("other.json");
  std::ofstream(cl) << cluster_text({port_of(a), port_of(b), port_of(c)});
  ProcessResult p = run_process({herd_bin(), "plan", "-m", model, "--cluster", cl, "--ctx", "256", "--json"}, 60);
  ASSERT_EQ(p.exit_code, 0) << p.err;
  std::ofstream(plan) << p.out;
  auto run = [&](const std::string& workers, const std::string& plan_file, const std::string& m) {
    auto args = run_args(m);
    args.insert(args.begin(), herd_bin());
    args.insert(args.end(), {"--workers", workers, "--plan", plan_file});
    return run_process(args, 60);
  };
  // Two of its three workers.
  ProcessResult r = run(a.address() + "," + b.address(), plan, model);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("plans 3 devices but 2 workers are given"), std::string::npos) << r.err;
  // Three workers, one of them not the plan's.
  WorkerProcess d;
  r = run(a.address() + "," + b.address() + "," + d.address(), plan, model);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("127.0.0.1:" + c.port() + " is not among the workers"), std::string::npos) << r.err;
  // A plan for another model (randk: 4 layers, n_embd 512) run on stories260K (5 layers).
  p = run_process({herd_bin(), "plan", "-m", model_path("randk-Q8_0.gguf"), "--cluster", cl, "--ctx", "256", "--json"}, 60);
  ASSERT_EQ(p.exit_code, 0) << p.err;
  std::ofstream(other) << p.out;
  r = run(a.address() + "," + b.address() + "," + c.address(), other, model);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("was made for a model with layers 4"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("has 5"), std::string::npos) << r.err;
  // --compare output holds several plans; --plan with --split is one too many.
  p = run_process({herd_bin(), "plan", "-m", model, "--cluster", cl, "--ctx", "256", "--json", "--compare"}, 60);
  ASSERT_EQ(p.exit_code, 0) << p.err;
  std::ofstream(other) << p.out;
  r = run(a.address() + "," + b.address() + "," + c.address(), other, model);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("plans (herd plan --compare)"), std::string::npos) << r.err;
  auto args = run_args(model);
  args.insert(args.begin(), herd_bin());
  args.insert(args.end(), {"--plan", plan});
  r = run_process(args, 60);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--plan runs a plan over --workers"), std::string::npos) << r.err;
  for (const auto& f : {cl, plan, other}) std::remove(f.c_str());
}

// The one cluster file through herd-cluster: plan it, then run that plan with --plan.
TEST(PlanRun, HerdClusterRunsThePlanOfItsOwnFile) {
  const std::string model = model_path("stories260K.gguf");
  HERD_REQUIRE_FILE(model);
  const std::string script = (std::filesystem::path(herd_bin()).parent_path() / "herd-cluster").string();
  const std::vector<std::string> ports = {std::to_string(free_port()), std::to_string(free_port())};
  const std::string cl = temp("cluster3.txt"), plan = temp("plan3.json");
  std::ofstream(cl) << "# two local workers; the second is said to be 3x faster\n"
                    << "worker host=127.0.0.1 port=" << ports[0] << " threads=1 mem=8GB bw=5GB/s\n"
                    << "host=127.0.0.1 port=" << ports[1] << " threads=1 mem=8GB bw=15GB/s   # the old form\n"
                    << "link local latency=50us bw=5GB/s\n";
  const ProcessResult p = run_process({herd_bin(), "plan", "-m", model, "--cluster", cl, "--strategy", "speed", "--ctx",
                                       "256", "--json"}, 60);
  ASSERT_EQ(p.exit_code, 0) << p.err;
  std::ofstream(plan) << p.out;
  const auto want = planned_stages(p.out);
  ASSERT_EQ(want.size(), 2u);
  auto args = run_args(model);
  args.insert(args.begin(), {script, cl, "--plan", plan, "--"});
  const ProcessResult r = run_process(args, 120);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(run_stages(r.err), want) << r.err;
  EXPECT_NE(r.err.find("plan: " + plan), std::string::npos) << r.err;
  // A device line cannot be started: the script says which worker line to write instead.
  std::ofstream(cl) << "device name=gpu kind=cuda mem=24GB bw=900GB/s host=box\n";
  const ProcessResult bad = run_process({script, cl, "--", "run", "-m", model, "-p", "x"}, 30);
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("worker name=gpu host=box port=PORT device=cuda"), std::string::npos) << bad.err;
  std::remove(cl.c_str());
  std::remove(plan.c_str());
}

// herd plan on worker lines without figures: on 127.0.0.1 it probes this host; elsewhere it names
// each line that lacks them.
TEST(PlanRun, WorkersWithoutFiguresAreProbedHereOrNamed) {
  const std::string model = model_path("stories260K.gguf");
  HERD_REQUIRE_FILE(model);
  const std::string cl = temp("cluster4.txt");
  std::ofstream(cl) << "worker host=127.0.0.1 port=7101 threads=1\nworker host=127.0.0.1 port=7102 threads=1\n";
  ProcessResult p = run_process({herd_bin(), "plan", "-m", model, "--cluster", cl, "--ctx", "256", "--json"}, 120);
  ASSERT_EQ(p.exit_code, 0) << p.err;
  EXPECT_NE(p.err.find("probed this host for its workers with threads=1"), std::string::npos) << p.err;
  const json j = json::parse(p.out);
  EXPECT_EQ(j.at("devices").at(0).at("address"), "127.0.0.1:7101");
  EXPECT_GT(j.at("devices").at(1).at("bandwidth_Bps").get<double>(), 0);
  std::ofstream(cl) << "worker host=127.0.0.1 port=7101 threads=1 mem=8GB bw=5GB/s\n"
                    << "worker host=box2.lan port=7000 ssh=me@box2.lan\n";
  p = run_process({herd_bin(), "plan", "-m", model, "--cluster", cl}, 60);
  EXPECT_EQ(p.exit_code, 1);
  EXPECT_NE(p.err.find(cl + ":2: worker box2.lan:7000 states no mem= and bw="), std::string::npos) << p.err;
  std::remove(cl.c_str());
}

}  // namespace
}  // namespace herd::test
