"""Import the generic hosts CSV (DESIGN.md, "Interchange formats") into a topology spec.

Format: a header row; the first column ``host``; then optionally ``gpus`` (default 8); then one
column per switch tier from the nearest (leaf/ToR) to the farthest (core). The header names
become the tier names::

    host,gpus,leaf,spine
    h0001,8,l01,s1
    h0002,8,l01,s1

**Switch identity.** A switch is identified by its whole path, so the same leaf name under two
spines is two leaves. Each switch gets the name of its path from the farthest tier down,
joined with ``/`` (``G6/P10/S14``): unique by construction (cells may not contain ``/``) and
readable. The Slurm export turns ``/`` into ``_``.

**Order.** Switches keep the order of their first appearance, hosts their CSV order within a
switch, and rows are grouped by switch path, so hosts end up in depth-first order whatever the
row order.

**Tier attributes** (per-GPU bandwidth, latency, oversubscription), by position:

- the nearest tier: :data:`~topology.tiers.LEAF_400G` (non-blocking leaf);
- with two tiers, the top one: :data:`~topology.tiers.POD_SPINE` (non-blocking inside, 7:1
  above, the figure for the layer above a pod);
- with three or more, the top one is :data:`~topology.tiers.CORE`, the one below it
  :data:`~topology.tiers.POD_SPINE`, and any between are non-blocking spines
  (:data:`~topology.tiers.POD_SPINE` at 1:1).

Override any of them per tier name with ``tier_overrides``, e.g.
``{"PSW": {"oversubscription": 4.0}}``.

**Errors** are one line each, :class:`~topology.errors.TopologyError`, reason
``invalid_csv`` unless stated: empty file, a first column other than ``host``, a bad header
(empty, invalid or reserved tier name, a tier named twice), a wrong column count, an empty
host or switch cell, a ``/`` in a switch cell, ``gpus`` that is not a positive integer, a
host listed twice under one leaf (``duplicate_name``) or under two leaves
(``host_multiple_parents``); rows carry their line number. Structural checks then run in
:meth:`topology.model.Topology.from_spec`.

Must not import grpc, generated protos, databases, subprocess, ``placement``, ``scheduler`` or
``agents``.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

from pydantic import ValidationError

from topology.errors import TopologyError
from topology.spec import HostEntry, HostSpec, SwitchSpec, TopologySpec
from topology.tiers import CORE, LEAF_400G, POD_SPINE, RESERVED_TIER_NAMES, TierSpec

HOST_COLUMN = "host"
GPUS_COLUMN = "gpus"
DEFAULT_GPUS = 8
PATH_SEPARATOR = "/"

INVALID_CSV = "invalid_csv"

#: A non-blocking spine tier (middle tiers of deep fabrics).
SPINE_NONBLOCKING = POD_SPINE.model_copy(update={"oversubscription": 1.0})


class TierOverride(TypedDict, total=False):
    """Tier fields a caller may override for one CSV tier (see :class:`TierSpec`)."""

    bandwidth_gbytes_per_s: float
    latency_us: float
    oversubscription: float
    nvlink: bool
    rails: int
    optional: bool


def import_hosts_csv(
    path: Path,
    *,
    name: str | None = None,
    tier_overrides: Mapping[str, TierOverride] | None = None,
    default_gpus: int = DEFAULT_GPUS,
) -> TopologySpec:
    """Read a hosts CSV file and return its topology spec.

    Args:
        path: the CSV file (UTF-8, a leading byte-order mark is ignored).
        name: topology name; defaults to the file's stem.
        tier_overrides: per tier name, fields that replace the positional defaults.
        default_gpus: GPUs of every host when the file has no ``gpus`` column.

    Raises:
        TopologyError: ``unreadable_file`` when the file cannot be read; see the module
            docstring for the others.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise TopologyError(f"cannot read {path}: {detail}", reason="unreadable_file") from None
    return parse_hosts_csv(
        text,
        name=name or path.stem,
        source=str(path),
        tier_overrides=tier_overrides,
        default_gpus=default_gpus,
    )


