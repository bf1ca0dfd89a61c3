"""The TaskProlog: print ``export`` lines that give a task firsthop's rank.

Slurm runs the TaskProlog before every task, as the job's user, and applies the ``export
NAME=value`` lines it prints to the task's environment. Per task it reads this node's slice
(``LOCAL_DIR/<node>/<job>.env``, put there by the Prolog) and exports ``RANK`` (the rank
firsthop placed on GPU ``SLURM_LOCALID``), ``LOCAL_RANK``, ``WORLD_SIZE``,
``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``, ``NODE_RANK``,
``FIRSTHOP_NODE_RANK``, ``FIRSTHOP_NNODES`` and ``FIRSTHOP_JOB_ID``. Two launch styles work:

- ``srun`` with one task per GPU: ``SLURM_LOCALID`` is the GPU index, and ``RANK`` is
  firsthop's rank for that GPU (Slurm would number tasks in node-list order);
- one task per node running ``torchrun --rdzv-backend=static --node-rank
  $FIRSTHOP_NODE_RANK --nnodes $FIRSTHOP_NNODES --nproc-per-node G``: torchrun numbers
  ``node_rank * G + local`` and the table has exactly that shape (each node holds one aligned
  block of consecutive ranks, local GPU = rank mod G).

A job without a slice (no firsthop comment, or a Prolog that failed open) gets nothing.
Runs once per task, so it must be fast: standard library only, no config parsing beyond one
small file. Must not import ``scheduler``, pydantic, numpy, grpc or torch.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

from agents.slurm.state import HostSlice, SliceError, local_slice_path


def export_lines(piece: HostSlice, local_id: int) -> list[str]:
    """The ``export`` lines for the task on local GPU ``local_id`` of the slice's node."""
    rank = piece.ranks[local_id] if 0 <= local_id < len(piece.ranks) else None
    values = {
        "WORLD_SIZE": piece.world_size,
        "LOCAL_WORLD_SIZE": piece.gpus_per_node,
        "MASTER_ADDR": piece.master_addr,
        "MASTER_PORT": piece.master_port,
        "NODE_RANK": piece.node_rank,
        "FIRSTHOP_NODE_RANK": piece.node_rank,
        "FIRSTHOP_NNODES": piece.nnodes,
        "FIRSTHOP_JOB_ID": piece.job_id,
    }
    if rank is not None:
        values = {"RANK": rank, "LOCAL_RANK": local_id, **values}
    return [f"export {name}={value}" for name, value in values.items()]


def task_prolog(
    local_dir: Path,
    env: Mapping[str, str],
    out: TextIO,
    err: TextIO,
    *,
    fail_closed: bool = False,
) -> int:
    """Print the task's exports; exit code 0, or 2 for a corrupt slice with ``fail_closed``.

    Args:
        local_dir: the node-local slice directory.
        env: the task's environment (``SLURM_JOB_ID``, ``SLURMD_NODENAME``,
            ``SLURM_LOCALID``).
        out: where the export lines go (Slurm reads the TaskProlog's stdout).
        err: where a problem is reported.
        fail_closed: a corrupt slice fails the task (Slurm then does not run it) instead of
            running it without firsthop's ranks.
    """
    job = env.get("SLURM_JOB_ID", "")
    node = env.get("SLURMD_NODENAME", "")
    if not job or not node:
        return 0
    try:
        text = local_slice_path(local_dir, node, job).read_text()
    except (FileNotFoundError, SliceError):
        return 0
    except OSError as exc:
        err.write(f"firsthop-slurm task-prolog: job {job}: cannot read slice: {exc}\n")
        return 0
    try:
        piece = HostSlice.parse(text)
        local_id = int(env.get("SLURM_LOCALID", "0"))
    except (SliceError, ValueError) as exc:
        err.write(f"firsthop-slurm task-prolog: job {job}: {exc}\n")
        return 2 if fail_closed else 0
    out.write("\n".join(export_lines(piece, local_id)) + "\n")
    return 0


def main(local_dir: str, fail_closed: bool = False) -> int:
    """Entry point of the ``task-prolog`` wrapper (``python -I -S``: no site, no argparse)."""
    return task_prolog(Path(local_dir), os.environ, sys.stdout, sys.stderr, fail_closed=fail_closed)
