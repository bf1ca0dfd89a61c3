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

It runs once per task, so it must be fast: the wrapper starts the interpreter with ``-I -S``
(no site packages) and this module imports only ``os``, ``sys`` and
:mod:`agents.slurm.slicefmt` (which imports nothing). Must not import ``scheduler``,
pydantic, numpy, grpc, torch, or even ``typing``, ``pathlib`` and ``dataclasses``.
"""

from __future__ import annotations

import os
import sys

from agents.slurm.slicefmt import parse_slice

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import TextIO


def export_lines(values: dict[str, str], local_id: int) -> list[str]:
    """The ``export`` lines for the task on local GPU ``local_id`` of the slice's node.

    Args:
        values: the parsed slice (:func:`~agents.slurm.slicefmt.parse_slice`).
        local_id: ``SLURM_LOCALID``.
    """
    ranks = [r for r in values["ranks"].split(",") if r]
    exports: list[tuple[str, str]] = []
    if 0 <= local_id < len(ranks):
        exports += [("RANK", ranks[local_id]), ("LOCAL_RANK", str(local_id))]
    exports += [
        ("WORLD_SIZE", values["world_size"]),
        ("LOCAL_WORLD_SIZE", values["gpus_per_node"]),
        ("MASTER_ADDR", values["master_addr"]),
        ("MASTER_PORT", values["master_port"]),
        ("NODE_RANK", values["node_rank"]),
        ("FIRSTHOP_NODE_RANK", values["node_rank"]),
        ("FIRSTHOP_NNODES", values["nnodes"]),
        ("FIRSTHOP_JOB_ID", values["job_id"]),
    ]
    return [f"export {name}={value}" for name, value in exports]


def task_prolog(
    local_dir: str,
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
    if not job or not node or "/" in node or "/" in job:
        return 0
    path = os.path.join(local_dir, node, job + ".env")
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        return 0
    except OSError as exc:
        err.write(f"firsthop-slurm task-prolog: job {job}: cannot read slice: {exc}\n")
        return 2 if fail_closed else 0
    try:
        values = parse_slice(text)
        local_id = int(env.get("SLURM_LOCALID", "0"))
    except ValueError as exc:
        err.write(f"firsthop-slurm task-prolog: job {job}: bad slice {path}: {exc}\n")
        return 2 if fail_closed else 0
    out.write("\n".join(export_lines(values, local_id)) + "\n")
    return 0


def main(local_dir: str, fail_closed: bool = False) -> int:
    """Entry point of the ``task-prolog`` wrapper (``python -I -S``: no site, no argparse)."""
    return task_prolog(local_dir, os.environ, sys.stdout, sys.stderr, fail_closed=fail_closed)
