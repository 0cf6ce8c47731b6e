#!/usr/bin/python3
"""Server-side batching, measured: the server under concurrent clients against the same work
computed as one batch in process, every figure from one run of this script (the machines are
shared and noisy; only ratios within a run mean something). Prints a Markdown report.

  Attend, demo-sinusoidal (d_model 512, 8 heads, FLOAT32), for seq 8 and 128:
    in-process batch of 16 (attnserve_loadgen --in_process --batch=16)  sequences/s, batch ms
    16 clients × 1×seq, batching off (--max_batch_requests=1) and on   sequences/s, p50, p99
    1 client × 1×seq, batching off and on                              p50 (a lone request
                                                                       must pay nothing)
  Decode, a d_model 2048, 16-head RoPE model written by this script: 1 stream and 16 streams of
  1 token per step, aggregate tokens/s.
  The load tool's own CPU time is reported: on a machine it shares with the server, the server
  had that much less.

    /usr/bin/python3 bench/serving_report.py --server build/server/attnserve \\
        --loadgen build/bench/attnserve_loadgen [--seconds 4] [--server_flags=--compute_workers=2]
"""
import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import urllib.request

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests" / "e2e"))
from attnserve_testing import ServerProcess, safetensors_bytes  # noqa: E402

ARGS = None


def loadgen(*flags):
    out = subprocess.run([ARGS.loadgen, *flags, f"--duration_seconds={ARGS.seconds}"],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def start(*flags):
    server = ServerProcess(ARGS.server, ("--access_log=off", *ARGS.server_flags.split(),
                                         *flags))
    return server.start()


def metrics(server):
    return urllib.request.urlopen(server.metrics_url, timeout=5).read().decode()


def server_cpu_seconds(server):
    for line in metrics(server).splitlines():
        if line.startswith("process_cpu_seconds_total"):
            return float(line.split()[-1])
    return float("nan")


def batch_sizes(server, rpc):
    """Mean requests per batch of `rpc`, from the server's histogram."""
    text = metrics(server)
    sums = {}
    for line in text.splitlines():
        for kind in ("sum", "count"):
            if line.startswith(f"attnserve_batch_requests_{kind}{{") and f'rpc="{rpc}"' in line:
                sums[kind] = sums.get(kind, 0.0) + float(line.split()[-1])
    return sums["sum"] / sums["count"] if sums.get("count") else float("nan")


def attend_rows(seq):
    inproc = loadgen("--in_process", "--model=demo-sinusoidal", "--batch=16", f"--seq={seq}")
    batched_rate = inproc["rps"] * 16
    rows = {}
    for label, flags in (("off", ("--max_batch_requests=1",)), ("on", ())):
        server = start(*flags)
        try:
            target = f"--target={server.grpc_address}"
            cpu_before = server_cpu_seconds(server)
            many = loadgen(target, "--model=demo-sinusoidal", f"--seq={seq}", "--concurrency=16")
            many["server_cpu_seconds"] = server_cpu_seconds(server) - cpu_before
            sizes = batch_sizes(server, "Attend")
            one = loadgen(target, "--model=demo-sinusoidal", f"--seq={seq}", "--concurrency=1")
        finally:
            server.kill()
        rows[label] = (many, one, sizes)
    return batched_rate, inproc["p50_ms"], rows


def write_decode_model(folder):
    d, heads = 2048, 16
    rng = np.random.default_rng(5)
    weights = {name: ("F32", rng.standard_normal((d, d), dtype=np.float32) / np.sqrt(d))
               for name in ("q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight")}
    model = folder / "decode-2048"
    model.mkdir(parents=True)
    (model / "config.pbtxt").write_text(
        f"d_model: {d} num_heads: {heads} max_positions: 8192 encoding {{ rope {{}} }}\n")
    (model / "weights.safetensors").write_bytes(safetensors_bytes(weights))


def decode_rows():
    with tempfile.TemporaryDirectory() as tmp:
        write_decode_model(pathlib.Path(tmp))
        server = start(f"--model_repository={tmp}")
        try:
            target = f"--target={server.grpc_address}"
            common = ("--rpc=decode", "--model=decode-2048", "--tokens_per_step=1",
                      "--steps_per_stream=256")
            one = loadgen(target, *common, "--concurrency=1")
            many = loadgen(target, *common, "--concurrency=16")
            sizes = batch_sizes(server, "Decode")
        finally:
            server.kill()
    return one, many, sizes


def main():
    global ARGS
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", required=True)
    parser.add_argument("--loadgen", required=True)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--server_flags", default="", help="more flags for every server run")
    parser.add_argument("--only", choices=("attend", "decode"), help="run one part")
    ARGS = parser.parse_args()
    if ARGS.only != "decode":
        attend_report()
    if ARGS.only != "attend":
        decode_report()


def attend_report():
    print(f"Attend, demo-sinusoidal, {ARGS.seconds:g} s per row; server flags: "
          f"{ARGS.server_flags or '(defaults)'}\n")
    print("| query | in-process batch of 16: seq/s (batch ms) | batching | 16 clients: seq/s "
          "(ratio) | p50 / p99 ms | mean batch | CPU cores: server + load tool | "
          "1 client p50 ms |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for seq in (8, 128):
        batched_rate, batch_ms, rows = attend_rows(seq)
        for label, (many, one, sizes) in rows.items():
            server_cpu = many["server_cpu_seconds"] / many["seconds"]
            client_cpu = many["client_cpu_seconds"] / many["seconds"]
            print(f"| 1×{seq}×512 | {batched_rate:.0f} ({batch_ms:.1f}) | {label} | "
                  f"{many['rps']:.0f} ({many['rps'] / batched_rate:.2f}) | "
                  f"{many['p50_ms']:.1f} / {many['p99_ms']:.1f} | {sizes:.1f} | "
                  f"{server_cpu:.2f} + {client_cpu:.2f} | {one['p50_ms']:.2f} |")


def decode_report():
    one, many, sizes = decode_rows()
    print(f"\nDecode, d_model 2048, 16 heads, RoPE, 1 token per step: 1 stream "
          f"{one['tokens_per_s']:.0f} tokens/s (p50 {one['p50_ms']:.1f} ms); 16 streams "
          f"{many['tokens_per_s']:.0f} tokens/s (p50 {many['p50_ms']:.1f} ms, mean batch "
          f"{sizes:.1f}): {many['tokens_per_s'] / one['tokens_per_s']:.2f}×")


if __name__ == "__main__":
    main()
