"""Topology benchmark: load time and query throughput at 98,304 GPUs.

Generates the 24 pods x 16 leaves x 32 hosts x 8 GPUs fat tree of issue 3, writes it as YAML,
then measures loading it (parse + validate + build + index) and the queries the placer needs,
each beside a baseline measured in the same run:

- lowest common tier of two hosts: the index (vectorised and per call) against networkx's
  ``lowest_common_ancestor`` on the same tree;
- free GPUs per domain for a busy mask: the index against a plain loop over hosts.

Run: ``python -m bench.topology``; writes ``bench/results/topology.json``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import networkx as nx
import numpy as np

from bench.common import best_of, write_results
from topology.generators import fat_tree
from topology.model import Topology
from topology.spec import dump_spec, load_spec

PODS, LEAVES, HOSTS, GPUS = 24, 16, 32, 8
PAIRS = 1_000_000
SCALAR_CALLS = 100_000
GRAPH_CALLS = 20_000
NX_LCA_CALLS = 20


def main() -> None:
    rng = np.random.default_rng(7)
    start = time.perf_counter()
    spec = fat_tree(PODS, LEAVES, HOSTS, gpus_per_host=GPUS)
    generate_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.yaml"
        start = time.perf_counter()
        dump_spec(spec, path)
        write_s = time.perf_counter() - start
        size = path.stat().st_size
        load_s = best_of(lambda: Topology.load(path).index, repeat=3)
        parse_s = best_of(lambda: load_spec(path), repeat=3)
    topo = Topology.from_spec(spec)
    index = topo.index
    graph_s = best_of(lambda: Topology.from_spec(spec).graph, repeat=3)

    a = rng.integers(0, index.num_hosts, PAIRS)
    b = rng.integers(0, index.num_hosts, PAIRS)
    vector_s = best_of(lambda: index.lowest_common_levels(a, b), repeat=5)
    pairs = list(zip(a[:SCALAR_CALLS].tolist(), b[:SCALAR_CALLS].tolist(), strict=True))
    scalar_s = best_of(lambda: [index.lowest_common_level(x, y) for x, y in pairs], repeat=3)

    graph = topo.graph
    names = index.host_names
    graph_pairs = [(("host", names[x]), ("host", names[y])) for x, y in pairs[:GRAPH_CALLS]]

    def walk_up(node: tuple[str, str]) -> list[tuple[str, str]]:
        path = [node]
        while True:
            parents = list(graph.predecessors(path[-1]))
            if not parents:
                return path
            path.append(parents[0])

    def walk_lca(p: tuple[str, str], q: tuple[str, str]) -> int:
        above_p = set(walk_up(p))
        for node in walk_up(q):
            if node in above_p:
                return 0 if node[0] == "host" else int(graph.nodes[node]["level"])
        raise AssertionError("no common ancestor")

    walk_s = best_of(lambda: [walk_lca(p, q) for p, q in graph_pairs], 3)
    nx_s = best_of(
        lambda: [nx.lowest_common_ancestor(graph, p, q) for p, q in graph_pairs[:NX_LCA_CALLS]], 1
    )
    for (x, y), (p, q) in zip(pairs[:NX_LCA_CALLS], graph_pairs, strict=False):
        lca = nx.lowest_common_ancestor(graph, p, q)
        expected = 0 if x == y else graph.nodes[lca]["level"]
        if not index.lowest_common_level(x, y) == walk_lca(p, q) == expected:
            raise SystemExit(f"index and graph disagree on hosts {x}, {y}")

    busy = rng.random(index.num_gpus) < 0.7
    free_s = best_of(
        lambda: [
            index.free_gpus_per_domain(level, index.free_gpus_per_host(busy))
            for level in range(1, index.num_levels)
        ],
        repeat=5,
    )

    def loop_free() -> list[dict[str, int]]:
        out: list[dict[str, int]] = [{} for _ in range(index.num_levels)]
        for h, host in enumerate(topo.hosts.values()):
            lo, hi = index.gpu_offset[h], index.gpu_offset[h + 1]
            free = int((~busy[lo:hi]).sum())
            name = host.parent
            while name is not None:
                domain = topo.domains[name]
                out[domain.level][name] = out[domain.level].get(name, 0) + free
                name = domain.parent
        return out

    loop_s = best_of(loop_free, repeat=3)

    walk_rate = GRAPH_CALLS / walk_s
    lct = {
        "vectorised_queries_per_s": PAIRS / vector_s,
        "scalar_queries_per_s": SCALAR_CALLS / scalar_s,
        "graph_walk_queries_per_s": walk_rate,
        "networkx_lca_queries_per_s": NX_LCA_CALLS / nx_s,
        "vectorised_speedup_vs_graph_walk": (PAIRS / vector_s) / walk_rate,
        "scalar_speedup_vs_graph_walk": (SCALAR_CALLS / scalar_s) / walk_rate,
    }
    results = {
        "cluster": {
            "pods": PODS,
            "leaves_per_pod": LEAVES,
            "hosts_per_leaf": HOSTS,
            "gpus_per_host": GPUS,
            "gpus": index.num_gpus,
            "hosts": index.num_hosts,
        },
        "generate_s": generate_s,
        "write_yaml_s": write_s,
        "yaml_bytes": size,
        "parse_yaml_s": parse_s,
        "load_and_index_s": load_s,
        "build_networkx_graph_s": graph_s,
        "lowest_common_tier": lct,
        "free_capacity_all_levels": {
            "index_s": free_s,
            "python_loop_s": loop_s,
            "speedup": loop_s / free_s,
        },
    }
    out = write_results("topology", results)
    print(f"topology benchmark: {index.num_gpus:,} GPUs, {index.num_hosts:,} hosts")
    print(f"  generate {generate_s:.3f} s, write YAML {write_s:.3f} s ({size / 1e6:.2f} MB)")
    print(f"  load + validate + index {load_s:.3f} s (parse alone {parse_s:.3f} s)")
    print(f"  networkx graph with GPU nodes {graph_s:.3f} s")
    print(
        f"  lowest common tier: {lct['vectorised_queries_per_s']:,.0f}/s vectorised, "
        f"{lct['scalar_queries_per_s']:,.0f}/s per call; baselines on the networkx tree: "
        f"{walk_rate:,.0f}/s parent walk, {lct['networkx_lca_queries_per_s']:,.1f}/s "
        f"nx.lowest_common_ancestor"
    )
    print(
        f"  free GPUs per domain, all levels: {free_s * 1e3:.2f} ms vs loop {loop_s * 1e3:.1f} ms "
        f"(x{loop_s / free_s:,.0f})"
    )
    print(f"  wrote {out}")


if __name__ == "__main__":
    main()
