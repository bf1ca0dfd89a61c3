"""Documented limits on everything a client or an agent may send, and the checks that hold
them at the edge (README "Limits").

Every field a request carries has a bound here, checked before anything changes, failing with
the stable reason ``field_too_large`` (:class:`FieldTooLargeError`) or, for text that cannot
travel (NUL bytes, lone surrogates), ``invalid_text`` (:class:`InvalidTextError`). The bounds
are sized together so that a job that passes them always produces messages that fit: its
``StartRanks`` stays far below the agent's receive limit, and one job's wire form fits one
response (``tests/test_limits.py`` builds the largest job these limits allow and checks both).

Error messages never quote a bad value in full: :func:`clip` shortens it, so an error about a
100 KB id is a short line rather than a 100 KB status the transport may refuse.

Must not import ``scheduler.core``, ``scheduler.store``, grpc or the generated protos; it does
no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from firsthop.reasons import ErrorReason
from topology.errors import InvalidInputError

KIB: Final = 1024
MIB: Final = 1024 * KIB

# ---------------------------------------------------------------- job spec
MAX_NAME_CHARS: Final = 128
"""A job's ``name``, a queue's name."""
MAX_GPUS: Final = 32_768
"""A job's ``gpus``: its rank table (one host name per rank) must fit one response with host
names of up to :data:`MAX_HOST_NAME_CHARS` characters (65,536 ranks of such hosts do not)."""
MAX_HOST_NAME_CHARS: Final = 64
MAX_COMMAND_ARGS: Final = 1_024
MAX_COMMAND_BYTES: Final = 128 * KIB
"""All of ``command``'s arguments together, UTF-8 (Linux's limit on one argument)."""
MAX_ENV_VARS: Final = 1_024
MAX_ENV_KEY_BYTES: Final = 256
MAX_ENV_BYTES: Final = 256 * KIB
"""All of ``env``'s keys and values together, UTF-8."""
MAX_PATH_BYTES: Final = 4 * KIB
"""``checkpoint.dir``."""
MAX_SHORT_TEXT_CHARS: Final = 128
"""Other short words in a spec (tier names, order strings...)."""
MAX_INT: Final = 2**31 - 1
"""Every integer in a spec (``priority`` may be as low as ``-MAX_INT``)."""
MAX_SPEC_BYTES: Final = 1 * MIB
"""A job spec file."""
MAX_SPEC_DEPTH: Final = 16
"""Nesting of mappings and lists in a job spec."""
MAX_SPEC_ITEMS: Final = 20_000
"""Scalars, mappings and lists in a job spec, all together (YAML aliases count each time)."""

# ---------------------------------------------------------------- other request fields
MAX_ID_CHARS: Final = 128
"""Job ids, submission ids, node (host) names, session ids."""
MAX_USER_CHARS: Final = 128
MAX_REASON_CHARS: Final = 1_024
"""An operator's or user's reason (cancel, drain, resume)."""
MAX_LABELS: Final = 64
MAX_LABEL_KEY_CHARS: Final = 63
MAX_LABEL_VALUE_CHARS: Final = 256
MAX_AGENT_MESSAGE_CHARS: Final = 4 * KIB
"""Free text an agent reports (a rank's start failure, a health summary)."""

# ---------------------------------------------------------------- responses and messages
MAX_LIST_RESPONSE_BYTES: Final = 1 * MIB
"""A list response holds at most this much (and at least one item): the rest is on the next
page."""
MAX_MESSAGE_BYTES: Final = 4 * MIB
"""gRPC's default receive limit, which every firsthop client, server and agent keeps."""
MAX_ECHO_CHARS: Final = 80
"""How much of a bad value an error message quotes."""
MAX_ERROR_CHARS: Final = 1_024
"""An error's whole message on the wire."""


class FieldTooLargeError(InvalidInputError):
    """A field over its documented limit."""

    default_reason = ErrorReason.FIELD_TOO_LARGE


class InvalidTextError(InvalidInputError):
    """Text that cannot travel: a NUL byte or a lone surrogate."""

    default_reason = ErrorReason.INVALID_TEXT


