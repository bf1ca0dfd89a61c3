"""Where rank tables live: the shared state directory and each node's local slice.

Layout (state-directory mode)::

    STATE_DIR/jobs/<job>/table.json      the whole table and how it was chosen
    STATE_DIR/jobs/<job>/slices.txt      one line per node: its slice (the Prolog copies it)
    STATE_DIR/fake-probe/<node>.env      optional: fake GPUs for the node's health check
    LOCAL_DIR/<node>/<job>.env           the slice on the node, read by the TaskProlog

A job's directory is written beside its final name and renamed into place, so a reader sees
either the whole previous table or the whole new one (a requeued job gets a new allocation
and a new table under the same id). Slices are ``key=value`` lines
(:mod:`agents.slurm.slicefmt`, which imports nothing, for the TaskProlog):

    job_id=42
    world_size=16
    nnodes=4
    node_rank=1
    gpus_per_node=4
    master_addr=n3
    master_port=20042
    ranks=4,5,6,7        # the rank on local GPU 0, 1, ...

Standard library only; must not import ``scheduler``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.slurm.slicefmt import format_slice, parse_slice

SLICES_FILE = "slices.txt"


class SliceError(ValueError):
    """A slice file that does not parse (reason ``invalid_slice``)."""

    reason = "invalid_slice"


@dataclass(frozen=True, slots=True)
class HostSlice:
    """One node's part of a job's rank table.

    Attributes:
        job_id: the Slurm job id.
        world_size: ranks in the job.
        nnodes: nodes in the job.
        node_rank: this node's position in rank order (its ranks are
            ``node_rank * gpus_per_node + local``, so torchrun's static rendezvous agrees).
        gpus_per_node: GPUs (ranks) per node.
        master_addr: the node of rank 0.
        master_port: the rendezvous port of the job.
        ranks: the rank on each local GPU index.
    """

    job_id: str
    world_size: int
    nnodes: int
    node_rank: int
    gpus_per_node: int
    master_addr: str
    master_port: int
    ranks: tuple[int, ...]

    def to_text(self) -> str:
        """The slice file's text (:mod:`agents.slurm.slicefmt`)."""
        values = {
            "job_id": self.job_id,
            "world_size": str(self.world_size),
            "nnodes": str(self.nnodes),
            "node_rank": str(self.node_rank),
            "gpus_per_node": str(self.gpus_per_node),
            "master_addr": self.master_addr,
            "master_port": str(self.master_port),
            "ranks": ",".join(str(r) for r in self.ranks),
        }
        return format_slice(values)

    @classmethod
    def parse(cls, text: str) -> HostSlice:
        """Parse a slice file.

        Raises:
            SliceError: a key is missing or a number does not parse.
        """
        try:
            values = parse_slice(text)
        except ValueError as exc:
            raise SliceError(f"bad slice: {exc}") from exc
        return cls(
            job_id=values["job_id"],
            world_size=int(values["world_size"]),
            nnodes=int(values["nnodes"]),
            node_rank=int(values["node_rank"]),
            gpus_per_node=int(values["gpus_per_node"]),
            master_addr=values["master_addr"],
            master_port=int(values["master_port"]),
            ranks=tuple(int(r) for r in values["ranks"].split(",") if r),
        )


@dataclass(frozen=True, slots=True)
class JobTable:
    """A job's published rank table.

    Attributes:
        job_id: the Slurm job id.
        slices: per node, its slice.
        meta: what the table record adds for people and tools (sizes, cost, the cost of
            Slurm's own order, solve time): written to ``table.json``.
    """

    job_id: str
    slices: Mapping[str, HostSlice]
    meta: Mapping[str, Any]

    def rank_rows(self) -> list[tuple[int, str, int]]:
        """``(rank, node, gpu)`` for every rank, by rank."""
        rows = [
            (rank, node, gpu)
            for node, piece in self.slices.items()
            for gpu, rank in enumerate(piece.ranks)
        ]
        return sorted(rows)


