#include "server/app/memory_limit.h"

#include <unistd.h>

#include <fstream>
#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"

namespace attnserve {
namespace {

// The number in a cgroup file; nullopt when it is absent, "max" (no limit) or not a number.
std::optional<int64_t> ReadLimit(const std::string& path) {
  std::ifstream in(path);
  std::string text;
  if (!in || !std::getline(in, text)) return std::nullopt;
  int64_t bytes = 0;
  if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(text), &bytes) || bytes <= 0) {
    return std::nullopt;
  }
  return bytes;
}

}  // namespace

MemoryLimit DetectMemoryLimit(const std::string& cgroup_root) {
  const int64_t physical = static_cast<int64_t>(sysconf(_SC_PHYS_PAGES)) * sysconf(_SC_PAGESIZE);
  for (const char* file : {"/memory.max", "/memory/memory.limit_in_bytes"}) {
    // cgroup v1 writes a huge number for "no limit": only a limit below the machine's counts.
    if (std::optional<int64_t> limit = ReadLimit(cgroup_root + file);
        limit.has_value() && *limit < physical) {
      return {*limit, "the container's memory limit"};
    }
  }
  return {physical, "the machine's memory"};
}

}  // namespace attnserve
