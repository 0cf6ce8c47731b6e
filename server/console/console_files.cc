#include "server/console/console_files.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/strip.h"

namespace attnserve {

const ConsoleFile* FindConsoleFile(absl::string_view path) {
  absl::string_view name;
  if (path == "/") {
    name = "index.html";
  } else if (!absl::ConsumePrefix(&path, "/console/")) {
    return nullptr;
  } else {
    name = path;
  }
  // Only the embedded names are reachable: a path is looked up, never joined to a folder.
  const absl::Span<const ConsoleFile> files = ConsoleFiles();
  const auto it = std::lower_bound(
      files.begin(), files.end(), name,
      [](const ConsoleFile& file, absl::string_view wanted) { return file.name < wanted; });
  return it != files.end() && it->name == name ? &*it : nullptr;
}

absl::string_view ContentTypeOf(absl::string_view name) {
  struct Type {
    absl::string_view extension;
    absl::string_view content_type;
  };
  static constexpr Type kTypes[] = {
      {".html", "text/html; charset=utf-8"},
      {".js", "text/javascript; charset=utf-8"},
      {".css", "text/css; charset=utf-8"},
      {".svg", "image/svg+xml"},
      {".png", "image/png"},
      {".json", "application/json"},
  };
  for (const Type& type : kTypes) {
    if (absl::EndsWith(name, type.extension)) return type.content_type;
  }
  return "application/octet-stream";
}

}  // namespace attnserve
