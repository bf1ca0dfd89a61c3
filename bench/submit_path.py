"""Submit-path benchmark: durable ``SubmitJob`` calls per second into a real server, where the
server's CPU goes, and the gRPC floor of this machine, all measured in one run.

For each store (``memory://``, SQLite in WAL mode with ``synchronous=FULL``, PostgreSQL with
``fsync=on``) and each code variant (``current``: this checkout; ``baseline``: the tree of
``--baseline REV``, exported with ``git archive`` and run from a temporary directory, so the
before and after figures come from the same run on the same machine):

1. a real ``firsthop-scheduler`` process on a 512-host fat tree with no agents (every job stays
   pending: the steady state of a full cluster);
2. ``--clients`` load-generator processes (each with its own channel) keep ``CONCURRENCY`` (64)
   ``SubmitJob`` calls in flight between them, sizes 8/16/64/128/512 GPUs as in
   :mod:`bench.control_plane`. A call returns once its job is durable, so calls per second is
   the durable submission rate. Reported: rate, p50/p99 latency, the server's CPU per call
   (``/proc/PID/stat``: all threads, its event-loop thread alone, and per OS thread name:
   ``python`` are Python's threads, gRPC's poller, the store's and the audit writer's), and
   the generators' CPU per call;
3. the same generators and concurrency against the server's ``grpc.health.v1`` check (it
   passes the same interceptors): the floor of any unary RPC here.

With ``--profile``, one more SQLite run of the current code under :mod:`cProfile` (the event
loop thread's CPU time, enabled for the submit phase only); the top functions by own and
cumulative time go to ``bench/results/submit_path_profile.txt`` and the file's ``profile``
key. The profiler slows the server several times over: read its figures as shares.

Run: ``python -m bench.submit_path [--jobs N] [--stores memory,sqlite,postgresql]
[--baseline main] [--profile]``; writes ``bench/results/submit_path.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import multiprocessing as mp
import os
import pstats
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import RESULTS, timed_calls, write_results
from bench.harness.postgres import PostgresUnavailableError, start_throwaway_postgres
from bench.harness.procs import Proc, cpu_s, stat_cpu_s, wait_until
from topology.generators import fat_tree
from topology.spec import dump_spec

CONCURRENCY = 64
REPO = Path(__file__).resolve().parent.parent
START_WAIT_S = 120.0
WARMUP_CALLS = 200
TOP = 30
FIRST_PARTY = r"/(scheduler|placement|topology|firsthop)/"
"""pstats restriction to this project's modules."""

SERVE = """
import cProfile, signal, sys, time
out = sys.argv[1]
sys.argv = ["firsthop-scheduler", *sys.argv[2:]]
profile = cProfile.Profile(time.thread_time)
def _on(*_):
    profile.enable()
def _off(*_):
    profile.disable()
    profile.dump_stats(out)
signal.signal(signal.SIGUSR1, _on)
signal.signal(signal.SIGUSR2, _off)
import scheduler
print("serving", scheduler.__file__, file=sys.stderr, flush=True)
from scheduler.cli.server import main
main()
"""
"""The server process: ``firsthop-scheduler``'s own entry point, plus a profiler that SIGUSR1
turns on and SIGUSR2 turns off (writing its stats to the first argument). It counts the
thread's CPU time, not wall time: on a shared machine wall time charges whatever function was
running when the process was descheduled."""


@dataclass(frozen=True)
class Variant:
    """Code to run the server from: ``root`` goes first on the server's ``sys.path``."""

    name: str
    root: Path
    rev: str


# ---------------------------------------------------------------- load generator (child side)


def _requests(first: int, count: int, prefix: str) -> list[Any]:
    from bench.control_plane import _specs
    from firsthop.v1 import jobs_pb2
    from scheduler.api.spec_serde import job_spec_to_proto

    specs = _specs(first + count, seed=11, prefix=prefix)[first:]
    return [
        jobs_pb2.SubmitJobRequest(spec=job_spec_to_proto(s), submission_id=f"{s.name}-sub")
        for s in specs
    ]


