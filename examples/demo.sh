#!/usr/bin/env bash
# The firsthop demo. First a short look at the topology model (a 98,304-GPU fat tree, and the
# real 847-host Alibaba Lingjun topology imported from a hosts CSV); then the control plane: a
# scheduler on the embedded SQLite store, a simulated 64-host cluster (one simulated agent per
# host, real gRPC), a mix of example jobs placed and running, an urgent job that preempts, a
# live view, and a clean shutdown.
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

step "Generate a fat tree: 24 pods x 16 leaves x 32 hosts x 8 GPUs, and summarise it"
firsthopctl topology generate fat-tree --pods 24 --leaves-per-pod 16 --hosts-per-leaf 32 \
  --gpus-per-host 8 --out big.yaml
firsthopctl topology show big.yaml

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

# ------------------------------------------------------------------ the control plane

pids=()
cleanup() {
  # Stop the agents, then the scheduler (SIGTERM: graceful), and wait for them.
  local pid
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    pid="${pids[$i]}"
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  pids=()
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Wait (at most 60 s) for a line starting with $2 in file $1; print the line.
wait_line() {
  local file="$1" prefix="$2" line
  for _ in $(seq 600); do
    line="$(grep -m1 "^$prefix" "$file" 2>/dev/null || true)"
    if [[ -n "$line" ]]; then
      printf '%s\n' "$line"
      return 0
    fi
    sleep 0.1
  done
  echo "demo: timed out waiting for '$prefix' in $file" >&2
  return 1
}

step "Generate the demo cluster: 2 pods x 4 leaves x 8 hosts x 8 GPUs (64 hosts, 512 GPUs)"
firsthopctl topology generate fat-tree --pods 2 --leaves-per-pod 4 --hosts-per-leaf 8 \
  --gpus-per-host 8 --out cluster.yaml

step "Start the scheduler on the embedded SQLite store (metrics on a free port)"
firsthop-scheduler --listen 127.0.0.1:0 --db "sqlite:///$work/firsthop.db" \
  --topology cluster.yaml --metrics-port 0 --log-level WARNING >scheduler.out 2>scheduler.log &
pids+=($!)
listening="$(wait_line scheduler.out 'listening on ')"
echo "$listening"
wait_line scheduler.out 'metrics on '
export FIRSTHOP_SERVER="${listening##* }"

step "Start 64 simulated agents (one per host: registration, heartbeats, rank commands)"
firsthop-agent simulate --server "$FIRSTHOP_SERVER" --topology cluster.yaml --duration 30 \
  >agents.out 2>agents.log &
pids+=($!)
wait_line agents.out 'connected '
firsthopctl nodes list --state READY | head -n 8

step "Queues: 'urgent' outranks 'training' and 'default' (its jobs may preempt theirs)"
firsthopctl queues set urgent --priority 10
firsthopctl queues set training --priority 5
firsthopctl queues list

step "Submit a mix of jobs (496 of 512 GPUs)"
jobs="$repo/examples/jobs"
for file in demo-tp8-dp16 demo-tp8-dp16 demo-pp4-tp8-dp4 dp-in-pod-64gpu small-8gpu \
  small-8gpu demo-finetune-16gpu demo-finetune-16gpu; do
  firsthop submit "$jobs/$file.yaml"
done
first="$(firsthop list --output json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')"

step "A job larger than the cluster is refused with a stable reason (and changes nothing)"
firsthop submit "$jobs/llama-405b-tp8-pp16-dp128.yaml" || echo "(exit code $?)"

step "Where the first job went: its rank table and the cost of its placement"
cat >first_running.py <<'PY'
import json, sys
for line in sys.stdin:
    job = json.loads(line)
    if job["state"] == "RUNNING":
        place = job["placement"]
        hosts = place["hosts"]
        print(f"{job['id']} {job['name']}: RUNNING on {len(hosts)} hosts "
              f"({hosts[0]} .. {hosts[-1]}), cost {place['cost']:.1f} ms/step, "
              f"lower bound {place['lower_bound']:.1f} ms")
        break
PY
# `watch --output json` prints one object per change; stop reading once it runs.
firsthop watch "$first" --output json | python3 first_running.py || true
firsthop status "$first"
firsthop list
firsthopctl cluster status

step "An urgent 256-GPU job arrives while the cluster is full: watch it live"
urgent="$(firsthop submit "$jobs/demo-urgent-256gpu.yaml" | awk '{print $NF}')"
firsthop explain "$urgent" || true
firsthop watch "$urgent"

step "The preempted jobs were requeued and run again"
firsthop list
firsthopctl cluster status --output json | python3 -c '
import json, sys
s = json.load(sys.stdin)
print("utilisation", s["utilisation"], "| largest job placeable per tier:",
      {t["tier"]: t["largest_placeable_gpus"] for t in s["tiers"]})'

step "Metrics (Prometheus text format), a few lines"
metrics="$(grep -m1 '^metrics on ' scheduler.out | awk '{print $3}')"
python3 - "$metrics" <<'PY'
import sys, urllib.request
text = urllib.request.urlopen(sys.argv[1], timeout=10).read().decode()
for line in text.splitlines():
    if line.startswith(("firsthop_jobs{", "firsthop_gpus{", "firsthop_queue_depth",
                        "firsthop_scheduling_cycle_seconds_count", "firsthop_agents_connected")):
        print(line)
PY

step "Shut down (SIGTERM: agents first, then the scheduler)"
cleanup
echo "stopped; files are in $work"
ls "$work"
