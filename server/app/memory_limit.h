// How much memory this process may use, for sizing the default memory budget: the container's
// limit (cgroup v2 memory.max, or v1 memory.limit_in_bytes) when one is set, else the machine's
// physical memory.
#ifndef ATTNSERVE_SERVER_APP_MEMORY_LIMIT_H_
#define ATTNSERVE_SERVER_APP_MEMORY_LIMIT_H_

#include <cstdint>
#include <string>

namespace attnserve {

struct MemoryLimit {
  int64_t bytes = 0;
  std::string source;  // "the container's memory limit" or "the machine's memory"
};

// `cgroup_root` is where the cgroup file system is mounted (tests point it elsewhere).
MemoryLimit DetectMemoryLimit(const std::string& cgroup_root = "/sys/fs/cgroup");

}  // namespace attnserve

#endif  // ATTNSERVE_SERVER_APP_MEMORY_LIMIT_H_
