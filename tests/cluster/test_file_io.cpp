// common/file_io: opening files when no descriptor is free. A worker flooded with silent
// connections ([trust] item 4) had every descriptor taken when the coordinator's Assign arrived,
// and refused it: "cannot read <model> to hash it". These opens now wait for a descriptor (the
// silent connections hold theirs only until ZeroMQ's handshake deadline).
#include <fcntl.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "cluster/sha256.h"
#include "common/file_io.h"
#include "model/gguf.h"
#include "tests/no_free_descriptors.h"
#include "tests/test_paths.h"
#include "transport/security.h"
#include "transport/zmq_link.h"

namespace herd {
namespace {

using test::with_no_free_descriptors;

// Closes `fd` and the `more` below it after 300 ms, as silent connections reaching their
// handshake deadline would.
std::thread free_later(int fd, int more = 0) {
  return std::thread([fd, more] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    for (int i = 0; i <= more; ++i) ::close(fd - i);
  });
}

TEST(FileIo, AnOpenIsServedByADescriptorFreedDuringTheWait) {
  const int rc = with_no_free_descriptors([] {}, [](int last) {
    if (::open("/dev/null", O_RDONLY) >= 0 || errno != EMFILE) return 1;  // a plain open fails
    std::thread t = free_later(last);
    const int fd = open_waiting("/dev/null", O_RDONLY | O_CLOEXEC);
    t.join();
    return fd >= 0 ? 0 : 2;
  });
  EXPECT_EQ(rc, 0) << "1: a plain open did not fail, 2: open_waiting failed, 9x: setup";
}

TEST(FileIo, AnOpenGivesUpWithEmfileWhenNoDescriptorIsFreedInTime) {
  const int rc = with_no_free_descriptors([] {}, [](int) {
    const int fd = open_waiting("/dev/null", O_RDONLY | O_CLOEXEC, 0, 50);
    if (fd >= 0) return 1;
    return errno == EMFILE ? 0 : 2;
  });
  EXPECT_EQ(rc, 0) << "1: opened with no descriptor free, 2: errno is not EMFILE, 9x: setup";
}

// An absent file is not waited for: a wait here would run past the test's timeout.
TEST(FileIo, AnAbsentFileFailsAtOnceWithEnoent) {
  EXPECT_EQ(open_waiting("/nonexistent-herd-test/x", O_RDONLY, 0, 3'600'000), -1);
  EXPECT_EQ(errno, ENOENT);
  std::string s = "kept";
  EXPECT_FALSE(read_whole_file("/nonexistent-herd-test/x", s));
  EXPECT_EQ(errno, ENOENT);
  EXPECT_EQ(s, "kept");
}

TEST(FileIo, WholeFilesRoundTripAndAnOverLongOneIsRefused) {
  const std::string path = std::filesystem::temp_directory_path() / ("herd-file-io-" + std::to_string(getpid()));
  std::string data(100'000, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 131 + 7);
  ASSERT_TRUE(write_whole_file(path, data));
  std::string got;
  ASSERT_TRUE(read_whole_file(path, got));
  EXPECT_EQ(got, data);
  ASSERT_TRUE(write_whole_file(path, "short"));  // truncates
  ASSERT_TRUE(read_whole_file(path, got));
  EXPECT_EQ(got, "short");
  EXPECT_FALSE(read_whole_file(path, got, 4));
  EXPECT_EQ(errno, EFBIG);
  EXPECT_EQ(got, "short");  // untouched on failure
  std::remove(path.c_str());
  EXPECT_FALSE(write_whole_file("/nonexistent-herd-test/x", "y"));
}

// What the worker does on an Assign: hash its copy of the model and map it.
TEST(FileIo, TheWorkersModelIsHashedAndOpenedWhenADescriptorIsFreedDuringTheWait) {
  const std::string model = test::model_path("stories260K.gguf");
  const uint64_t n = std::filesystem::file_size(model);
  const std::string digest = cluster::sha256_file_prefix(model, n);
  const int rc = with_no_free_descriptors([] {}, [&](int last) {
    std::thread t = free_later(last);
    std::string got;
    try {
      got = cluster::sha256_file_prefix(model, n);
    } catch (...) {
      t.join();
      return 1;
    }
    t.join();
    if (got != digest) return 2;
    // The digest's descriptor is closed again: the GGUF open takes that one.
    try {
      auto f = model::GgufFile::open(model);
      if (f->tensors().empty()) return 3;
    } catch (...) {
      return 4;
    }
    return 0;
  });
  EXPECT_EQ(rc, 0) << "1: hashing threw, 2: another digest, 3: no tensors, 4: GGUF open threw, 9x: setup";
}

// A stage's link to the next one is a ZeroMQ socket and its monitor: each takes a descriptor.
TEST(FileIo, ALinkToTheNextStageIsMadeWhenDescriptorsAreFreedDuringTheWait) {
  transport::configure_security({true, ""});
  const int rc = with_no_free_descriptors([] { (void)transport::zmq_context(); }, [](int last) {
    std::thread t = free_later(last, 7);
    try {
      transport::ZmqLink link("tcp://127.0.0.1:9", false);  // nothing listens: connecting is lazy
    } catch (...) {
      t.join();
      return 2;
    }
    t.join();
    return 0;
  });
  EXPECT_EQ(rc, 0) << "2: the link threw, 9x: setup";
  transport::configure_security({false, ""});
}

}  // namespace
}  // namespace herd
