#pragma once
// Runs a check in a forked child whose descriptors are all taken, as on a worker flooded with
// silent connections ([trust] item 4). The child's exit code is the check's result.
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

namespace herd::test {

// In the child: `before()`, then every descriptor up to a limit of 256 taken (the last one's
// number is passed to `body`, which may close it to free one), then `body(last)`. Exit codes 90
// and 91 are setup failures.
template <class Before, class Body>
int with_no_free_descriptors(Before before, Body body) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    before();
    rlimit l{256, 256};
    if (::setrlimit(RLIMIT_NOFILE, &l) != 0) _exit(90);
    int last = -1;
    for (int fd; (fd = ::open("/dev/null", O_RDONLY)) >= 0;) last = fd;
    if (last < 0 || ::open("/dev/null", O_RDONLY) >= 0) _exit(91);  // really none left
    _exit(body(last));
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace herd::test
