#!/usr/bin/env python3
"""attnserve's attention kernel against PyTorch's CPU attention, same shapes, same thread counts.

Runs, in one invocation on one machine, torch.nn.functional.scaled_dot_product_attention (or, on
PyTorch < 2.0, which lacks it, the explicit softmax(q·kᵀ/√d)·v in torch) and our
`attnserve_bench` (BM_Sdpa/<dtype>/<seq>/<causal>/none), and prints GFLOP/s and the ratio
ours / PyTorch per row. Both sides take tensors of the row's dtype (bf16 rows: bf16 q, k, v and
output). Useful FLOPs = 4·B·H·Sq·Sk·hd, halved for causal (as in attnserve_bench).

    python3 bench/compare_pytorch.py --bench build/bench/attnserve_bench --threads 2,16 --rounds 3

Shared machines drift by tens of percent within a minute, so each thread count is measured in
`--rounds` rounds, each running our benchmark and then PyTorch's over every row; the table shows
per-row medians over the rounds, so the two sides of a ratio were measured close in time.

Needs PyTorch and numpy in the Python that runs it (not a test dependency of the project).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time


def torch_gflops(torch, seq, causal, dtype, threads, min_seconds):
    """Median GFLOP/s of PyTorch attention for B=1, H=12, hd=64."""
    torch.set_num_threads(threads)
    torch_dtype = torch.bfloat16 if dtype == "bf16" else torch.float32
    q, k, v = (torch.randn(1, 12, seq, 64, dtype=torch_dtype) for _ in range(3))
    sdpa = getattr(torch.nn.functional, "scaled_dot_product_attention", None)

    def run():
        if sdpa is not None:
            return sdpa(q, k, v, is_causal=causal)
        scores = (q @ k.transpose(-1, -2)) / 8.0
        if causal:
            mask = torch.ones(seq, seq, dtype=torch.bool).triu(1)
            scores = scores.masked_fill(mask, float("-inf"))
        return torch.softmax(scores, dim=-1) @ v

    with torch.inference_mode():
        run()  # warm-up
        times = []
        deadline = time.perf_counter() + min_seconds
        while len(times) < 3 or time.perf_counter() < deadline:
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
    flops = 4.0 * 12 * seq * seq * 64 * (0.5 if causal else 1.0)
    return flops / statistics.median(times) / 1e9, "sdpa" if sdpa is not None else "math"


def ours_gflops(bench, threads, dtypes, seqs, min_seconds):
    """{(dtype, seq, causal): GFLOP/s} from one attnserve_bench run with `threads` threads."""
    pattern = "BM_Sdpa/({})/({})/[01]/none".format("|".join(dtypes), "|".join(map(str, seqs)))
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        subprocess.run(
            [bench, "--benchmark_filter=" + pattern, "--benchmark_out=" + out.name,
             "--benchmark_out_format=json", "--benchmark_min_time={}".format(min_seconds)],
            env=env, check=True, capture_output=True, text=True)
        report = json.load(open(out.name))
    results = {}
    for run in report["benchmarks"]:
        _, dtype, seq, causal, _ = run["name"].split("/real_time")[0].split("/")
        results[(dtype, int(seq), causal == "1")] = run["gflops"]
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", default="build/bench/attnserve_bench")
    parser.add_argument("--threads", default=str(os.cpu_count()),
                        help="comma-separated thread counts")
    parser.add_argument("--seqs", default="512,2048")
    parser.add_argument("--dtypes", default="f32,bf16")
    parser.add_argument("--min_seconds", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure both sides this many times per thread count (medians)")
    args = parser.parse_args()
    try:
        import torch
    except ImportError:
        sys.exit("compare_pytorch: PyTorch is not installed in " + sys.executable)

    seqs = [int(s) for s in args.seqs.split(",")]
    dtypes = args.dtypes.split(",")
    print(f"PyTorch {torch.__version__}, {os.cpu_count()} CPUs; B=1, H=12, head_dim=64")
    print(f"{'dtype':5} {'seq':>6} {'causal':>6} {'threads':>7} {'torch GF/s':>11} "
          f"{'ours GF/s':>10} {'ours/torch':>10}  torch kernel")
    rows = [(dtype, seq, causal) for dtype in dtypes for seq in seqs for causal in (False, True)]
    for threads in (int(t) for t in args.threads.split(",")):
        ours_rounds, torch_rounds = [], []
        for _ in range(args.rounds):
            ours_rounds.append(ours_gflops(args.bench, threads, dtypes, seqs, args.min_seconds))
            torch_rounds.append({row: torch_gflops(torch, row[1], row[2], row[0], threads,
                                                   args.min_seconds) for row in rows})
        for row in rows:
            mine = statistics.median(r[row] for r in ours_rounds)
            theirs = statistics.median(r[row][0] for r in torch_rounds)
            kernel = torch_rounds[0][row][1]
            dtype, seq, causal = row
            print(f"{dtype:5} {seq:>6} {int(causal):>6} {threads:>7} {theirs:>11.1f} "
                  f"{mine:>10.1f} {mine / theirs:>10.2f}  {kernel}")


if __name__ == "__main__":
    main()
