#include "common/file_io.h"

#include <fcntl.h>
#include <unistd.h>


namespace herd {

int open_waiting(const std::string& path, int flags, mode_t mode, int wait_ms) {
  int fd = -1;
  retry_while_no_descriptor([&] { return (fd = ::open(path.c_str(), flags, mode)) >= 0; }, wait_ms);
  return fd;
}

bool read_whole_file(const std::string& path, std::string& out, size_t max_bytes) {
  const int fd = open_waiting(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  std::string s;
  char buf[1 << 14];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 || s.size() + static_cast<size_t>(n) > max_bytes) {
      const int saved = n < 0 ? errno : EFBIG;
      ::close(fd);
      errno = saved;
      return false;
    }
    if (n == 0) break;
    s.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  out = std::move(s);
  return true;
}

bool write_whole_file(const std::string& path, const std::string& data) {
  const int fd = open_waiting(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return false;
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int saved = errno;
      ::close(fd);
      errno = saved;
      return false;
    }
    done += static_cast<size_t>(n);
  }
  if (::close(fd) != 0) return false;
  return true;
}

}  // namespace herd