def clip(value: object, limit: int = MAX_ECHO_CHARS) -> str:
    """``repr(value)`` cut to about ``limit`` characters, saying how long it was."""
    text = repr(value)
    if len(text) <= limit:
        return text
    size = f"{len(value)} chars" if isinstance(value, str | bytes) else f"{len(text)} chars"
    return f"{text[:limit]}... ({size})"


def clip_message(message: str, limit: int = MAX_ERROR_CHARS) -> str:
    """An error message cut to ``limit`` characters."""
    return message if len(message) <= limit else f"{message[: limit - 3]}..."


def utf8_size(text: str) -> int:
    """Bytes of ``text`` in UTF-8 (its size on the wire); :class:`InvalidTextError` when it
    cannot be encoded."""
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidTextError(
            f"text {clip(text)} holds a lone surrogate (not valid Unicode)"
        ) from None


def check_text(field: str, value: str, max_chars: int, *, allow_empty: bool = True) -> str:
    """``value`` if it is travelable text of at most ``max_chars`` characters."""
    if len(value) > max_chars:
        raise FieldTooLargeError(
            f"{field} is {len(value)} characters long; the limit is {max_chars}"
        )
    if "\x00" in value:
        raise InvalidTextError(f"{field} holds a NUL byte")
    utf8_size(value)
    if not allow_empty and not value:
        raise InvalidInputError(f"{field} must not be empty", reason=ErrorReason.INVALID_INPUT)
    return value


def check_id(field: str, value: str) -> str:
    """An id (job, submission, node): at most :data:`MAX_ID_CHARS` characters."""
    return check_text(field, value, MAX_ID_CHARS)


def check_reason(value: str) -> str:
    """A free-text reason: at most :data:`MAX_REASON_CHARS` characters."""
    return check_text("reason", value, MAX_REASON_CHARS)


def check_user(value: str) -> str:
    """A user name: at most :data:`MAX_USER_CHARS` characters."""
    return check_text("user", value, MAX_USER_CHARS)


def check_labels(labels: Mapping[str, str]) -> Mapping[str, str]:
    """Queue labels: at most :data:`MAX_LABELS`, keys and values bounded."""
    if len(labels) > MAX_LABELS:
        raise FieldTooLargeError(f"{len(labels)} labels; the limit is {MAX_LABELS}")
    for key, value in labels.items():
        check_text("label key", key, MAX_LABEL_KEY_CHARS, allow_empty=False)
        check_text(f"label {clip(key)}", value, MAX_LABEL_VALUE_CHARS)
    return labels


def require_command(command: tuple[str, ...]) -> tuple[str, ...]:
    """A submitted job's argv: it must name a program (a spec without one is only good for a
    placement dry run)."""
    if not command or not command[0]:
        raise InvalidInputError(
            "command: must name a program (an argv list whose first word is not empty)",
            reason=ErrorReason.INVALID_JOB_SPEC,
        )
    return command


def check_command(command: tuple[str, ...]) -> tuple[str, ...]:
    """A job's argv: bounded, no NUL in any argument."""
    if len(command) > MAX_COMMAND_ARGS:
        raise FieldTooLargeError(
            f"command has {len(command)} arguments; the limit is {MAX_COMMAND_ARGS}"
        )
    total = 0
    for i, arg in enumerate(command):
        if "\x00" in arg:
            raise InvalidTextError(f"command[{i}] holds a NUL byte")
        total += utf8_size(arg)
    if total > MAX_COMMAND_BYTES:
        raise FieldTooLargeError(f"command is {total} bytes; the limit is {MAX_COMMAND_BYTES}")
    return command


