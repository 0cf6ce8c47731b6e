#!/usr/bin/env bash
# attnserve_loadgen against a real server: 40 Attend requests at concurrency 4 all succeed and the
# last line is the JSON summary.   usage: loadgen_test.sh SERVER_BINARY LOADGEN_BINARY
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
summary=$("$here/run_with_server.sh" "$1" bash -c \
  'exec "$0" --target="$2" --rpc=attend --model=demo-rope --seq=16 --concurrency=4 --requests=40' \
  "$2" | grep '^{' | tail -1)
echo "$summary"
/usr/bin/python3 - "$summary" <<'PY'
import json, sys
s = json.loads(sys.argv[1])
assert s["requests"] == 40, s
assert s["errors"] == {}, s
assert s["rps"] > 0 and 0 < s["p50_ms"] <= s["p90_ms"] <= s["p99_ms"], s
print("loadgen summary OK")
PY