def parse_hosts_csv(
    text: str,
    *,
    name: str,
    source: str = "hosts CSV",
    tier_overrides: Mapping[str, TierOverride] | None = None,
    default_gpus: int = DEFAULT_GPUS,
) -> TopologySpec:
    """Parse hosts CSV text and return its topology spec.

    Args:
        text: the CSV text.
        name: the topology name.
        source: what error messages call the input (a path).
        tier_overrides: per tier name, fields that replace the positional defaults.
        default_gpus: GPUs of every host when there is no ``gpus`` column.

    Raises:
        TopologyError: see the module docstring.
    """
    if isinstance(default_gpus, bool) or not isinstance(default_gpus, int) or default_gpus < 1:
        raise TopologyError(
            f"default_gpus must be a positive integer, got {default_gpus!r}",
            reason="invalid_input",
        )
    if not name.strip():
        raise TopologyError("the topology name must not be empty", reason="invalid_input")
    rows = _rows(text, source)
    header_line, header = next(rows, (0, []))
    if not header:
        raise TopologyError(f"{source}: empty file (expected a header row)", reason=INVALID_CSV)
    has_gpus, tier_names = _parse_header(header, source, header_line)
    tiers = _tier_specs(tier_names, tier_overrides or {}, source)
    tree = _Tree()
    seen: dict[str, tuple[tuple[str, ...], int]] = {}
    width = len(header)
    first_tier_column = 2 if has_gpus else 1
    for line, row in rows:
        if len(row) != width:
            raise TopologyError(
                f"{source}:{line}: expected {width} columns ({','.join(header)}), got {len(row)}",
                reason=INVALID_CSV,
            )
        host = row[0]
        if not host:
            raise TopologyError(f"{source}:{line}: empty host name", reason=INVALID_CSV)
        if any(ch.isspace() for ch in host):
            raise TopologyError(
                f"{source}:{line}: host name {host!r} contains whitespace", reason=INVALID_CSV
            )
        gpus = _parse_gpus(row[1], source, line) if has_gpus else default_gpus
        path = _switch_path(row[first_tier_column:], tier_names, source, line)
        previous = seen.get(host)
        if previous is not None:
            where, first_line = previous
            if where == path:
                raise TopologyError(
                    f"{source}:{line}: host {host!r} listed twice (first on line {first_line})",
                    reason="duplicate_name",
                )
            raise TopologyError(
                f"{source}:{line}: host {host!r} is under two different "
                f"{tier_names[0]} switches: {_name(where)!r} (line {first_line}) and "
                f"{_name(path)!r}",
                reason="host_multiple_parents",
            )
        seen[host] = (path, line)
        tree.add(path, host, gpus)
    if not seen:
        raise TopologyError(f"{source}: no host rows after the header", reason=INVALID_CSV)
    return _build_spec(name, tiers, tree)


# ---------------------------------------------------------------- parsing


def _rows(text: str, source: str) -> Iterator[tuple[int, list[str]]]:
    """Non-blank CSV records with their (last) line number, cells stripped."""
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff")), strict=True)
    try:
        for record in reader:
            cells = [cell.strip() for cell in record]
            if any(cells):
                yield reader.line_num, cells
    except csv.Error as exc:
        raise TopologyError(
            f"{source}:{reader.line_num}: malformed CSV: {exc}", reason=INVALID_CSV
        ) from None


def _parse_header(header: Sequence[str], source: str, line: int) -> tuple[bool, list[str]]:
    """Whether a ``gpus`` column is present, and the tier names nearest first."""
    if header[0].lower() != HOST_COLUMN:
        raise TopologyError(
            f"{source}:{line}: the first column must be {HOST_COLUMN!r}, got {header[0]!r}",
            reason=INVALID_CSV,
        )
    has_gpus = len(header) > 1 and header[1].lower() == GPUS_COLUMN
    tier_names = list(header[2:] if has_gpus else header[1:])
    if not tier_names:
        raise TopologyError(
            f"{source}:{line}: no switch tier columns after {HOST_COLUMN!r}"
            f"{' and ' + repr(GPUS_COLUMN) if has_gpus else ''}",
            reason=INVALID_CSV,
        )
    seen: set[str] = set()
    for tier in tier_names:
        if not tier:
            raise TopologyError(f"{source}:{line}: empty column name", reason=INVALID_CSV)
        lowered = tier.lower()
        if lowered in RESERVED_TIER_NAMES or lowered == GPUS_COLUMN:
            raise TopologyError(
                f"{source}:{line}: {tier!r} cannot be a tier name (reserved)", reason=INVALID_CSV
            )
        if tier in seen:
            raise TopologyError(
                f"{source}:{line}: tier {tier!r} appears twice in the header", reason=INVALID_CSV
            )
        seen.add(tier)
    return has_gpus, tier_names


def _parse_gpus(cell: str, source: str, line: int) -> int:
    if not (cell.isascii() and cell.isdigit()) or int(cell) < 1:
        raise TopologyError(
            f"{source}:{line}: gpus must be a positive integer, got {cell!r}", reason=INVALID_CSV
        )
    return int(cell)


