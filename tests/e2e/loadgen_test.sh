#!/usr/bin/env bash
# attnserve_loadgen against a real server: 40 Attend requests at concurrency 4 all succeed, and so
# do 2 whose responses exceed gRPC's default 4 MiB receive limit (1 × 2100 × 512 float32 = 4.3 MB);
# the last line of each run is its JSON summary.
#   usage: loadgen_test.sh SERVER_BINARY LOADGEN_BINARY
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
check() {
  /usr/bin/python3 - "$1" "$2" <<'PY'
import json, sys
s, expected = json.loads(sys.argv[1]), int(sys.argv[2])
assert s["requests"] == expected, s
assert s["errors"] == {}, s
assert s["rps"] > 0 and 0 < s["p50_ms"] <= s["p90_ms"] <= s["p99_ms"], s
print("loadgen summary OK")
PY
}
summary=$("$here/run_with_server.sh" "$1" bash -c \
  'exec "$0" --target="$2" --rpc=attend --model=demo-rope --seq=16 --concurrency=4 --requests=40' \
  "$2" | grep '^{' | tail -1)
echo "$summary"
check "$summary" 40
summary=$("$here/run_with_server.sh" "$1" bash -c \
  'exec "$0" --target="$2" --rpc=attend --model=demo-sinusoidal --seq=2100 --concurrency=1 --requests=2' \
  "$2" | grep '^{' | tail -1)
echo "$summary"
check "$summary" 2
