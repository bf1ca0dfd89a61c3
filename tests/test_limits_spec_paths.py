"""``limits.check_spec_data`` against its first, straightforward version: the fast path (paths
spelled out only for containers and failures, the UTF-8 check only for non-ASCII text) must
accept and refuse exactly the same data, with the same error type, reason and message."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler import limits
from scheduler.jobspec import FLAG_KEYS
from scheduler.limits import (
    MAX_ENV_KEY_BYTES,
    MAX_INT,
    MAX_SPEC_DEPTH,
    MAX_SPEC_ITEMS,
    FieldTooLargeError,
    InvalidTextError,
    check_text,
    clip,
    utf8_size,
)
from topology.errors import FirsthopError, InvalidInputError


def reference_check_spec_data(data: object, flags: frozenset[str] = frozenset()) -> None:
    """The check as first written: every path built eagerly, every string encoded."""
    budget = MAX_SPEC_ITEMS
    stack: list[tuple[object, int, str]] = [(data, 0, "")]
    while stack:
        item, depth, where = stack.pop()
        budget -= 1
        if budget < 0:
            raise FieldTooLargeError(f"the spec holds over {MAX_SPEC_ITEMS} items")
        if depth > MAX_SPEC_DEPTH:
            raise FieldTooLargeError(f"{where}: nested deeper than {MAX_SPEC_DEPTH} levels")
        if isinstance(item, Mapping):
            for key, value in item.items():
                if not isinstance(key, str):
                    raise InvalidInputError(
                        f"{where or '(top level)'}: key {clip(key)} is not a string",
                        reason="invalid_job_spec",
                    )
                check_text(f"key {clip(key)}", key, MAX_ENV_KEY_BYTES)
                stack.append((value, depth + 1, f"{where}.{key}" if where else key))
        elif isinstance(item, list | tuple):
            stack.extend((value, depth + 1, f"{where}[{i}]") for i, value in enumerate(item))
        elif isinstance(item, str):
            if "\x00" in item:
                raise InvalidTextError(f"{where}: holds a NUL byte")
            utf8_size(item)
        elif isinstance(item, bool):
            if where.rpartition(".")[2] not in flags:
                raise InvalidInputError(
                    f"{where}: {str(item).lower()} is not a valid value here",
                    reason="invalid_job_spec",
                )
        elif isinstance(item, int) and abs(item) > MAX_INT:
            raise InvalidInputError(
                f"{where}: {clip(item)} is out of range (|n| <= {MAX_INT})",
                reason="invalid_job_spec",
            )


def _outcome(check: Any, data: object) -> tuple[str, str, str] | None:
    try:
        check(data, FLAG_KEYS)
    except FirsthopError as exc:
        return type(exc).__name__, str(exc.reason), exc.message
    return None


TEXT = st.one_of(
    st.sampled_from(["gpus", "recompute", "preemptible", "env", "a.recompute", "", "x" * 300]),
    st.text(max_size=8),
    st.text(alphabet=st.sampled_from("ab\x00é\ud800."), max_size=4),
)
LEAF = st.one_of(
    TEXT,
    st.booleans(),
    st.integers(min_value=-(2**33), max_value=2**33),
    st.floats(allow_nan=False),
    st.none(),
)
DATA = st.recursive(
    LEAF,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(TEXT, st.integers(0, 3)), children, max_size=4),
    ),
    max_leaves=20,
)


@settings(max_examples=600, deadline=None)
@given(DATA)
def test_same_verdict_as_the_reference(data: object) -> None:
    assert _outcome(limits.check_spec_data, data) == _outcome(reference_check_spec_data, data)


def _nested(depth: int) -> dict[str, Any]:
    data: dict[str, Any] = {"leaf": "x"}
    for i in range(depth):
        data = {f"k{i}": [data]}
    return data


@pytest.mark.parametrize(
    "data",
    [
        {"name": "ok", "gpus": 8, "command": ["python", "train.py"]},
        {"env": {"A": "caf\u00e9", "B": "\ud800"}},
        {"env": {"A": "x\x00"}},
        {"placement": {"model": {"recompute": True, "layers": True}}},
        {"command": ["a", ["b", [True]]]},
        {"k" * (MAX_ENV_KEY_BYTES + 1): 1},
        {"\u00e9" * 10: 1, "\ud800": 1},
        {"gpus": MAX_INT + 1},
        {"env": {"A": ["x"] * MAX_SPEC_ITEMS}},
        _nested(MAX_SPEC_DEPTH),
        _nested(MAX_SPEC_DEPTH + 2),
    ],
)
def test_edge_cases_as_the_reference(data: object) -> None:
    assert _outcome(limits.check_spec_data, data) == _outcome(reference_check_spec_data, data)


def test_failures_still_name_the_path() -> None:
    with pytest.raises(InvalidInputError, match=r"^placement\.model\.layers: true is not"):
        limits.check_spec_data({"placement": {"model": {"layers": True}}}, FLAG_KEYS)
    with pytest.raises(InvalidTextError, match=r"^command\[1\]: holds a NUL byte"):
        limits.check_spec_data({"command": ["a", "b\x00"]}, FLAG_KEYS)
