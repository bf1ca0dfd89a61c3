#!/usr/bin/env bash
# The firsthop demo. Today it shows the topology model: generate a 98,304-GPU fat tree,
# summarise it, draw part of its tree, export Slurm topology.conf (tree and block), and import
# the real 847-host Alibaba Lingjun topology from a hosts CSV. Later issues add placement,
# a scheduler with the embedded SQLite store and simulated agents.
#
# Run it through `make demo`, which sets VENV; run directly, it uses the repository's .venv.
# Files go to $DEMO_DIR (default: a fresh temporary directory).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="${VENV:-$repo/.venv}/bin:$PATH"
work="${DEMO_DIR:-$(mktemp -d -t firsthop-demo.XXXXXX)}"
mkdir -p "$work"
cd "$work"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Generate a fat tree: 24 pods x 16 leaves x 32 hosts x 8 GPUs"
firsthopctl topology generate fat-tree --pods 24 --leaves-per-pod 16 --hosts-per-leaf 32 \
  --gpus-per-host 8 --out big.yaml

step "Summarise it tier by tier"
firsthopctl topology show big.yaml

step "Draw the top of its tree"
firsthopctl topology show big.yaml --tree --depth 2 --width 2

step "Export Slurm topology.conf (topology/tree), first lines"
firsthopctl topology export-slurm big.yaml --plugin tree --out topology-tree.conf
head -n 6 topology-tree.conf

step "Export Slurm topology.conf (topology/block), first lines"
firsthopctl topology export-slurm big.yaml --plugin block --out topology-block.conf
head -n 4 topology-block.conf
tail -n 1 topology-block.conf

step "Import the real 847-host Alibaba Lingjun topology (ToR names repeat across PSWs)"
python3 - "$repo/data/topology/crux_lingjun_2023_topo.csv" lingjun.csv <<'PY'
import csv, sys
# The published file lists the farthest tier first (ip,DSW,PSW,ASW); firsthop's hosts CSV
# lists the nearest first.
with open(sys.argv[1], newline="") as src, open(sys.argv[2], "w", newline="") as dst:
    out = csv.writer(dst)
    out.writerow(["host", "tor", "psw", "dsw"])
    for row in csv.DictReader(src):
        out.writerow([row["ip"][:12], row["ASW"], row["PSW"], row["DSW"]])
PY
firsthopctl topology import lingjun.csv --name lingjun --out lingjun.yaml
firsthopctl topology show lingjun.yaml

step "Files are in $work"
ls -la "$work"
