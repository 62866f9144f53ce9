"""Serving benchmark: mlops-runtime vs MLServer 1.7 with and without adaptive batching, and the
transport floor, side by side in one run.

Parts, all against the same server processes:

1. REST JSON, one row (wrk) at 1/16/64 connections: mlops-runtime, MLServer with adaptive
   batching off, MLServer with adaptive batching on (``max_batch_size`` 64, ``max_batch_time``
   1 ms), and the transport floor (uvicorn + uvloop + httptools answering with fixed bytes, no
   model: ``floor_app.py``) with and without uvicorn's ASGI cycle; ratios ours/each MLServer
   and ours as a percentage of each floor;
   plus the router's added p50 at one connection;
2. gRPC ModelInfer (ghz, one HTTP/2 connection carrying 1/16/64 concurrent streams): ours vs
   both MLServers' gRPC servers, the same request message (typed ``fp32_contents``) to all;
3. REST with a 1,000-row request: JSON vs the binary tensor data extension (ours; MLServer's
   JSON alongside for scale).

    .venv/bin/python bench/serving/run.py [--duration 10] [--rounds 2]   # the published figures
    .venv/bin/python bench/serving/run.py --quick                        # smoke run, ~2 min

Servers are measured alternately at each level (the order rotates), every server answers one
request correctly before it is measured, and the output says which optimisations each side has
on. Modules: ``servers.py`` (model, processes, settings), ``loadgen.py`` (wrk, ghz, bodies,
checks), ``report.py`` (tables), ``floor_app.py`` (the floor server). See README.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loadgen  # noqa: E402
import report  # noqa: E402
import servers  # noqa: E402

HERE = Path(__file__).resolve().parent
REST_KEYS = ["ours", "mlserver", "mlserver-batch", "floor", "floor-raw"]
GRPC_KEYS = ["ours", "mlserver", "mlserver-batch"]


def measure(keys: list[str], levels: list[int], rounds: int, run: Callable[[str, int], dict],
            tag: str) -> report.Results:
    """``run(key, level)`` for every key at every level, ``rounds`` times, the servers in a
    rotating order; the best req/s of each (key, level) is kept."""
    best: report.Results = {}
    for r in range(rounds):
        for i, c in enumerate(levels):
            shift = (r + i) % len(keys)
            for key in keys[shift:] + keys[:shift]:
                stats = run(key, c)
                if (key, c) not in best or stats["rps"] > best[(key, c)]["rps"]:
                    best[(key, c)] = stats
                print(f"{tag} {key:15s} c={c:<3d} {stats['rps']:9.0f} req/s  "
                      f"p50 {stats['p50_us'] / 1000:6.2f} ms  p99 {stats['p99_us'] / 1000:7.2f} ms"
                      f"  errors {stats['errors'] + stats['non2xx']}", flush=True)  # fmt: skip
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=10, help="seconds per load run")
    ap.add_argument("--rounds", type=int, default=1,
                    help="rounds per level, servers in rotating order (best kept)")  # fmt: skip
    ap.add_argument("--levels", default="1,16,64", help="REST connections")
    ap.add_argument("--grpc-levels", default="1,16,64", help="gRPC concurrent streams")
    ap.add_argument("--out", default=None,
                    help="write the tables here (default: results.md; none with --quick)")
    ap.add_argument("--skip-rest", action="store_true", help="only gRPC and the 1,000-row part")
    ap.add_argument("--quick", action="store_true",
                    help="smoke check: 2 s runs, one round, nothing written unless --out")
    args = ap.parse_args()
    if args.quick:
        args.duration, args.rounds = 2, 1
    out = args.out or (None if args.quick else str(HERE / "results.md"))
    if not shutil.which("wrk"):
        sys.exit("wrk not found: apt-get install -y wrk")
    started = time.monotonic()
    ghz_exe = loadgen.ensure_ghz()
    mlserver = servers.ensure_mlserver()
    workdir = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    model, mlflow_dir, joblib_path = servers.build_models(workdir)
    srv = servers.start_servers(workdir, mlflow_dir, joblib_path, mlserver)
    warm = min(2.0, args.duration)
    opts = servers.optimisations(mlflow_dir)
    try:
        for s in srv.values():
            servers.wait_ready(s)
        for key in ("ours", "mlserver", "mlserver-batch", "router"):
            loadgen.check_infer(srv[key].infer_url)
        # the floor answers with ours's exact bytes for this request
        answer = loadgen.infer_bytes(srv["ours"].infer_url)
        srv["floor"] = servers.start_floor(workdir, answer)
        srv["floor-raw"] = servers.start_floor(workdir, answer, asgi=False)
        for key in ("floor", "floor-raw"):
            servers.wait_ready(srv[key])
            loadgen.check_infer(srv[key].infer_url)
        bodies = loadgen.write_bodies(workdir)
        loadgen.check_binary(srv["ours"].infer_url, bodies["binary"])
        for key in GRPC_KEYS:
            loadgen.check_grpc(srv[key].grpc or "")

        levels = [int(x) for x in args.levels.split(",")]
        rest: report.Results = {}
        router_runs: list[dict] = []
        direct_runs: list[dict] = []
        if not args.skip_rest:
            for key in REST_KEYS:
                loadgen.wrk(srv[key].infer_url, 16, warm)
            rest = measure(REST_KEYS, levels, args.rounds,
                           lambda k, c: loadgen.wrk(srv[k].infer_url, c, args.duration), "rest")
            for _ in range(args.rounds):
                router_runs.append(loadgen.wrk(srv["router"].infer_url, 1, args.duration))
                direct_runs.append(loadgen.wrk(srv["ours"].infer_url, 1, args.duration))

        grpc_levels = [int(x) for x in args.grpc_levels.split(",")]
        grpc: report.Results = {}
        if ghz_exe is not None:
            proto = loadgen.protocol_proto(workdir)
            for key in GRPC_KEYS:
                loadgen.ghz(ghz_exe, proto, srv[key].grpc or "", 16, warm)
            grpc = measure(GRPC_KEYS, grpc_levels, args.rounds,
                           lambda k, c: loadgen.ghz(ghz_exe, proto, srv[k].grpc or "", c,
                                                    args.duration), "grpc")  # fmt: skip

        def big_run(key: str, c: int) -> dict:
            name, kind = key.split("-")
            return loadgen.wrk_body(srv[name].infer_url, bodies[kind], c, args.duration)

        big = measure(["ours-binary", "ours-json", "mlserver-json"], [1, 16], args.rounds,
                      big_run, "1000 rows")  # fmt: skip
        floor_rps, floor_us = loadgen.predict_floor(model)
    finally:
        for s in srv.values():
            servers.stop(s.proc)

    lines = [
        f"Serving benchmark ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, {args.duration:g}s per "
        f"run, best of {args.rounds}{', --quick' if args.quick else ''}; servers measured "
        "alternately, in rotating order)",
        "",
        "What each side has switched on:",
        "",
        *opts,
        "",
    ]
    summary: list[str] = []
    if rest:
        lines += ["REST JSON, one-row request (wrk -t1):", "",
                  *report.comparison(rest, levels, REST_KEYS, "connections"),
                  "errors = wrk socket errors/timeouts (2 s) plus non-2xx responses.", ""]
        summary += report.ratio_lines(rest, levels, REST_KEYS, "REST", "connections")
        router_p50 = min(r["p50_us"] for r in router_runs) / 1000
        direct_p50 = min(r["p50_us"] for r in direct_runs) / 1000
        lines += [f"Router overhead at 1 connection: p50 {router_p50:.2f} ms through the router "
                  f"vs {direct_p50:.2f} ms direct = **{router_p50 - direct_p50:+.2f} ms**.", ""]
    if grpc:
        lines += [f"gRPC ModelInfer, one-row request (ghz {loadgen.GHZ_VERSION}, one HTTP/2 "
                  "connection, N concurrent streams; the same typed-contents message to all; "
                  "MLServer without and with adaptive batching):", "",
                  *report.comparison(grpc, grpc_levels, GRPC_KEYS, "streams"),
                  "errors = calls with a status other than OK (2 s deadline), less the calls ghz "
                  "cuts off when the run's time is up (at most one per stream).", ""]
        summary += report.ratio_lines(grpc, grpc_levels, GRPC_KEYS, "gRPC", "streams")
    else:
        lines += ["gRPC: not measured (no ghz on PATH and no Go toolchain to build it).", ""]
    lines += ["REST, one 1,000-row FP32 request (4,000 values; wrk -t1): JSON vs the binary "
              "tensor data extension (request and response binary):", "",
              *report.big_table(big),
              f"In-process floor: raw `model.predict` on one row: {floor_us:.1f} µs per call "
              f"({floor_rps:.0f} calls/s).", ""]
    if summary:
        lines += ["Ratios (req/s):", "", *(f"* {s}" for s in summary), ""]
    table = "\n".join(lines)
    print("\n" + table)
    print(f"(whole run: {time.monotonic() - started:.0f} s)")
    if out:
        Path(out).write_text(table)
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
