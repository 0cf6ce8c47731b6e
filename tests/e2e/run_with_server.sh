#!/usr/bin/env bash
# Starts attnserve on free loopback ports, runs a client command with `--address HOST:PORT` (the
# gRPC port) appended and ATTNSERVE_HTTP_ADDRESS=HOST:PORT (the KServe v2 REST door) in its
# environment, stops the server with SIGTERM and fails unless both the client and the server's
# shutdown succeeded.   usage: run_with_server.sh SERVER_BINARY CLIENT_COMMAND [ARGS…]
set -euo pipefail
server=$1
shift
log=$(mktemp)
"$server" --grpc_address=127.0.0.1:0 --metrics_address=127.0.0.1:0 --http_address=127.0.0.1:0 >"$log" 2>&1 &
pid=$!
trap 'kill -9 $pid 2>/dev/null || true; rm -f "$log"' EXIT

address=""
for _ in $(seq 200); do
  address=$(sed -n 's/.*gRPC listening on \([0-9.]*:[0-9]*\).*/\1/p' "$log")
  [ -n "$address" ] && break
  kill -0 $pid 2>/dev/null || { cat "$log"; echo "server exited before listening" >&2; exit 1; }
  sleep 0.1
done
[ -n "$address" ] || { cat "$log"; echo "server did not report its address in 20 s" >&2; exit 1; }

ATTNSERVE_HTTP_ADDRESS=$(sed -n 's/.*HTTP (KServe v2) listening on http:\/\/\([0-9.]*:[0-9]*\).*/\1/p' "$log")
export ATTNSERVE_HTTP_ADDRESS
"$@" --address "$address"
kill -TERM $pid
wait $pid
echo "server stopped cleanly"
