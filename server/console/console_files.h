// The web console's static files (server/console/assets), embedded in the binary at build time by
// cmake/embed_files.cmake, and how a URL path names one. docs/console.md is the user's view.
#ifndef ATTNSERVE_SERVER_CONSOLE_CONSOLE_FILES_H_
#define ATTNSERVE_SERVER_CONSOLE_CONSOLE_FILES_H_

#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace attnserve {

struct ConsoleFile {
  absl::string_view name;   // relative to server/console/assets, e.g. "console.js"
  absl::string_view bytes;  // the file's contents
};

// Every console file, sorted by name (defined in the generated console_files_data.cc).
absl::Span<const ConsoleFile> ConsoleFiles();

// The file a request path names: "/" is index.html, "/console/<name>" the file of that name;
// null for any other path (also for names with ".." or a query: the table is the whole space).
const ConsoleFile* FindConsoleFile(absl::string_view path);

// The Content-Type to send a console file with, from its extension.
absl::string_view ContentTypeOf(absl::string_view name);

}  // namespace attnserve

#endif  // ATTNSERVE_SERVER_CONSOLE_CONSOLE_FILES_H_
