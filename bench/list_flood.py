"""List flood benchmark: does a flood of 1,000-job ``ListJobs`` pages starve point reads?

Issue 10: a dashboard paging through every job 13 times a second pushed ``GetJob`` p50 from
1.6 to 211 ms, because a page is built and serialized on the server's one event loop. One run:

1. ``firsthop-scheduler`` (``memory://`` store) on a 2 pods x 4 leaves x 8 hosts x 8 GPUs fat
   tree (64 hosts, 512 GPUs) and ``firsthop-agent simulate`` for its hosts (ranks run for an
   hour, so the jobs that fit stay running, with their rank tables);
2. ``--jobs`` jobs (default 6,000) of the control-plane mix (8 to 512 GPUs), each with a
   training job's command line and a dozen environment variables (about 0.7 KB on the wire), so
   a 1,000-job page is about 0.7 MB, the "MBs" of the issue;
3. three phases, each timing ``--gets`` sequential ``GetJob`` calls on random jobs and
   ``--submits`` sequential ``SubmitJob`` calls from this process, run in turn ``--rounds``
   times (default 3; latencies pooled per phase), so that the load other programs put on the
   machine falls on every phase alike:

   - ``baseline``: nothing else runs;
   - ``flood_rate``: a child process (``python -m bench.list_flood flood ...``) starts
     ``--rate`` (default 13) ``ListJobs`` calls of 1,000-job pages a second, whether the
     earlier ones were answered or not (at most ``MAX_OUTSTANDING`` in flight), walking the
     pages of every job and starting over at the end;
   - ``flood_max``: the child runs ``--workers`` (default 4) loops of such calls, each
     starting the next call when the last one is answered: as fast as it can go.

Reported: p50/p99 of each phase, the ratios flood / baseline of the same run, and the list
pages (and megabytes) the server answered per second during each flood. The flooding child,
this client and the scheduler share this machine's cores; the figures are end-to-end.

Run: ``python -m bench.list_flood [--jobs N] [--gets N] [--submits N] [--rounds N]``; writes
``bench/results/list_flood.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc.aio

from bench.common import write_results
from bench.harness.procs import Proc, scheduler_argv
from firsthop.v1 import jobs_pb2, jobs_pb2_grpc
from scheduler.api.spec_serde import job_spec_to_proto
from scheduler.jobspec import JobSpec, job_spec_from_data
from topology.generators import fat_tree
from topology.spec import dump_spec

BIN = Path(sys.executable).parent
SIZES = ((8, 0.40), (16, 0.20), (64, 0.25), (128, 0.10), (512, 0.05))
PAGE = 1000
PHASES = ("baseline", "flood_rate", "flood_max")
MAX_OUTSTANDING = 64
"""Most list calls the rate flood keeps in flight (beyond it, it skips a beat)."""
SUBMIT_CONCURRENCY = 32
START_WAIT_S = 300.0
CALL_TIMEOUT_S = 120.0


def specs(count: int, seed: int, prefix: str) -> list[JobSpec]:
    """``count`` job specs of the control-plane mix, each with a training job's command line
    and environment (about 1 KB)."""
    rng = random.Random(seed)
    sizes = [s for s, _ in SIZES]
    weights = [w for _, w in SIZES]
    out = []
    for i in range(count):
        gpus = rng.choices(sizes, weights)[0]
        env = {
            "FIRSTHOP_SIM_DURATION_S": "3600",
            "NCCL_DEBUG": "WARN",
            "NCCL_IB_HCA": "mlx5_0,mlx5_1,mlx5_2,mlx5_3,mlx5_4,mlx5_5,mlx5_6,mlx5_7",
            "NCCL_SOCKET_IFNAME": "eth0",
            "CUDA_DEVICE_MAX_CONNECTIONS": "1",
            "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True",
            "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1",
            "WANDB_PROJECT": f"pretrain-{rng.randrange(100):02d}",
            "WANDB_RUN_ID": f"{rng.getrandbits(64):016x}",
            "HF_HOME": "/shared/cache/huggingface",
            "DATA_PATH": f"/shared/datasets/mix-{rng.randrange(20):02d}/tokens",
            "CHECKPOINT_DIR": f"/shared/checkpoints/{prefix}-{i}",
        }
        command = [
            "python",
            "-m",
            "train.pretrain",
            "--config",
            f"configs/model-{rng.choice(('1b', '7b', '13b', '70b'))}.yaml",
            "--global-batch-size",
            str(gpus * 32),
            "--lr",
            "3e-4",
            "--save-interval",
            "1000",
        ]
        out.append(
            job_spec_from_data(
                {
                    "name": f"{prefix}-{i}",
                    "gpus": gpus,
                    "parallelism": {"tp": 8, "dp": gpus // 8},
                    "command": command,
                    "env": env,
                    "time_limit_s": rng.choice((3600, 7200, 14400)),
                }
            )
        )
    return out


def percentiles(latencies: list[float]) -> dict[str, float]:
    """p50 and p99 of ``latencies`` (seconds), in milliseconds."""
    ordered = sorted(latencies)
    return {
        "calls": len(ordered),
        "p50_ms": round(1000 * ordered[len(ordered) // 2], 2),
        "p99_ms": round(1000 * ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2),
    }


async def submit_many(address: str, jobs: list[JobSpec]) -> list[str]:
    """Submit ``jobs`` with :data:`SUBMIT_CONCURRENCY` calls in flight; their ids."""
    requests = [
        jobs_pb2.SubmitJobRequest(spec=job_spec_to_proto(s), submission_id=s.name) for s in jobs
    ]
    ids: list[str] = []
    async with grpc.aio.insecure_channel(address) as channel:
        stub = jobs_pb2_grpc.JobServiceStub(channel)
        pending = iter(requests)

        async def worker() -> None:
            for request in pending:
                response = await stub.SubmitJob(request, timeout=CALL_TIMEOUT_S)
                ids.append(response.job.id)

        await asyncio.gather(*(worker() for _ in range(SUBMIT_CONCURRENCY)))
    return ids


async def measure(
    address: str, ids: list[str], gets: int, extra: list[JobSpec]
) -> dict[str, list[float]]:
    """Sequential ``GetJob`` calls on random jobs, then sequential submissions of ``extra``:
    the latencies of each (seconds)."""
    rng = random.Random(len(extra))
    get_latencies: list[float] = []
    submit_latencies: list[float] = []
    async with grpc.aio.insecure_channel(address) as channel:
        stub = jobs_pb2_grpc.JobServiceStub(channel)
        for _ in range(gets):
            get = jobs_pb2.GetJobRequest(job_id=rng.choice(ids))
            started = time.perf_counter()
            await stub.GetJob(get, timeout=CALL_TIMEOUT_S)
            get_latencies.append(time.perf_counter() - started)
        for s in extra:
            request = jobs_pb2.SubmitJobRequest(spec=job_spec_to_proto(s), submission_id=s.name)
            started = time.perf_counter()
            await stub.SubmitJob(request, timeout=CALL_TIMEOUT_S)
            submit_latencies.append(time.perf_counter() - started)
    return {"get_job": get_latencies, "submit_job": submit_latencies}


# ---------------------------------------------------------------- the flooding child


class Flood:
    """``ListJobs`` calls of :data:`PAGE`-job pages, walking every page and starting over."""

    def __init__(self, stub: jobs_pb2_grpc.JobServiceAsyncStub) -> None:
        self._stub = stub
        self._token = ""
        self.pages = 0
        self.jobs = 0
        self.bytes = 0
        self.errors = 0
        self.latencies: list[float] = []

    async def one(self) -> None:
        request = jobs_pb2.ListJobsRequest(page_size=PAGE, page_token=self._token)
        started = time.perf_counter()
        try:
            response = await self._stub.ListJobs(request, timeout=CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError:
            self.errors += 1
            return
        self.latencies.append(time.perf_counter() - started)
        self._token = response.next_page_token
        self.pages += 1
        self.jobs += len(response.jobs)
        self.bytes += response.ByteSize()


async def flood(address: str, rate: float, workers: int) -> None:
    """Flood ``address`` until SIGTERM (``rate`` calls a second, or ``workers`` loops when
    ``rate`` is 0); print what was answered as one JSON line."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with grpc.aio.insecure_channel(
        address, options=[("grpc.max_receive_message_length", 64 << 20)]
    ) as channel:
        stub = jobs_pb2_grpc.JobServiceStub(channel)
        f = Flood(stub)
        await f.one()  # connected, and the first page is known to work
        f.pages = f.jobs = f.bytes = 0
        f.latencies.clear()
        print("flooding", flush=True)
        started = time.perf_counter()
        skipped = 0
        if rate > 0:
            calls: set[asyncio.Task[None]] = set()
            period = 1.0 / rate
            beat = started
            while not stop.is_set():
                if len(calls) < MAX_OUTSTANDING:
                    task = asyncio.create_task(f.one())
                    calls.add(task)
                    task.add_done_callback(calls.discard)
                else:
                    skipped += 1
                beat += period
                with contextlib.suppress(TimeoutError):  # the next beat, or SIGTERM
                    await asyncio.wait_for(stop.wait(), max(0.0, beat - time.perf_counter()))
            for task in list(calls):
                task.cancel()
        else:

            async def loop_calls() -> None:
                while not stop.is_set():
                    await f.one()

            runners = [asyncio.create_task(loop_calls()) for _ in range(workers)]
            await stop.wait()
            for task in runners:
                task.cancel()
        wall = time.perf_counter() - started
    stats = {
        "wall_s": round(wall, 2),
        "pages": f.pages,
        "pages_per_s": round(f.pages / wall, 2),
        "jobs_per_s": round(f.jobs / wall, 1),
        "mb_per_s": round(f.bytes / wall / 1e6, 2),
        "errors": f.errors,
        "skipped_beats": skipped,
        "latencies": [round(x, 5) for x in f.latencies],
    }
    print("flood " + json.dumps(stats), flush=True)


