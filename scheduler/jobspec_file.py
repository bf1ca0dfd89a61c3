"""Reading a job spec file: YAML, or JSON for a ``.json`` file, validated by
:func:`scheduler.jobspec.job_spec_from_data` (the model lives there; this is its file loading).

Errors are one line: :class:`~topology.errors.InvalidInputError` with reason
``unreadable_file`` (the file cannot be read), ``invalid_job_spec`` (not YAML/JSON, or not a
valid spec) or the stable reason of the rule broken, prefixed with the file name.

Must not import ``scheduler.core``, ``scheduler.store`` or the generated protos.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from firsthop.reasons import ErrorReason
from scheduler.jobspec import JobSpec, job_spec_from_data
from topology.errors import InvalidInputError


def load_job_spec(path: Path) -> JobSpec:
    """Read and validate a job spec file (``.json``, or YAML for anything else)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise InvalidInputError(f"cannot read {path}: {detail}", reason="unreadable_file") from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError, RecursionError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if isinstance(exc, RecursionError):
            first = "nested too deeply"
        raise InvalidInputError(
            f"{path}: not valid YAML/JSON: {first}", reason=ErrorReason.INVALID_JOB_SPEC
        ) from None
    return job_spec_from_data(data, source=str(path))
