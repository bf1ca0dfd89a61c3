"""The slice file format: ``key=value`` lines, written and read with no imports at all.

A slice is one node's part of a job's rank table (see :mod:`agents.slurm.state` for where
slices live and :class:`agents.slurm.state.HostSlice` for the typed view). The TaskProlog
reads one per task, so this module imports nothing: not even ``typing``, ``pathlib`` or
``dataclasses``, which cost more than the rest of the TaskProlog on a busy host.

Keys, in file order: ``job_id``, ``world_size``, ``nnodes``, ``node_rank``,
``gpus_per_node``, ``master_addr``, ``master_port``, ``ranks`` (the rank on each local GPU,
comma-separated).

Must not import anything (standard library included).
"""

SLICE_KEYS = (
    "job_id",
    "world_size",
    "nnodes",
    "node_rank",
    "gpus_per_node",
    "master_addr",
    "master_port",
    "ranks",
)
INT_KEYS = ("world_size", "nnodes", "node_rank", "gpus_per_node", "master_port")


def format_slice(values: dict[str, str]) -> str:
    """The file text of a slice given every key's value as text."""
    return "".join(f"{key}={values[key]}\n" for key in SLICE_KEYS)


def parse_slice(text: str) -> dict[str, str]:
    """The slice's values as text, every key present and numbers checked.

    Raises:
        ValueError: a key is missing or a number does not parse.
    """
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    missing = [key for key in SLICE_KEYS if key not in values]
    if missing:
        raise ValueError(f"slice lacks {', '.join(missing)}")
    for key in INT_KEYS:
        int(values[key])
    for rank in values["ranks"].split(","):
        if rank:
            int(rank)
    return values