async def _drive(address: str, kind: str, requests: list[Any], inflight: int, go: Any) -> Any:
    import grpc.aio
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from firsthop.v1 import jobs_pb2_grpc

    async with grpc.aio.insecure_channel(address) as channel:
        if kind == "submit":
            call = jobs_pb2_grpc.JobServiceStub(channel).SubmitJob
        else:
            call = health_pb2_grpc.HealthStub(channel).Check
            requests = [health_pb2.HealthCheckRequest()] * len(requests)
        warm = health_pb2_grpc.HealthStub(channel).Check
        for _ in range(WARMUP_CALLS // 10):
            await asyncio.gather(*(warm(health_pb2.HealthCheckRequest()) for _ in range(10)))
        await asyncio.get_running_loop().run_in_executor(None, go.wait)
        cpu = time.process_time()
        timed = await timed_calls(
            lambda r: call(r, timeout=120), requests, inflight, errors=grpc.aio.AioRpcError
        )
        cpu = time.process_time() - cpu
        return timed.latencies, timed.errors, timed.started, timed.ended, cpu


def _client(
    address: str,
    kind: str,
    *,
    first: int,
    count: int,
    prefix: str,
    inflight: int,
    go: Any,
    out: Any,
) -> None:
    requests = _requests(first, count, prefix) if kind == "submit" else [None] * count
    out.send(asyncio.run(_drive(address, kind, requests, inflight, go)))
    out.close()


# ---------------------------------------------------------------- measuring (parent side)


def _threads_cpu_s(pid: int) -> dict[str, float]:
    """CPU seconds of the process's threads by OS thread name (``comm``): the event loop
    (the main thread), gRPC's own threads, and Python's worker threads (store, audit)."""
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        name = "event loop (main thread)" if task.name == str(pid) else name
        out[name] = out.get(name, 0.0) + stat_cpu_s(stat)
    return out


def _phase(
    address: str, pid: int, kind: str, *, calls: int, clients: int, prefix: str
) -> dict[str, Any]:
    """One measured phase: ``calls`` RPCs of ``kind`` from ``clients`` processes."""
    ctx = mp.get_context("spawn")
    go = ctx.Barrier(clients + 1)
    share = calls // clients
    procs, pipes = [], []
    for c in range(clients):
        receive, send = ctx.Pipe(duplex=False)
        inflight = CONCURRENCY // clients + (1 if c < CONCURRENCY % clients else 0)
        kwargs = {
            "first": c * share,
            "count": share,
            "prefix": prefix,
            "inflight": inflight,
            "go": go,
            "out": send,
        }
        proc = ctx.Process(target=_client, args=(address, kind), kwargs=kwargs, daemon=True)
        proc.start()
        procs.append(proc)
        pipes.append(receive)
    go.wait(timeout=START_WAIT_S)
    cpu_before, loop_before, threads_before = cpu_s(pid), cpu_s(pid, pid), _threads_cpu_s(pid)
    results = [p.recv() for p in pipes]
    cpu, loop_cpu = cpu_s(pid) - cpu_before, cpu_s(pid, pid) - loop_before
    threads = {
        name: spent - threads_before.get(name, 0.0) for name, spent in _threads_cpu_s(pid).items()
    }
    for proc in procs:
        proc.join()
    latencies = sorted(x for r in results for x in r[0])
    total = len(latencies)
    wall = max(r[3] for r in results) - min(r[2] for r in results)
    return {
        "calls": total,
        "errors": sum(r[1] for r in results),
        "concurrency": CONCURRENCY,
        "client_processes": clients,
        "wall_s": round(wall, 3),
        "calls_per_s": round(total / wall, 1),
        "latency_p50_ms": round(1000 * latencies[total // 2], 2),
        "latency_p99_ms": round(1000 * latencies[int(total * 0.99)], 2),
        "server_cpu_us_per_call": round(1e6 * cpu / total, 1),
        "server_event_loop_cpu_us_per_call": round(1e6 * loop_cpu / total, 1),
        "server_threads_cpu_us_per_call": {
            name: round(1e6 * spent / total, 1)
            for name, spent in sorted(threads.items(), key=lambda kv: -kv[1])
            if spent > 0
        },
        "server_cpu_cores": round(cpu / wall, 2),
        "client_cpu_us_per_call": round(1e6 * sum(r[4] for r in results) / total, 1),
    }


@contextmanager
def _server(variant: Variant, db_url: str, work: Path, tag: str) -> Iterator[tuple[Proc, str]]:
    topology = work / "cluster.yaml"
    if not topology.exists():
        dump_spec(fat_tree(4, 8, 16, gpus_per_host=8), topology)
    argv = [
        sys.executable,
        "-c",
        SERVE,
        str(work / f"{tag}.prof"),
        "--listen",
        "127.0.0.1:0",
        "--db",
        db_url,
        "--topology",
        str(topology),
        "--log-level",
        "WARNING",
    ]
    env = {"PYTHONPATH": str(variant.root)}
    log = work / f"{tag}.log"
    proc = Proc(argv, log, env=env, cwd=variant.root)
    try:
        address = proc.wait_line("listening on ", START_WAIT_S).split()[-1]
        served_from = wait_until(
            lambda: next((ln for ln in log.read_text().splitlines() if "serving" in ln), None),
            "the server's source line",
        )
        if not served_from.split()[-1].startswith(str(variant.root)):
            raise AssertionError(f"{variant.name} runs the wrong code: {served_from}")
        yield proc, address
    finally:
        proc.stop(timeout=120)


def run_store(
    store: str, db_url: str, variant: Variant, *, args: argparse.Namespace, work: Path, tag: str
) -> dict[str, Any]:
    """Submit and health-check phases against one server."""
    with _server(variant, db_url, work, tag) as (proc, address):
        submit = _phase(
            address, proc.pid, "submit", calls=args.jobs, clients=args.clients, prefix=f"{tag}-job"
        )
        health = _phase(
            address, proc.pid, "health", calls=args.jobs, clients=args.clients, prefix=tag
        )
    return {
        "store": store,
        "variant": variant.name,
        "rev": variant.rev,
        "submit": {**submit, "durable_submissions_per_s": submit["calls_per_s"]},
        "grpc_health_check_floor": health,
        "submit_rate_vs_floor": round(submit["calls_per_s"] / health["calls_per_s"], 3),
    }


def profile_store(db_url: str, variant: Variant, jobs: int, clients: int, work: Path) -> str:
    """The current code on ``db_url`` under cProfile for the submit phase; the report text."""
    tag = f"profile-{variant.name}"
    out = work / f"{tag}.prof"
    with _server(variant, db_url, work, tag) as (proc, address):
        os.kill(proc.pid, signal.SIGUSR1)
        submit = _phase(
            address, proc.pid, "submit", calls=jobs, clients=clients, prefix=f"{tag}-job"
        )
        os.kill(proc.pid, signal.SIGUSR2)
        wait_until(lambda: out.exists() and out.stat().st_size > 0, "the profile")
    text = io.StringIO()
    text.write(
        f"cProfile (thread CPU time) of the server's event-loop thread during {submit['calls']} "
        "SubmitJob calls "
        f"({submit['calls_per_s']}/s under the profiler, {variant.rev}, "
        f"{db_url.split(':', maxsplit=1)[0]})\n"
    )
    ours = pstats.Stats(str(out), stream=text)
    text.write(f"\n==== first-party functions: top {TOP} by cumulative time\n")
    ours.sort_stats("cumulative").print_stats(FIRST_PARTY, TOP)
    stats = pstats.Stats(str(out), stream=text)
    stats.strip_dirs()
    for key in ("tottime", "cumulative"):
        text.write(f"\n==== all functions: top {TOP} by {key}\n")
        stats.sort_stats(key).print_stats(TOP)
    return text.getvalue()


def export_rev(rev: str, into: Path) -> Variant:
    """The tree of ``rev`` of this repository, unpacked under ``into``."""
    full = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", rev], check=True, capture_output=True, text=True
    ).stdout.strip()
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", full], check=True, capture_output=True
    ).stdout
    root = into / f"tree-{full[:10]}"
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(root, filter="data")
    return Variant("baseline", root, full)


def current_variant() -> Variant:
    """This checkout (``+dirty`` when it has uncommitted changes)."""
    head = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return Variant("current", REPO, head + ("+dirty" if dirty else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000, help="calls per phase")
    parser.add_argument("--clients", type=int, default=2, help="load-generator processes")
    parser.add_argument("--stores", default="memory,sqlite,postgresql")
    parser.add_argument("--baseline", default="", help="also run this git revision (e.g. main)")
    parser.add_argument(
        "--rounds", type=int, default=1, help="runs per store and variant, interleaved"
    )
    parser.add_argument("--profile", action="store_true", help="also profile (SQLite)")
    parser.add_argument("--work", type=Path, help="keep logs and profiles here")
    args = parser.parse_args()
    results: list[dict[str, Any]] = []
    profile_text = None
    with tempfile.TemporaryDirectory(prefix="firsthop-submit-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        variants = [current_variant()]
        if args.baseline:
            variants.insert(0, export_rev(args.baseline, work))
        for round_ in range(args.rounds):
            for store in filter(None, args.stores.split(",")):
                for variant in variants:
                    tag = f"{store}-{variant.name}-{round_}"
                    if store == "memory":
                        result = run_store(
                            store, "memory://", variant, args=args, work=work, tag=tag
                        )
                    elif store == "sqlite":
                        url = f"sqlite:///{work / f'{tag}.db'}"
                        result = run_store(store, url, variant, args=args, work=work, tag=tag)
                    elif store == "postgresql":
                        result = _run_postgres(variant, args, work, tag)
                    else:
                        parser.error(f"unknown store {store!r}")
                    results.append({"round": round_, **result})
                    _print(result)
        if args.profile:
            url = f"sqlite:///{work / 'profile.db'}"
            profile_text = profile_store(url, variants[-1], args.jobs, args.clients, work)
    summary = _summary(results)
    for line in summary:
        print(line)
    payload: dict[str, Any] = {
        "concurrency": CONCURRENCY,
        "jobs_per_phase": args.jobs,
        "client_processes": args.clients,
        "rounds": args.rounds,
        "summary": summary,
        "results": results,
    }
    if profile_text is not None:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "submit_path_profile.txt").write_text(profile_text)
        payload["profile"] = profile_text.splitlines()[: TOP + 20]
        print(profile_text)
    print(f"wrote {write_results('submit_path', payload)}")


def _run_postgres(
    variant: Variant, args: argparse.Namespace, work: Path, tag: str
) -> dict[str, Any]:
    try:
        server = start_throwaway_postgres(fsync=True)
    except PostgresUnavailableError as exc:
        return {"store": "postgresql", "variant": variant.name, "skipped": str(exc)}
    try:
        url = server.create_database("firsthop_submit")
        return run_store("postgresql", url, variant, args=args, work=work, tag=tag)
    finally:
        server.stop()


def _summary(results: list[dict[str, Any]]) -> list[str]:
    """Median figures per store and variant, and the current code's ratio to the baseline."""
    lines = []
    medians: dict[tuple[str, str], dict[str, float]] = {}
    for r in results:
        key = (r["store"], r["variant"])
        if "submit" not in r or key in medians:
            continue
        runs = [x for x in results if (x["store"], x["variant"]) == key and "submit" in x]
        medians[key] = {
            name: statistics.median(float(x[phase][field]) for x in runs)
            for name, phase, field in (
                ("rate", "submit", "calls_per_s"),
                ("p99", "submit", "latency_p99_ms"),
                ("cpu", "submit", "server_cpu_us_per_call"),
                ("loop", "submit", "server_event_loop_cpu_us_per_call"),
                ("floor", "grpc_health_check_floor", "calls_per_s"),
                ("floor_cpu", "grpc_health_check_floor", "server_cpu_us_per_call"),
            )
        }
        m = medians[key]
        lines.append(
            f"{key[0]} {key[1]} (median of {len(runs)}): {m['rate']:.1f} durable submits/s, "
            f"p99 {m['p99']:.1f} ms, server {m['cpu']:.0f} us CPU/submit (event loop "
            f"{m['loop']:.0f} us); health floor {m['floor']:.1f}/s, {m['floor_cpu']:.0f} us "
            "CPU/call"
        )
    for (store, variant), m in medians.items():
        base = medians.get((store, "baseline"))
        if variant == "current" and base is not None:
            lines.append(
                f"{store} current/baseline: submit rate x{m['rate'] / base['rate']:.2f}, "
                f"server CPU per submit x{m['cpu'] / base['cpu']:.2f}, p99 "
                f"x{m['p99'] / base['p99']:.2f}, health floor x{m['floor'] / base['floor']:.2f}"
            )
    return lines


def _print(r: dict[str, Any]) -> None:
    if "skipped" in r:
        print(f"{r['store']:>10} {r['variant']:>8}: skipped ({r['skipped']})", flush=True)
        return
    s, h = r["submit"], r["grpc_health_check_floor"]
    print(
        f"{r['store']:>10} {r['variant']:>8}: {s['calls_per_s']:7.1f} durable submits/s "
        f"(p50 {s['latency_p50_ms']} ms, p99 {s['latency_p99_ms']} ms, errors {s['errors']}; "
        f"server {s['server_cpu_us_per_call']} us CPU/submit, event loop "
        f"{s['server_event_loop_cpu_us_per_call']} us; clients {s['client_cpu_us_per_call']} us)"
        f" | health floor {h['calls_per_s']:7.1f}/s (p99 {h['latency_p99_ms']} ms, server "
        f"{h['server_cpu_us_per_call']} us CPU/call)",
        flush=True,
    )


if __name__ == "__main__":
    main()
