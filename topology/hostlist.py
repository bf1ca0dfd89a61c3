"""Slurm hostlist expressions: compress host names to ``h[0001-0032,0040]`` and expand them.

The rules follow Slurm's hostlist parser, so whatever :func:`compress_hostlist` writes, Slurm
reads back as the same set of names:

- A name splits into a prefix and its trailing decimal digits (``rack1-n007`` is ``rack1-n``
  + ``007``). Names with the same prefix share one bracket; names without a numeric suffix (or
  with an empty prefix, or a suffix longer than :data:`MAX_SUFFIX_DIGITS`) are written as is.
- A range ``lo-hi`` is printed with the width of ``lo`` and expands by zero-padding every
  number to that width, so ``h[08-10]`` is ``h08 h09 h10`` and ``h[8-10]`` is ``h8 h9 h10``.
  Names whose padding would not survive (``h1`` and ``h01`` are different hosts) go in
  separate ranges of the same bracket: ``h[1,01]``.
- No range holds more than :data:`MAX_RANGE_HOSTS` names (Slurm rejects larger ranges).

Groups appear in the order of their first name; inside a bracket, ranges are sorted by value.
Duplicates are dropped.

Must not import anything outside the standard library and :mod:`topology.errors`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from topology.errors import TopologyError

MAX_SUFFIX_DIGITS = 18
"""Longest numeric suffix treated as a number (Slurm parses suffixes with ``strtoul``)."""
MAX_RANGE_HOSTS = 64 * 1024
"""Largest range Slurm's hostlist parser accepts."""
FORBIDDEN = frozenset(",[]")
"""Characters a host name may not contain (they are hostlist syntax)."""

INVALID_HOSTLIST = "invalid_hostlist"


@dataclass(slots=True)
class _Range:
    lo: int
    hi: int
    width: int

    def render(self) -> str:
        lo = str(self.lo).zfill(self.width)
        if self.hi == self.lo:
            return lo
        return f"{lo}-{str(self.hi).zfill(self.width)}"


def split_name(name: str) -> tuple[str, str]:
    """``(prefix, digits)`` of a host name; ``digits`` is empty when it has no usable suffix."""
    end = len(name)
    start = end
    while start > 0 and name[start - 1].isascii() and name[start - 1].isdigit():
        start -= 1
    if start in (end, 0) or end - start > MAX_SUFFIX_DIGITS:
        return name, ""
    return name[:start], name[start:]


def compress_hostlist(names: Iterable[str]) -> str:
    """The shortest-form Slurm hostlist of ``names`` (see the module docstring).

    Args:
        names: host (or switch) names, in any order, duplicates allowed.

    Returns:
        A comma-separated hostlist expression; ``""`` for no names.

    Raises:
        TopologyError: ``invalid_hostlist`` for an empty name or one containing ``,``, ``[``
            or ``]``.
    """
    groups: dict[str, set[tuple[int, str]] | None] = {}
    for name in names:
        if not name or FORBIDDEN.intersection(name):
            raise TopologyError(
                f"{name!r} cannot appear in a hostlist (empty, or contains one of ',[]')",
                reason=INVALID_HOSTLIST,
            )
        prefix, digits = split_name(name)
        if not digits:
            groups.setdefault(name, None)
            continue
        key = f"[{prefix}"  # cannot collide with a plain name: names contain no '['
        members = groups.get(key)
        if members is None:
            members = groups[key] = set()
        members.add((int(digits), digits))
    parts: list[str] = []
    for key, members in groups.items():
        if members is None:
            parts.append(key)
            continue
        prefix = key[1:]
        ranges = _ranges(members)
        if len(ranges) == 1 and ranges[0].lo == ranges[0].hi:
            parts.append(prefix + ranges[0].render())
        else:
            parts.append(f"{prefix}[{','.join(r.render() for r in ranges)}]")
    return ",".join(parts)


def _ranges(members: set[tuple[int, str]]) -> list[_Range]:
    """Greedy ranges over ``(value, digits)`` pairs, joining only padding-preserving runs."""
    ranges: list[_Range] = []
    open_at: dict[int, list[_Range]] = {}
    for value, digits in sorted(members, key=lambda m: (m[0], len(m[1]))):
        extended = None
        for candidate in open_at.get(value, ()):
            count = candidate.hi - candidate.lo + 1
            if count < MAX_RANGE_HOSTS and str(value).zfill(candidate.width) == digits:
                extended = candidate
                break
        if extended is None:
            extended = _Range(value, value, len(digits))
            ranges.append(extended)
        else:
            open_at[value].remove(extended)
            extended.hi = value
        open_at.setdefault(value + 1, []).append(extended)
    ranges.sort(key=lambda r: (r.lo, r.width))
    return ranges


def expand_hostlist(expression: str) -> list[str]:
    """The names of a hostlist expression, in the order written.

    Understands what :func:`compress_hostlist` writes and the common Slurm forms:
    comma-separated items, each a plain name or ``prefix[ranges]suffix`` with one bracket.

    Raises:
        TopologyError: ``invalid_hostlist`` for unbalanced brackets, empty items or ranges,
            or a range whose end is below its start.
    """
    out: list[str] = []
    for item in _items(expression):
        if "[" not in item and "]" not in item:
            out.append(item)
            continue
        open_at = item.find("[")
        close_at = item.find("]")
        if (
            open_at < 0
            or close_at < open_at
            or "[" in item[open_at + 1 :]
            or "]" in item[close_at + 1 :]
        ):
            raise TopologyError(f"malformed hostlist item {item!r}", reason=INVALID_HOSTLIST)
        prefix, body, suffix = item[:open_at], item[open_at + 1 : close_at], item[close_at + 1 :]
        for part in body.split(","):
            out.extend(f"{prefix}{number}{suffix}" for number in _expand_range(part, item))
    return out


def _items(expression: str) -> list[str]:
    """Split at commas outside brackets."""
    items: list[str] = []
    depth = 0
    current: list[str] = []
    for ch in expression.strip():
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise TopologyError(f"unbalanced ']' in {expression!r}", reason=INVALID_HOSTLIST)
        if ch == "," and depth == 0:
            items.append("".join(current))
            current = []
        else:
            current.append(ch)
    if depth:
        raise TopologyError(f"unbalanced '[' in {expression!r}", reason=INVALID_HOSTLIST)
    items.append("".join(current))
    if items == [""]:
        return []
    if any(not item for item in items):
        raise TopologyError(f"empty item in hostlist {expression!r}", reason=INVALID_HOSTLIST)
    return items


def _expand_range(part: str, item: str) -> list[str]:
    lo_text, dash, hi_text = part.partition("-")
    if not _is_number(lo_text) or (dash and not _is_number(hi_text)):
        raise TopologyError(f"bad range {part!r} in {item!r}", reason=INVALID_HOSTLIST)
    if not dash:
        return [lo_text]
    lo, hi = int(lo_text), int(hi_text)
    if hi < lo:
        raise TopologyError(f"range {part!r} in {item!r} runs backwards", reason=INVALID_HOSTLIST)
    if hi - lo >= MAX_RANGE_HOSTS:
        raise TopologyError(
            f"range {part!r} in {item!r} holds more than {MAX_RANGE_HOSTS} names",
            reason=INVALID_HOSTLIST,
        )
    width = len(lo_text)
    return [str(n).zfill(width) for n in range(lo, hi + 1)]


def _is_number(text: str) -> bool:
    return bool(text) and text.isascii() and text.isdigit()
