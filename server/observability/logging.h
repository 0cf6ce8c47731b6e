// The server's log formats: human-readable text, or one JSON object per line for log pipelines.
#ifndef ATTNSERVE_SERVER_OBSERVABILITY_LOGGING_H_
#define ATTNSERVE_SERVER_OBSERVABILITY_LOGGING_H_

#include <string>

namespace attnserve {

enum class LogFormat { kText, kJson };

// Sets spdlog's default logger's format. kJson writes every line as
//   {"time":"2026-11-23T04:11:06.123Z","level":"info","msg":"…"}
// with the message escaped as a JSON string (so a message cannot break the line or forge fields).
void SetLogFormat(LogFormat format);

// The current time as "2026-11-23T04:11:06.123Z" (UTC, milliseconds), the JSON lines' "time".
std::string LogTimestamp();

}  // namespace attnserve

#endif  // ATTNSERVE_SERVER_OBSERVABILITY_LOGGING_H_
