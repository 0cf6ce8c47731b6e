#!/usr/bin/env bash
# The /metrics exposition after real traffic passes Prometheus's own linter (promtool check
# metrics: naming conventions, counter suffixes, help and type lines).
#   usage: metrics_lint_test.sh SERVER_BINARY STUBS_DIR
set -euo pipefail
server=$1
stubs=$2
here=$(cd "$(dirname "$0")" && pwd)
log=$(mktemp)
"$server" --grpc_address=127.0.0.1:0 --metrics_address=127.0.0.1:0 --http_address=127.0.0.1:0 >"$log" 2>&1 &
pid=$!
trap 'kill -9 $pid 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 200); do
  grep -q "metrics listening" "$log" && break
  sleep 0.1
done
grpc=$(sed -n 's/.*gRPC listening on \([0-9.]*:[0-9]*\).*/\1/p' "$log")
metrics=$(sed -n 's/.*metrics listening on \(http[^ ]*\).*/\1/p' "$log")
[ -n "$grpc" ] && [ -n "$metrics" ] || { cat "$log"; echo "server did not start" >&2; exit 1; }

# Traffic: successful and failing calls of several RPCs (the README's client example does both).
/usr/bin/python3 "$here/../../clients/python/example.py" --address "$grpc" --stubs "$stubs" >/dev/null
scrape=$(curl -sf "$metrics")
grep -q 'grpc_server_handled_total{.*grpc_code="INVALID_ARGUMENT"' <<<"$scrape" \
  || { echo "no failed call in the scrape" >&2; exit 1; }
promtool check metrics <<<"$scrape"
echo "promtool check metrics: OK ($(grep -vc '^#' <<<"$scrape") samples)"
kill -TERM $pid
wait $pid
