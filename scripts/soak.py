#!/usr/bin/python3
"""Soak test: the load tool at saturation for a while, with valid and malformed requests mixed.

Starts build/server/attnserve on free loopback ports (one compute worker, a queue of 4), runs
build/bench/attnserve_loadgen against it with Attend, Encode and ScaledDotProductAttention in
turn, 10% of them malformed (unknown model, wrong shape), and more clients than the server holds,
so that some calls are refused. Meanwhile it samples the server's resident memory. It fails
(exit 1) unless:

  * every valid call ended OK or RESOURCE_EXHAUSTED and every malformed one with its own code
    (INVALID_ARGUMENT / NOT_FOUND) or RESOURCE_EXHAUSTED (the load tool's --expect_codes);
  * the server never exited, logged no warning or error, and stops with exit 0 on SIGTERM at the
    end;
  * RSS drift after the warm-up is under --max_rss_drift (5%): the median of the last quarter of
    the samples against the median of the first quarter after the warm-up (medians over quarters,
    because RSS moves by up to ~10 MiB from one sample to the next as malloc arenas fill and trim;
    medians of 5 samples failed a 60-second run once at +11%). The warm-up is --warmup_fraction
    of the run, and at least half of a run shorter than a minute. The server runs with glibc's
    MALLOC_ARENA_MAX=2 (unless set): with an arena per thread, freed memory parked in whichever
    arenas gRPC's threads happened to use moved RSS between 97 and 118 MiB at a steady load (and
    one 60-second run by +18%), whereas with two it stays within 79-89 MiB, so growth means
    memory held.

    /usr/bin/python3 scripts/soak.py --minutes 10      # prints a JSON summary as its last line
    /usr/bin/python3 scripts/soak.py --seconds 60      # the short version ctest runs (soak_short)

Run it on an otherwise idle machine for figures; the checks themselves do not depend on speed.
"""
import argparse
import json
import os
import pathlib
import re
import signal
import statistics
import subprocess
import sys
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests" / "e2e"))
from attnserve_testing import ServerProcess, rss_mb  # noqa: E402

# At least this many samples (a quarter of the measured window when more) stand for its "start"
# and its "end".
EDGE_SAMPLES = 5



def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    duration = parser.add_mutually_exclusive_group()
    duration.add_argument("--minutes", type=float, help="how long to run (default 10)")
    duration.add_argument("--seconds", type=float, help="how long to run, in seconds")
    parser.add_argument("--server", default=str(REPO_ROOT / "build" / "server" / "attnserve"))
    parser.add_argument("--loadgen",
                        default=str(REPO_ROOT / "build" / "bench" / "attnserve_loadgen"))
    parser.add_argument("--warmup_fraction", type=float, default=0.25,
                        help="share of the run before RSS drift is measured (default 0.25)")
    parser.add_argument("--sample_seconds", type=float, default=0,
                        help="RSS sampling period (default: the measured window / 60, at least "
                             "0.5 s)")
    parser.add_argument("--concurrency", type=int, default=8,
                        help="load tool clients; the server holds 5 (default 8: saturated, some "
                             "refused)")
    parser.add_argument("--invalid_fraction", type=float, default=0.1)
    parser.add_argument("--max_rss_drift", type=float, default=0.05)
    args = parser.parse_args()
    args.duration_s = (args.seconds if args.seconds is not None
                       else 60.0 * (args.minutes if args.minutes is not None else 10.0))
    return args


def main():
    args = parse_args()
    warmup_s = max(args.duration_s * args.warmup_fraction, min(30.0, args.duration_s / 2))
    sample_s = args.sample_seconds or max(0.5, (args.duration_s - warmup_s) / 60)
    os.environ.setdefault("MALLOC_ARENA_MAX", "2")  # see the docstring
    server = ServerProcess(args.server, ("--compute_workers=1", "--compute_queue_depth=4",
                                         "--access_log=off")).start()
    loadgen = subprocess.Popen(
        [args.loadgen, f"--target={server.grpc_address}", "--rpc=attend,encode,sdpa",
         "--model=demo-sinusoidal", "--seq=128", f"--concurrency={args.concurrency}",
         f"--invalid_fraction={args.invalid_fraction}", f"--duration_seconds={args.duration_s}",
         "--expect_codes=OK,RESOURCE_EXHAUSTED", "--timeout_seconds=60"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started = time.monotonic()
    samples = []  # (seconds since start, RSS MiB)
    failures = []
    try:
        while loadgen.poll() is None:
            if server.proc.poll() is not None:
                failures.append(f"the server exited with {server.proc.returncode} during the run")
                break
            samples.append((time.monotonic() - started, rss_mb(server.proc.pid)))
            time.sleep(sample_s)
        out, err = loadgen.communicate(timeout=120)
        if loadgen.returncode != 0:
            failures.append(f"the load tool exited with {loadgen.returncode}: {err.strip()}")
        summary = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
        rc = server.stop(signal.SIGTERM, timeout=30)
        if rc != 0:
            failures.append(f"the server's exit code after SIGTERM was {rc}, expected 0")
        failures += [f"server log: {line}" for line in server.log().splitlines()
                     if re.search(r"\[(warning|error|critical)\]", line)]
    finally:
        if loadgen.poll() is None:
            loadgen.kill()
        server.kill()

    measured = [rss for t, rss in samples if t >= warmup_s]
    result = {
        "seconds": round(time.monotonic() - started, 1),
        "rps_ok": summary.get("rps"),
        "sent": summary.get("sent"),
        "codes": summary.get("codes"),
        "invalid_codes": summary.get("invalid_codes"),
        "unexpected": summary.get("unexpected"),
        "ok_p50_ms": summary.get("p50_ms"), "ok_p99_ms": summary.get("p99_ms"),
        "rejected_p99_ms": summary.get("rejected_p99_ms"),
        "rss_samples": len(samples),
        "rss_first_mb": round(samples[0][1], 1) if samples else None,
        "rss_max_mb": round(max(rss for _, rss in samples), 1) if samples else None,
    }
    if len(measured) < 2 * EDGE_SAMPLES:
        failures.append(f"only {len(measured)} RSS samples after the warm-up")
    else:
        edge = max(EDGE_SAMPLES, len(measured) // 4)
        start_mb = statistics.median(measured[:edge])
        end_mb = statistics.median(measured[-edge:])
        drift = (end_mb - start_mb) / start_mb
        result.update(rss_after_warmup_mb=round(start_mb, 1), rss_end_mb=round(end_mb, 1),
                      rss_drift=round(drift, 4))
        if drift > args.max_rss_drift:
            failures.append(f"RSS grew {drift:.1%} after the warm-up ({start_mb:.1f} → "
                            f"{end_mb:.1f} MiB), more than {args.max_rss_drift:.0%}")
    codes = summary.get("codes") or {}
    if not codes.get("OK"):
        failures.append("no request succeeded")
    if args.invalid_fraction > 0 and not summary.get("invalid_codes"):
        failures.append("no malformed request was sent")
    result["failures"] = failures
    for failure in failures:
        print(f"soak: FAIL: {failure}", file=sys.stderr)
    print(json.dumps(result))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
