"""Slurm plug-in benchmark: hook times, and Slurm's task order vs firsthop's on real allocations.

Four measurements, each beside a baseline taken in the same run (the machine is shared):

1. **TaskProlog per task**: the installed ``hooks/task-prolog`` wrapper (``python -I -S``,
   standard library only) run as Slurm runs it, against ``python -I -S -c pass`` (the floor of
   any Python TaskProlog) and ``python -c pass``. Target: < 50 ms.
2. **Prolog per node**: the installed ``hooks/prolog`` wrapper for a firsthop job (fake
   probe, health verdict, slice copy), against ``python -c pass``.
3. **PrologSlurmctld for a 2,048-node allocation** on the 98,304-GPU fat tree (24 pods x 16
   leaves x 32 hosts x 8 GPUs): the installed wrapper end to end (interpreter, imports,
   topology load, placement restricted to the allocation, publishing 2,048 slices), and the
   placement alone in process. The allocation is what Slurm's tree plugin tends to give a
   large job on a busy cluster: whole leaves where free, then partial leaves, in node-name
   order. Target: < 2 s end to end.
4. **Slurm's order vs firsthop's** on allocations real Slurm chose: a ``slurmctld`` and one
   ``slurmd`` per node of a two-level tree (8 leaves x 4 hosts x 8 GPUs under one spine, leaf
   uplinks 4:1 oversubscribed; topology/tree exported by firsthop) is made busy with running
   jobs on random nodes; for jobs of 4, 6 and 8 nodes with two multi-node dimensions (DP and
   PP, or DP and CP: with DP alone the order cannot matter) ``sbatch --test-only`` asks Slurm
   which nodes it would give (the selection code of a real start), and both orders are
   priced with the placement cost model: Slurm's
   (task ``r`` on the ``r // 8``-th node of the list) and firsthop's
   (:func:`agents.slurm.ctld.allocation_table`). Two namings: hosts named in cabling order,
   and the same cabling with names shuffled (clusters whose names do not follow the racks).
   Skipped, and said so, where Slurm is absent.

Run: ``python -m bench.slurm_plugin [--trials N] [--rounds R]``; writes
``bench/results/slurm_plugin.json``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agents.slurm import install
from agents.slurm.comment import JobShape
from agents.slurm.ctld import allocation_table
from agents.slurm.state import HostSlice, write_local_slice
from bench.common import write_results
from bench.harness import slurm as localcluster
from topology.csv_import import parse_hosts_csv
from topology.generators import fat_tree
from topology.hostlist import compress_hostlist
from topology.model import Topology
from topology.spec import TopologySpec, dump_spec, spec_from_data, spec_to_data

BIN = Path(sys.executable).parent
TASK_TARGET_S = 0.050
CTLD_TARGET_S = 2.0
LEAF_OVERSUBSCRIPTION = 4.0


def _times(argv: Sequence[str], env: dict[str, str], runs: int) -> dict[str, float]:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run(list(argv), env=env, capture_output=True, text=True, check=False)
        samples.append(time.perf_counter() - start)
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} exited {done.returncode}: {done.stderr[-500:]}")
    samples.sort()
    return {
        "median_s": statistics.median(samples),
        "p90_s": samples[int(0.9 * (len(samples) - 1))],
        "min_s": samples[0],
        "runs": runs,
    }


def _installed(root: Path, spec: TopologySpec) -> install.InstallPlan:
    root.mkdir(parents=True, exist_ok=True)
    topo = root / "topology.yaml"
    dump_spec(spec, topo)
    plan = install.render(
        topo,
        root / "etc",
        state_dir=root / "state",
        local_dir=root / "local",
        log_file=root / "hooks.log",
        checkpoint_path=root,
    )
    install.write(plan, topo)
    return plan


def bench_hooks(root: Path, runs: int) -> dict[str, Any]:
    """TaskProlog and Prolog wall times through the installed wrappers."""
    spec = fat_tree(1, 2, 4, gpus_per_host=8)
    plan = _installed(root, spec)
    hooks = plan.directory / "hooks"
    node = next(iter(Topology.from_spec(spec).hosts))
    local = Path(plan.config.local_dir)
    write_local_slice(
        local, node, "42", HostSlice("42", 16, 2, 0, 8, node, 20042, tuple(range(8))).to_text()
    )
    task_env = {"SLURM_JOB_ID": "42", "SLURMD_NODENAME": node, "SLURM_LOCALID": "3"}
    python = sys.executable
    task = _times([str(hooks / "task-prolog")], task_env, runs)
    floor = _times([python, "-I", "-S", "-c", "pass"], task_env, runs)
    plain = _times([python, "-c", "pass"], task_env, runs)
    # Prolog: a published table for the job, a healthy fake node.
    from agents.slurm.state import publish

    computed = allocation_table(
        Topology.from_spec(spec),
        "43",
        list(Topology.from_spec(spec).hosts)[:2],
        JobShape({"tp": 8, "dp": 2}),
    )
    publish(Path(plan.config.state_dir), computed.table)
    (Path(plan.config.state_dir) / "fake-probe" / f"{node}.env").write_text(
        "FIRSTHOP_FAKE_GPUS=8\n"
    )
    prolog_env = {
        "SLURM_JOB_ID": "43",
        "SLURMD_NODENAME": node,
        "SLURM_JOB_COMMENT": "firsthop:tp=8,dp=2",
        "SLURM_CONF": "/nonexistent/slurm.conf",
    }
    prolog = _times([str(hooks / "prolog")], prolog_env, max(runs // 3, 5))
    skip = _times(
        [str(hooks / "prolog")], {**prolog_env, "SLURM_JOB_COMMENT": ""}, max(runs // 3, 5)
    )
    return {
        "task_prolog": task,
        "task_prolog_floor_python_I_S": floor,
        "python_startup_with_site": plain,
        "task_prolog_target_s": TASK_TARGET_S,
        "task_prolog_meets_target": task["median_s"] < TASK_TARGET_S,
        "prolog_firsthop_job": prolog,
        "prolog_job_without_comment": skip,
    }


def _large_allocation(topology: Topology, nodes: int, rng: random.Random) -> list[str]:
    """A 2,048-node allocation as Slurm's tree plugin would shape it on a busy cluster.

    70 % of hosts busy at random, except a few leaves left whole; take whole free leaves first,
    then the fullest partial leaves (best fit), return in node-name order (Slurm's list).
    """
    index = topology.index
    leaf_level = 1
    leaves = index.domain_names[leaf_level]
    whole_leaves = set(rng.sample(range(len(leaves)), 40))
    free: list[list[int]] = []
    for d in range(len(leaves)):
        hosts = list(
            range(int(index.domain_start[leaf_level][d]), int(index.domain_end[leaf_level][d]))
        )
        free.append(hosts if d in whole_leaves else [h for h in hosts if rng.random() >= 0.7])
    order = sorted(range(len(leaves)), key=lambda d: -len(free[d]))
    chosen: list[int] = []
    for d in order:
        take = free[d][: nodes - len(chosen)]
        chosen.extend(take)
        if len(chosen) == nodes:
            break
    return sorted(index.host_names[h] for h in chosen)


def bench_prolog_ctld(root: Path, runs: int) -> dict[str, Any]:
    """PrologSlurmctld for a 2,048-node job on the 98K-GPU fat tree."""
    spec = fat_tree(24, 16, 32, gpus_per_host=8)
    topology = Topology.from_spec(spec)
    plan = _installed(root, spec)
    nodes = _large_allocation(topology, 2048, random.Random(7))
    shape = JobShape({"tp": 8, "pp": 16, "dp": 128})
    start = time.perf_counter()
    computed = allocation_table(topology, "9001", nodes, shape)
    in_process = time.perf_counter() - start
    env = {
        "SLURM_JOB_ID": "9001",
        "SLURM_JOB_NODELIST": compress_hostlist(nodes),
        "SLURM_JOB_COMMENT": "firsthop:tp=8,pp=16,dp=128",
    }
    wrapper = _times([str(plan.directory / "hooks" / "prolog-ctld")], env, runs)
    log = Path(plan.config.log_file).read_text().splitlines()
    if not any("action=publish" in line for line in log):
        raise RuntimeError(f"prolog-ctld did not publish: {log[-3:]}")
    leaves = {topology.hosts[n].parent for n in nodes}
    return {
        "nodes": len(nodes),
        "gpus": len(nodes) * 8,
        "leaves_touched": len(leaves),
        "nodelist_chars": len(env["SLURM_JOB_NODELIST"]),
        "wrapper": wrapper,
        "allocation_table_in_process_s": in_process,
        "placement_solve_s": computed.solve_seconds,
        "cost_ms": computed.cost_ms,
        "slurm_order_cost_ms": computed.slurm_order_cost_ms,
        "lower_bound_ms": computed.table.meta["lower_bound_ms"],
        "target_s": CTLD_TARGET_S,
        "meets_target": wrapper["median_s"] < CTLD_TARGET_S,
    }


def _shuffled_names(spec: TopologySpec, rng: random.Random) -> TopologySpec:
    """The same cabling with host names permuted (names no longer follow the racks)."""
    data = spec_to_data(spec)
    names = [
        h if isinstance(h, str) else h["name"] for s in data["switches"] for h in s.get("hosts", [])
    ]
    shuffled = names[:]
    rng.shuffle(shuffled)
    mapping = dict(zip(names, shuffled, strict=True))
    for switch in data["switches"]:
        hosts = switch.get("hosts")
        if hosts:
            switch["hosts"] = [
                mapping[h] if isinstance(h, str) else {**h, "name": mapping[h["name"]]}
                for h in hosts
            ]
    return spec_from_data(data)


def two_level_tree(leaves: int = 8, hosts_per_leaf: int = 4) -> TopologySpec:
    """Leaves of 8-GPU hosts under one spine, leaf uplinks 4:1 oversubscribed."""
    rows = "".join(
        f"h{leaf * hosts_per_leaf + i + 1:03d},8,leaf{leaf + 1}\n"
        for leaf in range(leaves)
        for i in range(hosts_per_leaf)
    )
    return parse_hosts_csv(
        "host,gpus,leaf\n" + rows,
        name="two-level",
        tier_overrides={"leaf": {"oversubscription": LEAF_OVERSUBSCRIPTION}},
    )


def bench_orders(root: Path, rounds: int, trials: int, seed: int) -> dict[str, Any]:
    """Slurm's node-list order vs firsthop's table on allocations Slurm chose."""
    why = localcluster.missing()
    if why is not None:
        return {"skipped": why}
    rng = random.Random(seed)
    base = two_level_tree()
    scenarios: dict[str, Any] = {}
    for label, spec in (
        ("cabling_order_names", base),
        ("shuffled_names", _shuffled_names(base, rng)),
    ):
        topology = Topology.from_spec(spec)
        cluster = localcluster.LocalSlurm(
            root / label / "etc",
            root / label / "work",
            topology,
            extra=["TopologyPlugin=topology/tree"],
        )
        rows: list[dict[str, Any]] = []
        try:
            cluster.start()
            for _ in range(rounds):
                busy = rng.sample(cluster.nodes, k=rng.randint(6, 12))
                for node in busy:
                    busy_job = ["-N1", "-w", node, "--exclusive", "-o", "/dev/null"]
                    cluster.run(["sbatch", *busy_job, "--wrap", "sleep 600"])
                _wait_running(cluster, len(busy))
                for trial in range(trials):
                    k = (4, 6, 8)[trial % 3]
                    chosen = cluster.would_allocate(k, "--exclusive", "--gres=gpu:8")
                    if chosen is not None:
                        rows.append(_compare(topology, chosen, k, rng))
                cluster.run(
                    ["scancel", "--quiet", *cluster.run(["squeue", "-h", "-o", "%i"]).split()],
                    check=False,
                )
                cluster.wait_idle(cluster.nodes)
        finally:
            cluster.stop()
        ratios = [r["slurm_over_firsthop"] for r in rows]
        scenarios[label] = {
            "allocations": len(rows),
            "slurm_over_firsthop_mean": statistics.fmean(ratios) if ratios else None,
            "slurm_over_firsthop_max": max(ratios) if ratios else None,
            "allocations_where_order_differs": sum(1 for r in rows if r["reordered"]),
            "allocations_where_firsthop_cheaper": sum(
                1 for r in rows if r["slurm_over_firsthop"] > 1.0 + 1e-9
            ),
            "firsthop_over_lower_bound_mean": statistics.fmean(
                r["firsthop_over_bound"] for r in rows
            )
            if rows
            else None,
            "rows": rows,
        }
    return {
        "topology": "fat tree 2 pods x 4 leaves x 4 hosts x 8 GPUs (two switch tiers)",
        **scenarios,
    }


def _wait_running(cluster: localcluster.LocalSlurm, count: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        states = cluster.run(["squeue", "-h", "-o", "%T"]).split()
        if states.count("RUNNING") >= count:
            return
        time.sleep(0.2)  # polling Slurm with a deadline
    raise RuntimeError(f"busy jobs not running after {timeout_s:g} s")


def _compare(topology: Topology, nodes: list[str], k: int, rng: random.Random) -> dict[str, Any]:
    # Shapes where the node order matters (two multi-node dimensions); a job whose only
    # multi-node dimension is DP has one DP group spanning every node, whatever the order.
    shapes = [
        {"tp": 8, "dp": k // 2, "pp": 2},
        {"tp": 8, "dp": 2, "pp": k // 2},
        {"tp": 8, "cp": 2, "dp": k // 2},
    ]
    sizes = rng.choice([s for s in shapes if min(s.values()) >= 2])
    computed = allocation_table(topology, "1", nodes, JobShape(sizes))
    order = computed.table.meta["node_order"]
    bound = computed.table.meta["lower_bound_ms"]
    return {
        "nodes": compress_hostlist(nodes),
        "leaves": len({topology.hosts[n].parent for n in nodes}),
        "parallelism": sizes,
        "slurm_order_cost_ms": round(computed.slurm_order_cost_ms, 3),
        "firsthop_cost_ms": round(computed.cost_ms, 3),
        "slurm_over_firsthop": computed.slurm_order_cost_ms / computed.cost_ms
        if computed.cost_ms
        else 1.0,
        "firsthop_over_bound": computed.cost_ms / bound if bound else 1.0,
        "reordered": order != nodes,
    }


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark and write ``bench/results/slurm_plugin.json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="Runs per hook timing.")
    parser.add_argument("--rounds", type=int, default=12, help="Busy configurations per naming.")
    parser.add_argument("--trials", type=int, default=3, help="Allocations per busy configuration.")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="firsthop-bench-slurm-") as tmp:
        root = Path(tmp)
        hooks = bench_hooks(root / "hooks", args.runs)
        ms = {
            key: value["median_s"] * 1e3 for key, value in hooks.items() if isinstance(value, dict)
        }
        print(
            f"TaskProlog {ms['task_prolog']:.1f} ms median (python -I -S floor "
            f"{ms['task_prolog_floor_python_I_S']:.1f} ms, python with site "
            f"{ms['python_startup_with_site']:.1f} ms); Prolog {ms['prolog_firsthop_job']:.0f} ms "
            f"(job without comment {ms['prolog_job_without_comment']:.0f} ms)"
        )
        ctld = bench_prolog_ctld(root / "ctld", max(args.runs // 6, 3))
        print(
            f"PrologSlurmctld, {ctld['nodes']} nodes on the 98K-GPU tree: "
            f"{ctld['wrapper']['median_s']:.2f} s end to end, "
            f"placement {ctld['placement_solve_s']:.2f} s; "
            f"cost {ctld['cost_ms']:.1f} ms vs Slurm order {ctld['slurm_order_cost_ms']:.1f} ms"
        )
        orders = bench_orders(root / "orders", args.rounds, args.trials, args.seed)
        for label, result in orders.items():
            if isinstance(result, dict) and "allocations" in result:
                print(
                    f"{label}: {result['allocations']} Slurm allocations, Slurm/firsthop cost "
                    f"mean {result['slurm_over_firsthop_mean']:.3f} "
                    f"max {result['slurm_over_firsthop_max']:.3f}, "
                    f"firsthop cheaper in {result['allocations_where_firsthop_cheaper']}"
                )
            elif label == "skipped":
                print(f"order comparison skipped: {result}")
    path = write_results(
        "slurm_plugin", {"hooks": hooks, "prolog_ctld_2048_nodes": ctld, "orders": orders}
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
