#!/usr/bin/python3
"""The KServe v2 doors against attnserve.v1's Attend: the same 1×seq×512 FP32 Attend on
demo-sinusoidal through each door, one client (latency) and 16 clients (throughput), against one
server, the doors alternating round by round so that drift on a shared machine hits them alike.
Prints a Markdown table: per door the median p50 / p99 and sequences/s over the rounds, and the
p50's ratio to Attend's (the issue's targets: gRPC ModelInfer within 5%, HTTP with binary tensor
data within 15%; HTTP with JSON measured).

    /usr/bin/python3 bench/kserve_report.py --server build/server/attnserve \\
        --loadgen build/bench/attnserve_loadgen [--seq 128] [--rounds 5] [--seconds 3]
"""
import argparse
import json
import pathlib
import statistics
import subprocess
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests" / "e2e"))
from attnserve_testing import ServerProcess  # noqa: E402

DOORS = (("Attend (attnserve.v1, gRPC)", ("--protocol=attnserve",)),
         ("ModelInfer over gRPC, raw contents", ("--protocol=kserve-grpc",)),
         ("HTTP, binary tensor data", ("--protocol=kserve-http", "--http_body=binary")),
         ("HTTP, JSON tensors", ("--protocol=kserve-http", "--http_body=json")))


def loadgen(args, server, flags, concurrency, seconds):
    out = subprocess.run(
        [args.loadgen, f"--target={server.grpc_address}",
         f"--http_target={server.http_url.removeprefix('http://')}", "--rpc=attend",
         "--model=demo-sinusoidal", f"--seq={args.seq}", f"--concurrency={concurrency}",
         f"--duration_seconds={seconds}", *flags],
        check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", required=True)
    parser.add_argument("--loadgen", required=True)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    server = ServerProcess(args.server, ("--access_log=off",)).start()
    try:
        for _, flags in DOORS:  # warm-up: connections, kernels for the shapes
            loadgen(args, server, flags, 1, 1.0)
        results = {name: {"p50": [], "p99": [], "rps": [], "rps16": []} for name, _ in DOORS}
        for _ in range(args.rounds):
            for name, flags in DOORS:
                alone = loadgen(args, server, flags, 1, args.seconds)
                results[name]["p50"].append(alone["p50_ms"])
                results[name]["p99"].append(alone["p99_ms"])
                results[name]["rps"].append(alone["rps"])
                results[name]["rps16"].append(loadgen(args, server, flags, 16, args.seconds)["rps"])
    finally:
        server.stop()
    base = statistics.median(results[DOORS[0][0]]["p50"])
    print(f"1×{args.seq}×512 FP32 Attend on demo-sinusoidal, {args.rounds} rounds of "
          f"{args.seconds} s per door and load, medians:\n")
    print("| door | 1 client: p50 ms (ratio to Attend) | p99 ms | seq/s | 16 clients: seq/s |")
    print("|---|---:|---:|---:|---:|")
    for name, _ in DOORS:
        r = results[name]
        p50 = statistics.median(r["p50"])
        print(f"| {name} | {p50:.3f} ({p50 / base:.3f}) | {statistics.median(r['p99']):.3f} | "
              f"{statistics.median(r['rps']):.0f} | {statistics.median(r['rps16']):.0f} |")


if __name__ == "__main__":
    main()