def flood_during(
    address: str, args: list[str], log: Path, run: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run ``run()`` while a flooding child runs; its result and the child's stats."""
    child = Proc([sys.executable, "-m", "bench.list_flood", "flood", address, *args], log)
    try:
        child.wait_line("flooding", START_WAIT_S)
        result = run()
    finally:
        child.stop(signal.SIGTERM, timeout=60)
    line = child.wait_line("flood ", 10)
    return result, json.loads(line.removeprefix("flood "))


# ---------------------------------------------------------------- the run


def run(
    work: Path, *, jobs: int, gets: int, submits: int, rate: float, workers: int, rounds: int
) -> dict[str, Any]:
    """The three phases (see the module docstring) against one scheduler, ``rounds`` times in
    turn (so a change in the machine's load touches every phase alike); latencies pooled."""
    topology = work / "cluster.yaml"
    dump_spec(fat_tree(2, 4, 8, gpus_per_host=8), topology)
    scheduler = Proc(scheduler_argv("memory://", topology), work / "scheduler.log")
    agents: Proc | None = None
    pooled: dict[str, dict[str, list[float]]] = {
        name: {"get_job": [], "submit_job": []} for name in PHASES
    }
    lists: dict[str, list[dict[str, Any]]] = {"flood_rate": [], "flood_max": []}
    try:
        address = scheduler.wait_line("listening on ", START_WAIT_S).split()[-1]
        agents = Proc(
            [str(BIN / "firsthop-agent"), "simulate", "--server", address, "--topology",
             str(topology), "--duration", "3600"],
            work / "agents.log",
        )  # fmt: skip
        agents.wait_line("connected ", START_WAIT_S)
        started = time.perf_counter()
        ids = asyncio.run(submit_many(address, specs(jobs, seed=1, prefix="flood")))
        fill_s = time.perf_counter() - started
        for n in range(rounds):

            def phase(name: str, n: int = n) -> Any:
                extra = specs(submits, seed=n, prefix=f"{name.replace('_', '-')}-r{n}")
                return lambda: asyncio.run(measure(address, ids, gets, extra))

            measured = {"baseline": phase("baseline")()}
            for name, flags in (
                ("flood_rate", ["--rate", str(rate)]),
                ("flood_max", ["--workers", str(workers)]),
            ):
                log = work / f"{name}-{n}.log"
                measured[name], stats = flood_during(address, flags, log, phase(name))
                lists[name].append(stats)
            for name, latencies in measured.items():
                for rpc, values in latencies.items():
                    pooled[name][rpc].extend(values)
    finally:
        if agents is not None:
            agents.stop(timeout=60)
        scheduler.stop(timeout=60)

    result: dict[str, Any] = {
        "jobs": jobs,
        "page_size": PAGE,
        "hosts": 64,
        "rounds": rounds,
        "submit_s": round(fill_s, 2),
    }
    for name in PHASES:
        result[name] = {rpc: percentiles(values) for rpc, values in pooled[name].items()}
    result["flood_rate"].update(rate_per_s=rate, lists=_list_stats(lists["flood_rate"]))
    result["flood_max"].update(workers=workers, lists=_list_stats(lists["flood_max"]))
    baseline = result["baseline"]
    for name in ("flood_rate", "flood_max"):
        result[f"{name}_vs_baseline"] = {
            f"{rpc}_{p}": round(result[name][rpc][p] / baseline[rpc][p], 2)
            for rpc in ("get_job", "submit_job")
            for p in ("p50_ms", "p99_ms")
        }
    return result


def _list_stats(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The flooding child's figures over every round."""
    wall = sum(r["wall_s"] for r in rounds)
    latencies = [x for r in rounds for x in r["latencies"]]
    return {
        "wall_s": round(wall, 2),
        "pages": sum(r["pages"] for r in rounds),
        "pages_per_s": round(sum(r["pages"] for r in rounds) / wall, 2),
        "jobs_per_s": round(sum(r["jobs_per_s"] * r["wall_s"] for r in rounds) / wall, 1),
        "mb_per_s": round(sum(r["mb_per_s"] * r["wall_s"] for r in rounds) / wall, 2),
        "errors": sum(r["errors"] for r in rounds),
        "skipped_beats": sum(r["skipped_beats"] for r in rounds),
        "list_latency": percentiles(latencies) if latencies else None,
    }


def _print(result: dict[str, Any]) -> None:
    for name in PHASES:
        r = result[name]
        lists = r.get("lists")
        tail = ""
        if lists is not None:
            tail = (
                f"; lists answered {lists['pages_per_s']}/s ({lists['mb_per_s']} MB/s, "
                f"list p99 {lists['list_latency'] and lists['list_latency']['p99_ms']} ms)"
            )
        print(
            f"{name:>10}: GetJob p50 {r['get_job']['p50_ms']} ms p99 {r['get_job']['p99_ms']} ms; "
            f"SubmitJob p50 {r['submit_job']['p50_ms']} ms p99 {r['submit_job']['p99_ms']} ms"
            + tail,
            flush=True,
        )
    print(f"flood at rate / baseline: {result['flood_rate_vs_baseline']}")
    print(f"flood at max / baseline:  {result['flood_max_vs_baseline']}")


def main() -> None:
    if sys.argv[1:2] == ["flood"]:
        child = argparse.ArgumentParser(prog="bench.list_flood flood")
        child.add_argument("address")
        child.add_argument("--rate", type=float, default=0.0)
        child.add_argument("--workers", type=int, default=4)
        a = child.parse_args(sys.argv[2:])
        asyncio.run(flood(a.address, a.rate, a.workers))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=6000, help="jobs in the scheduler")
    parser.add_argument("--gets", type=int, default=1000, help="GetJob calls per phase")
    parser.add_argument("--submits", type=int, default=150, help="SubmitJob calls per phase")
    parser.add_argument("--rate", type=float, default=13.0, help="list calls a second")
    parser.add_argument("--workers", type=int, default=4, help="loops of the unbounded flood")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the three phases")
    parser.add_argument("--name", default="list_flood", help="results file name")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="firsthop-bench-") as tmp:
        result = run(
            Path(tmp),
            jobs=args.jobs,
            gets=args.gets,
            submits=args.submits,
            rate=args.rate,
            workers=args.workers,
            rounds=args.rounds,
        )
    _print(result)
    path = write_results(args.name, result)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
