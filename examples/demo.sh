#!/usr/bin/env bash
# Local demo: a scheduler with the embedded store, a few simulated agents, example jobs.
#
# Placeholder until the scheduler exists: for now it only shows the admin CLI's help.
# Run it through `make demo`, which sets VENV; run directly, it uses the repository's .venv.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="${VENV:-$repo/.venv}/bin:$PATH"

firsthopctl --help