def job_dir(state_dir: Path, job_id: str) -> Path:
    """The directory of one job's table."""
    if not job_id or not job_id.replace("_", "").isalnum():
        raise SliceError(f"bad job id {job_id!r}")
    return state_dir / "jobs" / job_id


def publish(state_dir: Path, table: JobTable) -> Path:
    """Write a job's table, replacing any earlier table of the job atomically.

    Two files, whatever the job's size (a file per node cost a second for 2,048 nodes):
    ``slices.txt``, one line per node (``NODE key=value;key=value;...``) from which
    :func:`read_host_slice` cuts the node's slice, and ``table.json``, the record for people
    and tools. World-readable (the TaskProlog runs as the job's user).

    Returns:
        The job's directory.
    """
    final = job_dir(state_dir, table.job_id)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{table.job_id}.", dir=final.parent))
    staging.chmod(0o755)
    order = node_order(table.slices)
    lines = []
    for node in order:
        _check_name(node)
        lines.append(f"{node} {';'.join(table.slices[node].to_text().splitlines())}\n")
    (staging / SLICES_FILE).write_text("".join(lines))
    record = {
        "job_id": table.job_id,
        **table.meta,
        "nodes": [
            {"node": n, "node_rank": table.slices[n].node_rank, "ranks": table.slices[n].ranks}
            for n in order
        ],
    }
    (staging / "table.json").write_text(json.dumps(record) + "\n")
    for path in staging.iterdir():
        path.chmod(0o644)
    if final.exists():
        old = final.with_name(f".{table.job_id}.old.{os.getpid()}")
        final.rename(old)
        staging.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(final)
    return final


def read_host_slice(state_dir: Path, job_id: str, node: str) -> str | None:
    """The text of ``node``'s slice of a job's table, ``None`` when the job has no table.

    Raises:
        SliceError: the job has a table but ``node`` is not in it.
    """
    _check_name(node)
    try:
        text = (job_dir(state_dir, job_id) / SLICES_FILE).read_text()
    except FileNotFoundError:
        return None
    prefix = node + " "
    for line in text.splitlines():
        if line.startswith(prefix):
            return "\n".join(line[len(prefix) :].split(";")) + "\n"
    raise SliceError(f"node {node} is not in job {job_id}'s rank table")


def read_table(state_dir: Path, job_id: str) -> dict[str, Any] | None:
    """A job's ``table.json``, ``None`` when absent."""
    try:
        data: dict[str, Any] = json.loads((job_dir(state_dir, job_id) / "table.json").read_text())
    except FileNotFoundError:
        return None
    return data


def remove_job(state_dir: Path, job_id: str) -> bool:
    """Delete a job's table; whether there was one."""
    path = job_dir(state_dir, job_id)
    if not path.exists():
        return False
    shutil.rmtree(path, ignore_errors=True)
    return True


def local_slice_path(local_dir: Path, node: str, job_id: str) -> Path:
    """Where the Prolog puts this node's slice for the TaskProlog."""
    _check_name(node)
    return local_dir / node / f"{job_id}.env"


def write_local_slice(local_dir: Path, node: str, job_id: str, text: str) -> Path:
    """Store the slice on the node (world-readable, written then renamed)."""
    path = local_slice_path(local_dir, node, job_id)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    partial = path.with_suffix(f".tmp{os.getpid()}")
    partial.write_text(text)
    partial.chmod(0o644)
    partial.replace(path)
    return path


def remove_local_slice(local_dir: Path, node: str, job_id: str) -> bool:
    """Delete the node's slice of a job; whether there was one."""
    path = local_slice_path(local_dir, node, job_id)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
        return True
    return False


def fake_probe_file(state_dir: Path, node: str) -> Path:
    """The file that gives ``node`` fake GPUs (tests, demos: no NVML there)."""
    _check_name(node)
    return state_dir / "fake-probe" / f"{node}.env"


def _check_name(node: str) -> None:
    if not node or "/" in node or node.startswith("."):
        raise SliceError(f"bad node name {node!r}")


def node_order(slices: Mapping[str, HostSlice]) -> Sequence[str]:
    """Nodes in rank order."""
    return sorted(slices, key=lambda n: slices[n].node_rank)
