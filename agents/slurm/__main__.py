"""``python -m agents.slurm``: the same as ``firsthop-slurm``. Must not import ``scheduler``."""

from agents.slurm.cli import entry

entry()