def check_env(env: Mapping[str, str]) -> Mapping[str, str]:
    """A job's environment: bounded; keys non-empty without ``=`` or NUL; values without NUL."""
    if len(env) > MAX_ENV_VARS:
        raise FieldTooLargeError(f"env has {len(env)} variables; the limit is {MAX_ENV_VARS}")
    total = 0
    for key, value in env.items():
        if not key or "=" in key:
            raise InvalidInputError(
                f"env key {clip(key)} must be non-empty and hold no '='",
                reason=ErrorReason.INVALID_JOB_SPEC,
            )
        if "\x00" in key or "\x00" in value:
            raise InvalidTextError(f"env {clip(key)} holds a NUL byte")
        key_bytes = utf8_size(key)
        if key_bytes > MAX_ENV_KEY_BYTES:
            raise FieldTooLargeError(
                f"env key {clip(key)} is {key_bytes} bytes; the limit is {MAX_ENV_KEY_BYTES}"
            )
        total += key_bytes + utf8_size(value)
    if total > MAX_ENV_BYTES:
        raise FieldTooLargeError(f"env is {total} bytes; the limit is {MAX_ENV_BYTES}")
    return env


def check_spec_data(data: object, flags: frozenset[str] = frozenset()) -> None:
    """Bound the shape of parsed spec data before validation: nesting depth, item count,
    integer range, travelable strings, and ``true``/``false`` only under a key in ``flags``
    (so ``gpus: true`` is not read as 1). The typed checks come after, in the model.

    Every submission passes here, so the common case is kept cheap: the path of an item
    (``placement.model.layers``, for messages) is spelled out only for containers and when an
    item fails, and ASCII text without NUL, which always encodes, skips the UTF-8 check."""
    budget = MAX_SPEC_ITEMS
    # (item, depth, parent's path, key or index under the parent; None for the top level)
    stack: list[tuple[object, int, str, str | int | None]] = [(data, 0, "", None)]
    while stack:
        item, depth, parent, key = stack.pop()
        budget -= 1
        if budget < 0:
            raise FieldTooLargeError(f"the spec holds over {MAX_SPEC_ITEMS} items")
        if depth > MAX_SPEC_DEPTH:
            where = _spec_path(parent, key)
            raise FieldTooLargeError(f"{where}: nested deeper than {MAX_SPEC_DEPTH} levels")
        if type(item) is int:  # the most common leaf; exact types skip the ABC checks below
            if abs(item) > MAX_INT:
                raise InvalidInputError(
                    f"{_spec_path(parent, key)}: {clip(item)} is out of range (|n| <= {MAX_INT})",
                    reason=ErrorReason.INVALID_JOB_SPEC,
                )
        elif isinstance(item, str):
            if not item.isascii() or "\x00" in item:
                where = _spec_path(parent, key)
                if "\x00" in item:
                    raise InvalidTextError(f"{where}: holds a NUL byte")
                utf8_size(item)
        elif type(item) is dict or isinstance(item, Mapping):
            where = _spec_path(parent, key)
            for child_key, value in item.items():
                if not isinstance(child_key, str):
                    raise InvalidInputError(
                        f"{where or '(top level)'}: key {clip(child_key)} is not a string",
                        reason=ErrorReason.INVALID_JOB_SPEC,
                    )
                if (
                    len(child_key) > MAX_ENV_KEY_BYTES
                    or not child_key.isascii()
                    or "\x00" in child_key
                ):
                    check_text(f"key {clip(child_key)}", child_key, MAX_ENV_KEY_BYTES)
                stack.append((value, depth + 1, where, child_key))
        elif isinstance(item, list | tuple):
            where = _spec_path(parent, key)
            stack.extend((value, depth + 1, where, i) for i, value in enumerate(item))
        elif isinstance(item, bool):
            where = _spec_path(parent, key)
            if where.rpartition(".")[2] not in flags:
                raise InvalidInputError(
                    f"{where}: {str(item).lower()} is not a valid value here",
                    reason=ErrorReason.INVALID_JOB_SPEC,
                )
        elif isinstance(item, int) and abs(item) > MAX_INT:
            raise InvalidInputError(
                f"{_spec_path(parent, key)}: {clip(item)} is out of range (|n| <= {MAX_INT})",
                reason=ErrorReason.INVALID_JOB_SPEC,
            )


def _spec_path(parent: str, key: str | int | None) -> str:
    """The path of an item of a spec: ``a.b`` under a mapping, ``a[0]`` in a list."""
    if key is None:
        return parent
    if isinstance(key, int):
        return f"{parent}[{key}]"
    return f"{parent}.{key}" if parent else key
