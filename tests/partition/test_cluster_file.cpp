// The one cluster file (docs/cluster-file.md): worker lines (where a worker runs, how it starts,
// optionally what it is), the old device lines beside them, and hostile input: every error names
// the file, the line and the field.
#include <gtest/gtest.h>

#include <random>

#include "partition/plan_file.h"
#include "partition/profile.h"

namespace herd::partition {
namespace {

std::string error_of(const std::string& text) {
  try {
    parse_cluster(text, "c.txt");
  } catch (const ClusterError& e) {
    return e.what();
  }
  return "";
}

void expect_error(const std::string& text, const std::string& needle) {
  const std::string e = error_of(text);
  ASSERT_FALSE(e.empty()) << "no error for:\n" << text;
  EXPECT_NE(e.find(needle), std::string::npos) << e;
}

TEST(ClusterFileWorkers, WhereHowAndWhat) {
  const Cluster c = parse_cluster(
      "# the README's cluster\n"
      "host=127.0.0.1 port=7101 threads=1            # the old herd-cluster line: a worker\n"
      "worker host=127.0.0.1 port=7102 threads=2 name=second\n"
      "worker host=box2 port=7000 ssh=me@box2 model=/m/x.gguf herd=/opt/herd bind=0.0.0.0 mem=64GB bw=60GB/s "
      "flops=1.5T\n"
      "device name=gpu kind=cuda mem=24GB bw=900GB/s host=box2   # an old device line beside them\n"
      "link 127.0.0.1 box2 latency=0.2ms bw=1Gbit\n"
      "coordinator 127.0.0.1\n",
      "c.txt");
  ASSERT_EQ(c.devices.size(), 4u);
  ASSERT_EQ(c.workers.size(), 3u);
  const WorkerLine& w0 = c.workers[0];
  EXPECT_EQ(w0.line, 2);
  EXPECT_EQ(w0.host, "127.0.0.1");
  EXPECT_EQ(w0.port, 7101);
  EXPECT_EQ(w0.threads, 1);
  EXPECT_EQ(c.devices[w0.device].name, "127.0.0.1:7101");  // default name: its address
  EXPECT_EQ(c.devices[w0.device].address, "127.0.0.1:7101");
  EXPECT_FALSE(c.devices[w0.device].figures);
  EXPECT_EQ(c.devices[c.workers[1].device].name, "second");
  const WorkerLine& w2 = c.workers[2];
  EXPECT_EQ(w2.ssh, "me@box2");
  EXPECT_EQ(w2.model, "/m/x.gguf");
  EXPECT_EQ(w2.herd, "/opt/herd");
  EXPECT_EQ(w2.bind, "0.0.0.0");
  const DeviceProfile& d2 = c.devices[w2.device];
  EXPECT_TRUE(d2.figures);
  EXPECT_EQ(d2.total_bytes, 64000000000ull);
  EXPECT_DOUBLE_EQ(d2.bandwidth_Bps, 60e9);
  EXPECT_DOUBLE_EQ(d2.flops, 1.5e12);
  EXPECT_EQ(d2.host, "box2");
  EXPECT_TRUE(c.devices[3].address.empty());
  // The two local workers share a host (the local link); box2 and the gpu device share theirs.
  EXPECT_DOUBLE_EQ(c.link(0, 1).bandwidth_Bps, c.local_link.bandwidth_Bps);
  EXPECT_DOUBLE_EQ(c.link(2, 3).bandwidth_Bps, c.local_link.bandwidth_Bps);
  EXPECT_DOUBLE_EQ(c.link(0, 2).latency_s, 0.2e-3);
  EXPECT_EQ(c.coordinator(), "127.0.0.1");
  const auto missing = workers_without_figures(c);
  ASSERT_EQ(missing.size(), 2u);
  try {
    require_figures(c, "c.txt");
    FAIL() << "no error for workers without figures";
  } catch (const ClusterError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("c.txt:2: worker 127.0.0.1:7101 states no mem= and bw="), std::string::npos) << m;
    EXPECT_NE(m.find("c.txt:3: worker second"), std::string::npos) << m;
    EXPECT_NE(m.find("probe=FILE"), std::string::npos) << m;
  }
}

TEST(ClusterFileWorkers, TheShippedFilesParse) {
  // launch/local-cluster.txt (workers) and docs/clusters/*.txt (devices) are read by the same parser.
  const std::string root = HERD_SOURCE_DIR;
  EXPECT_EQ(load_cluster(root + "/launch/local-cluster.txt").workers.size(), 2u);
  EXPECT_EQ(load_cluster(root + "/docs/clusters/8b-3-laptops.txt").devices.size(), 3u);
  EXPECT_GE(load_cluster(root + "/docs/clusters/workers-home.txt").workers.size(), 3u);
  // herd lab's file (cpu= quotas) and prima.cpp's cluster (disk= speeds) are the same format.
  const Cluster lab = load_cluster(root + "/docs/lab/four-boxes.txt");
  ASSERT_GE(lab.workers.size(), 1u);
  EXPECT_DOUBLE_EQ(lab.workers[0].cpu, 0.5);
  const Cluster prima = load_cluster(root + "/docs/clusters/70b-prima-home.txt");
  EXPECT_EQ(prima.devices.size(), 6u);
  EXPECT_DOUBLE_EQ(prima.devices[0].disk_Bps, 2.5e9);
}

TEST(ClusterFileWorkers, MalformedWorkerLinesNameLineAndField) {
  const std::string ok = "worker host=127.0.0.1 port=7101\n";
  expect_error(ok + "worker port=7102\n", "c.txt:2: worker needs host=");
  expect_error(ok + "worker host=a\n", "c.txt:2: worker a needs port=");
  expect_error(ok + "host=a port=seven\n", "c.txt:2: port must be a whole number in 1-65535, got 'seven'");
  expect_error(ok + "host=a port=0\n", "c.txt:2: port must be");
  expect_error(ok + "host=a port=70000\n", "c.txt:2: port must be");
  expect_error(ok + "host=a port=-5\n", "c.txt:2: port must be");
  expect_error(ok + "host=a port=7 threads=many\n", "c.txt:2: threads must be a whole number");
  expect_error(ok + "host=a port=7 threads=1e3\n", "c.txt:2: threads must be");
  expect_error(ok + "host=a port=7 colour=blue\n", "c.txt:2: unknown key 'colour' on a worker line");
  expect_error(ok + "host=a port=7 cpu=0\n", "c.txt:2: cpu must be a number of cores in 0.01-1024");
  expect_error(ok + "host=a port=7 cpu=half\n", "c.txt:2: cpu must be");
  expect_error(ok + "host=a port=7 port=8\n", "c.txt:2: key 'port' given twice");
  expect_error(ok + "host=a port=\n", "c.txt:2: port has an empty value");
  expect_error(ok + "host=a =7\n", "c.txt:2: '=7' must be key=value");
  expect_error(ok + "worker host=a port=7 stray\n", "c.txt:2: 'stray' must be key=value");
  expect_error(ok + "worker stray host=a port=7\n", "c.txt:2: worker takes only key=value pairs, got 'stray'");
  expect_error(ok + "worker host=127.0.0.1 port=7101\n", "c.txt:2: two workers at 127.0.0.1:7101");
  expect_error(ok + "worker host=b port=1 name=127.0.0.1:7101\n", "c.txt:2: duplicate name '127.0.0.1:7101'");
  expect_error(ok + "worker host=b port=1 mem=8GB\n", "c.txt:2: worker b:1 states some figures but not bw=");
  expect_error(ok + "worker host=b port=1 bw=8GB/s\n", "but not mem=");
  expect_error(ok + "worker host=b port=1 flops=1T\n", "but not mem= and bw=");
  expect_error(ok + "worker host=b port=1 mem=8GB bw=fast\n", "c.txt:2: 'fast'");
  expect_error(ok + "worker host=b port=1 mem=8GB free=9GB bw=1GB/s\n", "c.txt:2: worker b:1: free is larger than mem");
  expect_error(ok + "worker host=b port=1 mem=1e30GB bw=1GB/s\n", "c.txt:2: '1e30GB' is too large a size");
  expect_error(ok + "worker host=b port=1 device=tpu\n", "c.txt:2: unknown device 'tpu' (cpu, cuda:N, metal)");
  expect_error(ok + "worker host=b port=1 probe=/nonexistent/p.json\n", "c.txt:2: ");
  expect_error(std::string("host=a port=7\n") + std::string(1, '\0') + "\n", "c.txt:2: a NUL byte");
  expect_error(ok + "link 127.0.0.1 mars latency=1ms bw=1Gbit\n", "link names 'mars'");
  expect_error("   \n# only comments\n", "no devices or workers");
}

// Random garbage and random mutations of a good file: the parser either accepts or throws a
// ClusterError that names the file and a line; it never crashes or throws anything else.
TEST(ClusterFileWorkers, FuzzedLinesFailCleanly) {
  const std::string good =
      "worker host=127.0.0.1 port=7101 threads=1 mem=8GB bw=20GB/s\n"
      "worker host=box port=7000 ssh=me@box probe=p.json\n"
      "device name=gpu kind=cuda mem=24GB bw=900GB/s\n"
      "link default latency=0.3ms bw=1Gbit\n";
  std::mt19937 rng(1234);
  const std::string alphabet = "=# \tabcdefhlmnoprstuwxyz0123456789.:/-_@GBMTsKi\n\x01\xff";
  int accepted = 0, refused = 0;
  for (int i = 0; i < 3000; ++i) {
    std::string t = good;
    const int edits = 1 + static_cast<int>(rng() % 6);
    for (int e = 0; e < edits; ++e) {
      const size_t at = rng() % (t.size() + 1);
      const char ch = alphabet[rng() % alphabet.size()];
      switch (rng() % 3) {
        case 0: t.insert(t.begin() + static_cast<long>(at), ch); break;
        case 1: if (at < t.size()) t.erase(at, 1); break;
        default: if (at < t.size()) t[at] = ch;
      }
    }
    try {
      parse_cluster(t, "fuzz.txt");
      ++accepted;
    } catch (const ClusterError& e) {
      ++refused;
      EXPECT_EQ(std::string(e.what()).rfind("fuzz.txt", 0), 0u) << e.what();
    } catch (const std::exception& e) {
      ADD_FAILURE() << "not a ClusterError: " << e.what() << "\nfor:\n" << t;
    }
  }
  EXPECT_GT(refused, 100);  // the mutations do hit the checks
  EXPECT_GT(accepted + refused, 2999);
}

// `herd plan --json` read back: the stages, groups and predictions; broken files named.
TEST(PlanFile, ReadsWhatPlanJsonWritesAndRefusesBrokenOnes) {
  const std::string head = R"({"model": {"name": "m", "layers": 4}, "model_config": {"arch": "llama", "n_embd": 64},
    "devices": [{"name": "a", "address": "127.0.0.1:1"}, {"name": "b", "address": "127.0.0.1:2"},
                {"name": "c", "address": "127.0.0.1:3"}],
    "plans": [)";
  const std::string ok = head + R"({"strategy": "even", "fits": true,
      "stages": [{"device": "b", "first": 0, "end": 1, "decode_s": 0.001, "tp": 1},
                 {"device": "a", "first": 1, "end": 4, "decode_s": 0.003, "tp": 1}],
      "hops": [{"from": "b", "to": "a", "decode_s": 0.0002}], "decode_tok_s": 200,
      "coordinator_in_s": 0.0001, "coordinator_out_s": 0.0001}]})";
  const PlanFile p = parse_plan_file(ok, "p.json");
  ASSERT_EQ(p.stages.size(), 2u);
  EXPECT_EQ(p.stages[0].devices, std::vector<size_t>{1});
  EXPECT_EQ(p.stages[1].first, 1);
  EXPECT_EQ(p.n_embd, 64);
  EXPECT_EQ(p.group(), 1u);
  ASSERT_EQ(p.hop_s.size(), 1u);
  EXPECT_DOUBLE_EQ(p.hop_s[0], 0.0002);
  auto err = [](const std::string& text) {
    try {
      parse_plan_file(text, "p.json");
    } catch (const PlanFileError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(err("{not json").find("p.json: not JSON"), std::string::npos);
  EXPECT_NE(err("{}").find("not a plan"), std::string::npos);
  EXPECT_NE(err(head + R"({"strategy": "x", "fits": false, "error": "too big"}]})").find("does not fit: too big"),
            std::string::npos);
  EXPECT_NE(err(head + R"({"fits": true, "stages": []}, {"fits": true}]})").find("holds 2 plans"), std::string::npos);
  EXPECT_NE(err(head + R"({"fits": true, "stages": [{"device": "z", "first": 0, "end": 4}]}]})").find("names device 'z'"),
            std::string::npos);
  EXPECT_NE(err(head + R"({"fits": true, "stages": [{"device": "a", "first": 0, "end": 3}]}]})").find("end at layer 3 of 4"),
            std::string::npos);
  EXPECT_NE(err(head + R"({"fits": true, "stages": [{"device": "a", "first": 1, "end": 4}]}]})").find("stage 1: layers [1, 4)"),
            std::string::npos);
  EXPECT_NE(err(head + R"({"fits": true, "stages": [{"device": "a", "first": 0, "end": 2}, {"device": "a", "first": 2, "end": 4}]}]})")
                .find("runs two stages"),
            std::string::npos);
  EXPECT_NE(err(head + R"({"fits": true, "stages": [{"device": "a", "first": "0", "end": 4}]}]})").find("\"first\" has the wrong type"),
            std::string::npos);
  // Groups of different sizes: a run takes one size.
  const std::string mixed = head + R"({"fits": true, "stages": [
      {"device": "a", "first": 0, "end": 2, "tp": 2, "ranks": [{"device": "a", "weight": 1}, {"device": "b", "weight": 1}]},
      {"device": "c", "first": 2, "end": 4, "tp": 1}]}]})";
  EXPECT_NE(err(mixed).find("stage 2 is a group of 1 devices, an earlier one of 2"), std::string::npos) << err(mixed);
}

}  // namespace
}  // namespace herd::partition
