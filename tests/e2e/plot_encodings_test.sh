#!/usr/bin/env bash
# The encoding and attention plots render from a real server: each subcommand writes a PNG
# (checked by its signature and a plausible size; tests/e2e/client_e2e_test.py checks the numbers
# `plot attention` draws).   usage: plot_encodings_test.sh SERVER_BINARY STUBS_DIR
set -euo pipefail
server=$1
stubs=$2
here=$(cd "$(dirname "$0")" && pwd)
plot="$here/../../clients/python/plot_encodings.py"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

render() {
  local name=$1
  shift
  "$here/run_with_server.sh" "$server" /usr/bin/python3 "$plot" "$@" --stubs "$stubs" \
    --out "$out/$name.png"
  local signature size
  signature=$(head -c 8 "$out/$name.png" | od -An -tx1 | tr -d ' \n')
  size=$(stat -c %s "$out/$name.png")
  [ "$signature" = "89504e470d0a1a0a" ] || { echo "$name.png is not a PNG" >&2; exit 1; }
  [ "$size" -gt 10000 ] || { echo "$name.png has only $size bytes" >&2; exit 1; }
  echo "OK $name.png ($size bytes)"
}

render matrix matrix --variant tensor2tensor --positions 40 --d_model 32
render bias bias --model demo-alibi --causal
render rope rope --scaling yarn --factor 4 --original_max_positions 32
render attention attention --model demo-alibi --seq 16 --causal --heads 0,8
render attention_cross attention --model demo-nope-gqa --seq 6 --kv_len 20 --heads 4-7
