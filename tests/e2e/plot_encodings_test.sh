#!/usr/bin/env bash
# The encoding and attention plots render from a real server: each subcommand writes a PNG
# (checked by its signature and a plausible size; tests/e2e/client_e2e_test.py checks the numbers
# `plot attention` draws) and rejects an unknown --cmap cleanly.
# usage: plot_encodings_test.sh SERVER_BINARY STUBS_DIR
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

# An unknown --cmap is an error line (exit 1, no traceback) naming it and the valid colour maps,
# in every subcommand that takes one.
for subcommand in "matrix" "bias --model demo-alibi" "rope" "attention --model demo-alibi"; do
  status=0
  # shellcheck disable=SC2086  # $subcommand is the subcommand and its arguments
  "$here/run_with_server.sh" "$server" /usr/bin/python3 "$plot" $subcommand --cmap nope \
    --stubs "$stubs" --out "$out/cmap.png" >/dev/null 2>"$out/cmap.err" || status=$?
  expected="^plot_encodings: error: --cmap 'nope' is not a matplotlib colour map; choose one of "
  if [ "$status" != 1 ] || grep -q Traceback "$out/cmap.err" ||
    ! grep -q "$expected.*viridis" "$out/cmap.err"; then
    cat "$out/cmap.err" >&2
    echo "$subcommand --cmap nope: exit $status, not the expected error" >&2
    exit 1
  fi
  echo "OK $subcommand --cmap nope"
done