def _switch_path(
    cells: Sequence[str], tier_names: Sequence[str], source: str, line: int
) -> tuple[str, ...]:
    """The switch path farthest first, from cells given nearest first."""
    for tier, cell in zip(tier_names, cells, strict=True):
        if not cell:
            raise TopologyError(f"{source}:{line}: empty {tier} cell", reason=INVALID_CSV)
        if PATH_SEPARATOR in cell:
            raise TopologyError(
                f"{source}:{line}: {tier} {cell!r} contains {PATH_SEPARATOR!r}, which separates "
                "switch path components",
                reason=INVALID_CSV,
            )
    return tuple(reversed(cells))


def _name(path: Sequence[str]) -> str:
    return PATH_SEPARATOR.join(path)


# ---------------------------------------------------------------- tiers


def default_tiers(tier_names: Sequence[str]) -> list[TierSpec]:
    """Positional default tier specs (see the module docstring), renamed to ``tier_names``."""
    count = len(tier_names)
    out: list[TierSpec] = []
    for i, tier_name in enumerate(tier_names):
        if i == 0:
            base = LEAF_400G
        elif i == count - 1 and count >= 3:
            base = CORE
        elif i == count - 1 or (i == count - 2 and count >= 3):
            base = POD_SPINE
        else:
            base = SPINE_NONBLOCKING
        out.append(TierSpec.model_validate({**base.model_dump(), "name": tier_name}))
    return out


def _tier_specs(
    tier_names: Sequence[str], overrides: Mapping[str, TierOverride], source: str
) -> list[TierSpec]:
    unknown = sorted(set(overrides) - set(tier_names))
    if unknown:
        raise TopologyError(
            f"tier_overrides names unknown tier(s) {', '.join(map(repr, unknown))} "
            f"(tiers: {', '.join(tier_names)})",
            reason="unknown_tier",
        )
    try:
        defaults = default_tiers(tier_names)
    except ValidationError as exc:
        raise TopologyError(
            f"{source}: invalid tier name in header: {exc.errors()[0]['msg']}",
            reason=INVALID_CSV,
        ) from None
    out = []
    for tier in defaults:
        update = overrides.get(tier.name)
        if not update:
            out.append(tier)
            continue
        if "name" in update:
            raise TopologyError(
                f"tier_overrides[{tier.name!r}] may not rename the tier", reason="invalid_input"
            )
        try:
            out.append(TierSpec.model_validate({**tier.model_dump(), **update}))
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(part) for part in err["loc"])
            raise TopologyError(
                f"tier_overrides[{tier.name!r}]: {loc}: {err['msg']}", reason="invalid_input"
            ) from None
    return out


# ---------------------------------------------------------------- tree


@dataclass
class _Node:
    children: dict[str, _Node] = field(default_factory=dict)
    hosts: list[tuple[str, int]] = field(default_factory=list)


class _Tree:
    """Switch paths in first-appearance order, hosts in CSV order under their leaf."""

    def __init__(self) -> None:
        self.root = _Node()

    def add(self, path: Sequence[str], host: str, gpus: int) -> None:
        node = self.root
        for part in path:
            child = node.children.get(part)
            if child is None:
                child = node.children[part] = _Node()
            node = child
        node.hosts.append((host, gpus))

    def host_gpus(self) -> Iterator[int]:
        stack = [self.root]
        while stack:
            node = stack.pop()
            yield from (gpus for _, gpus in node.hosts)
            stack.extend(node.children.values())


def _build_spec(name: str, tiers: Sequence[TierSpec], tree: _Tree) -> TopologySpec:
    counts = Counter(tree.host_gpus())
    default = min(counts, key=lambda gpus: (-counts[gpus], gpus))
    switches: list[SwitchSpec] = []
    depth = len(tiers)

    def visit(node: _Node, path: tuple[str, ...], parent: str | None) -> None:
        for part, child in node.children.items():
            child_path = (*path, part)
            switch = _name(child_path)
            level = depth - len(path)
            hosts: tuple[HostEntry, ...] = tuple(
                host if gpus == default else HostSpec(name=host, gpus=gpus)
                for host, gpus in child.hosts
            )
            switches.append(
                SwitchSpec(name=switch, tier=tiers[level - 1].name, parent=parent, hosts=hosts)
            )
            visit(child, child_path, switch)

    visit(tree.root, (), None)
    return TopologySpec(
        name=name, gpus_per_host=default, tiers=tuple(tiers), switches=tuple(switches)
    )
