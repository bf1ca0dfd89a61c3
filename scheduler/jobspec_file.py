"""Reading a job spec file: YAML, or JSON for a ``.json`` file, validated by
:func:`scheduler.jobspec.job_spec_from_data` (the model lives there; this is its file loading).

Errors are one line: :class:`~topology.errors.InvalidInputError` with reason
``unreadable_file`` (the file cannot be read), ``invalid_job_spec`` (not YAML/JSON, a key
given twice, or not a valid spec), ``field_too_large`` (a file over
:data:`scheduler.limits.MAX_SPEC_BYTES`, nesting too deep) or the stable reason of the rule
broken, prefixed with the file name. No spec, however malformed, ends in a traceback.

Must not import ``scheduler.core``, ``scheduler.store`` or the generated protos.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from firsthop.reasons import ErrorReason
from scheduler import limits
from scheduler.jobspec import JobSpec, job_spec_from_data
from topology.errors import InvalidInputError


class _DuplicateKeyError(ValueError):
    pass


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping."""


def _no_duplicates(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[object] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, str | int | float | bool) or key is None:
            if key in seen:
                line = key_node.start_mark.line + 1
                raise _DuplicateKeyError(f"key {limits.clip(key)} given twice (line {line})")
            seen.add(key)
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def _no_duplicate_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKeyError(f"key {limits.clip(key)} given twice")
        out[key] = value
    return out


def load_job_spec(path: Path) -> JobSpec:
    """Read and validate a job spec file (``.json``, or YAML for anything else)."""
    try:
        with path.open("rb") as file:
            raw = file.read(limits.MAX_SPEC_BYTES + 1)
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise InvalidInputError(f"cannot read {path}: {detail}", reason="unreadable_file") from None
    if len(raw) > limits.MAX_SPEC_BYTES:
        raise limits.FieldTooLargeError(
            f"{path}: over {limits.MAX_SPEC_BYTES} bytes; a job spec is smaller"
        )
    return job_spec_from_data(
        parse_spec_text(text, json_=path.suffix.lower() == ".json", source=str(path)),
        source=str(path),
    )


def parse_spec_text(text: str, *, json_: bool, source: str) -> Any:
    """The data of a spec's text (JSON or YAML), refusing duplicate keys; one-line errors."""
    try:
        if json_:
            return json.loads(text, object_pairs_hook=_no_duplicate_pairs)
        return yaml.load(text, Loader=_StrictLoader)
    except (json.JSONDecodeError, yaml.YAMLError, _DuplicateKeyError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if isinstance(exc, RecursionError):
            first = "nested too deeply"
        raise InvalidInputError(
            f"{source}: not valid YAML/JSON: {limits.clip_message(first, 200)}",
            reason=ErrorReason.INVALID_JOB_SPEC,
        ) from None
    except RecursionError:
        raise limits.FieldTooLargeError(
            f"{source}: nested deeper than {limits.MAX_SPEC_DEPTH} levels"
        ) from None
