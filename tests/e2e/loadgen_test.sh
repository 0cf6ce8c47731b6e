#!/usr/bin/env bash
# attnserve_loadgen against a real server: 40 Attend requests at concurrency 4 all succeed, and so
# do 2 whose responses exceed gRPC's default 4 MiB receive limit (1 × 2100 × 512 float32 = 4.3 MB);
# the last line of each run is its JSON summary. Then a mix of Attend, Encode and SDPA with half of
# the requests malformed: each malformed one ends with its own code (NOT_FOUND, INVALID_ARGUMENT),
# --expect_codes=OK passes and lists the failed calls' request ids, and --expect_codes naming a
# code the calls do not get exits 3 with every request counted as unexpected. Decode steps on
# streams and an open-loop rate run end OK too, and so does Attend through the KServe v2 doors
# (--protocol=kserve-grpc, kserve-http with binary and JSON tensors), malformed ones with their codes.
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
# Decode streams: 2 threads × 10 steps of 2 tokens, a new stream every 4 steps; and open-loop
# Attend at 100 requests/s: 30 requests take about 0.3 s, however fast the server answers.
summary=$("$here/run_with_server.sh" "$1" bash -c \
  'exec "$0" --target="$2" --rpc=decode --model=demo-rope --concurrency=2 --requests=20 \
   --tokens_per_step=2 --steps_per_stream=4' "$2" | grep '^{' | tail -1)
echo "$summary"
check "$summary" 20
/usr/bin/python3 -c 'import json,sys; s=json.loads(sys.argv[1]); assert abs(s["tokens_per_s"] - 2 * s["rps"]) < 1e-6 * s["rps"], s' "$summary"
summary=$("$here/run_with_server.sh" "$1" bash -c \
  'exec "$0" --target="$2" --rpc=attend --model=demo-rope --seq=8 --concurrency=4 --rate=100 \
   --requests=30' "$2" | grep '^{' | tail -1)
echo "$summary"
check "$summary" 30
/usr/bin/python3 -c 'import json,sys; s=json.loads(sys.argv[1]); assert s["rate"] == 100 and s["seconds"] >= 0.28 and s["rps"] <= 110, s' "$summary"

# The KServe v2 doors: ModelInfer over gRPC, and over HTTP with binary and with JSON tensors, a
# fifth of the requests malformed, each ending with its own code.
for protocol in kserve-grpc kserve-http:binary kserve-http:json; do
  summary=$("$here/run_with_server.sh" "$1" bash -c \
    'exec "$0" --target="$3" --http_target="$ATTNSERVE_HTTP_ADDRESS" --protocol="${1%%:*}" \
     --http_body="${1#*:}" --rpc=attend --model=demo-rope --seq=8 --concurrency=2 --requests=40 \
     --invalid_fraction=0.2 --expect_codes=OK' "$2" "$protocol" | grep '^{' | tail -1)
  echo "$protocol: $summary"
  /usr/bin/python3 - "$summary" <<'PY'
import json, sys
s = json.loads(sys.argv[1])
assert s["sent"] == 40 and s["codes"] == {"OK": s["requests"]} and s["requests"] > 0, s
assert set(s["invalid_codes"]) <= {"NOT_FOUND", "INVALID_ARGUMENT"}, s
assert s["unexpected"] == 0 and s["p50_ms"] > 0, s
PY
done

# Every run below prints its summary and then "exit=STATUS".
mixed=$("$here/run_with_server.sh" "$1" bash -c \
  '"$0" --target="$2" --rpc=attend,encode,sdpa --model=demo-rope --seq=16 --concurrency=2 \
   --requests=60 --invalid_fraction=0.5 --expect_codes=OK --request_id_prefix=t; echo "exit=$?"' \
  "$2")
echo "$mixed"
wrong=$("$here/run_with_server.sh" "$1" bash -c \
  '"$0" --target="$2" --rpc=encode --seq=16 --requests=4 --expect_codes=RESOURCE_EXHAUSTED \
   2>/dev/null; echo "exit=$?"' "$2")
echo "$wrong"
/usr/bin/python3 - "$mixed" "$wrong" <<'PY'
import json, sys
def parse(out):
    lines = out.splitlines()
    summary = json.loads([l for l in lines if l.startswith("{")][-1])
    return summary, [l for l in lines if l.startswith("exit=")][-1]
s, status = parse(sys.argv[1])
assert status == "exit=0", status
assert s["sent"] == 60 and s["codes"] == {"OK": s["requests"]}, s
assert set(s["invalid_codes"]) == {"NOT_FOUND", "INVALID_ARGUMENT"}, s
assert sum(s["invalid_codes"].values()) + s["requests"] == 60 and s["unexpected"] == 0, s
assert sum(len(ids) for ids in s["request_ids"].values()) == sum(s["invalid_codes"].values()), s
assert all(i.startswith("t-") for ids in s["request_ids"].values() for i in ids), s
s, status = parse(sys.argv[2])
assert status == "exit=3", status
assert s["codes"] == {"OK": 4} and s["unexpected"] == 4, s
print("loadgen mix, malformed requests and --expect_codes OK")
PY
