#!/usr/bin/python3
"""Server-side batching, measured: the server under concurrent clients against the same work
computed as one batch in process, every figure from one run of this script (the machines are
shared and noisy; only ratios within a run mean something). Prints a Markdown report.

  Attend, demo-sinusoidal (d_model 512, 8 heads, FLOAT32), for seq 8 and 128:
    in-process batch of 16 (attnserve_loadgen --in_process --batch=16)  sequences/s, batch ms
    16 clients × 1×seq, batching off (--max_batch_requests=1), on,     sequences/s, p50, p99
      and on with one compute worker (--compute_workers=1)
    1 client × 1×seq, the same three servers                           p50 (a lone request
                                                                       must pay nothing)
    16 clients × Encode of the same 1×seq×512 tensors (no attention)  sequences/s: the RPC
                                                                       path's own ceiling
  Each measured run follows an unmeasured warm-up of the same load (--warmup_seconds).
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


def loadgen(*flags, seconds=None):
    out = subprocess.run([ARGS.loadgen, *flags, f"--duration_seconds={seconds or ARGS.seconds}"],
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


def batch_totals(server, rpc):
    """(requests, batches) of `rpc` so far, from the server's batch-size histogram."""
    totals = {"sum": 0.0, "count": 0.0}
    for line in metrics(server).splitlines():
        for kind in totals:
            if line.startswith(f"attnserve_batch_requests_{kind}{{") and f'rpc="{rpc}"' in line:
                totals[kind] += float(line.split()[-1])
    return totals["sum"], totals["count"]


def measure(server, rpc, *flags):
    """The load tool's summary for `flags` against `server` after a warm-up run of the same load
    (oneDNN compiles kernels for each new shape, a packed batch's token count included; a
    long-running server has them all), with the server's CPU cores and mean batch size over the
    measured run."""
    target = f"--target={server.grpc_address}"
    if ARGS.warmup_seconds > 0:
        loadgen(target, *flags, seconds=ARGS.warmup_seconds)
    cpu_before = server_cpu_seconds(server)
    requests_before, batches_before = batch_totals(server, rpc)
    summary = loadgen(target, *flags)
    summary["server_cores"] = (server_cpu_seconds(server) - cpu_before) / summary["seconds"]
    requests, batches = batch_totals(server, rpc)
    summary["mean_batch"] = ((requests - requests_before) / (batches - batches_before)
                             if batches > batches_before else float("nan"))
    return summary


# Server configurations of the Attend rows: batching off, the defaults, and one compute worker
# (whose batches then use every compute thread: the configuration before the workers shared them).
ATTEND_CONFIGS = (("off", ("--max_batch_requests=1",)), ("on", ()),
                  ("on, 1 worker", ("--compute_workers=1",)))


def attend_rows(seq):
    inproc = loadgen("--in_process", "--model=demo-sinusoidal", "--batch=16", f"--seq={seq}")
    batched_rate = inproc["rps"] * 16
    rows = {}
    transport = None
    for label, flags in ATTEND_CONFIGS:
        server = start(*flags)
        try:
            load = ("Attend", "--model=demo-sinusoidal", f"--seq={seq}")
            rows[label] = (measure(server, *load, "--concurrency=16"),
                           measure(server, *load, "--concurrency=1"))
            if not flags:
                transport = measure(server, "Encode", "--rpc=encode", f"--seq={seq}",
                                    "--d_model=512", "--concurrency=16")
        finally:
            server.kill()
    return batched_rate, inproc["p50_ms"], rows, transport


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
            common = ("Decode", "--rpc=decode", "--model=decode-2048", "--tokens_per_step=1",
                      "--steps_per_stream=256")
            one = measure(server, *common, "--concurrency=1")
            many = measure(server, *common, "--concurrency=16")
        finally:
            server.kill()
    return one, many


def main():
    global ARGS
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", required=True)
    parser.add_argument("--loadgen", required=True)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--warmup_seconds", type=float, default=2.0,
                        help="the same load first, unmeasured, on each server")
    parser.add_argument("--server_flags", default="", help="more flags for every server run")
    parser.add_argument("--only", choices=("attend", "decode"), help="run one part")
    ARGS = parser.parse_args()
    if ARGS.only != "decode":
        attend_report()
    if ARGS.only != "attend":
        decode_report()


def attend_report():
    print(f"Attend, demo-sinusoidal, {ARGS.seconds:g} s per row after {ARGS.warmup_seconds:g} s "
          f"of warm-up; server flags: {ARGS.server_flags or '(defaults)'}\n")
    print("| query | in-process batch of 16: seq/s (batch ms) | batching | 16 clients: seq/s "
          "(ratio) | p50 / p99 ms | mean batch | CPU cores: server + load tool | "
          "1 client p50 ms |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    bounds = []
    for seq in (8, 128):
        batched_rate, batch_ms, rows, transport = attend_rows(seq)
        bounds.append((seq, batched_rate, rows["on"][0]["rps"], transport["rps"]))
        for label, (many, one) in rows.items():
            client_cpu = many["client_cpu_seconds"] / many["seconds"]
            print(f"| 1×{seq}×512 | {batched_rate:.0f} ({batch_ms:.1f}) | {label} | "
                  f"{many['rps']:.0f} ({many['rps'] / batched_rate:.2f}) | "
                  f"{many['p50_ms']:.1f} / {many['p99_ms']:.1f} | {many['mean_batch']:.1f} | "
                  f"{many['server_cores']:.2f} + {client_cpu:.2f} | {one['p50_ms']:.2f} |")
    # Encode carries the same tensors each way with next to no computation: its rate is what
    # the RPC path alone (both gRPC ends, the request thread, the compute queue) allows on these
    # cores. If a server paid that per request and the batch's computation per sequence one
    # after the other, it would reach 1 / (1/transport + 1/batched) sequences/s (the two overlap
    # a little: the computation's threads wait at barriers while gRPC works).
    print("\n| query | 16 clients × Encode of the same tensors: seq/s (ratio to the batch) | "
          "both costs added: seq/s (ratio) | Attend, batching on: measured / that |")
    print("|---|---:|---:|---:|")
    for seq, batched_rate, attend_rate, transport_rate in bounds:
        bound = 1 / (1 / transport_rate + 1 / batched_rate)
        print(f"| 1×{seq}×512 | {transport_rate:.0f} ({transport_rate / batched_rate:.2f}) | "
              f"{bound:.0f} ({bound / batched_rate:.2f}) | {attend_rate / bound:.2f} |")


def decode_report():
    one, many = decode_rows()
    print(f"\nDecode, d_model 2048, 16 heads, RoPE, 1 token per step: 1 stream "
          f"{one['tokens_per_s']:.0f} tokens/s (p50 {one['p50_ms']:.1f} ms); 16 streams "
          f"{many['tokens_per_s']:.0f} tokens/s (p50 {many['p50_ms']:.1f} ms, mean batch "
          f"{many['mean_batch']:.1f}): {many['tokens_per_s'] / one['tokens_per_s']:.2f}×")


if __name__ == "__main__":
    main()
