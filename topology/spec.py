"""The topology file format (YAML or JSON), validated by pydantic.

A file names the switch tiers nearest first, then lists switches with their parent and the
hosts cabled to them::

    format: firsthop.topology/v1
    name: lab
    gpus_per_host: 8
    host_fabric: {name: nvlink, bandwidth_gbytes_per_s: 450.0, latency_us: 0.47, nvlink: true}
    tiers:
      - {name: leaf, bandwidth_gbytes_per_s: 50.0, latency_us: 2.7}
      - {name: pod, bandwidth_gbytes_per_s: 50.0, latency_us: 4.0, oversubscription: 7.0}
    switches:
      - {name: pod0, tier: pod}
      - {name: pod0-leaf0, tier: leaf, parent: pod0, hosts: [h0001, h0002]}
      - {name: pod0-leaf1, tier: leaf, parent: pod0, hosts: [h0003, {name: h0004, gpus: 4}]}

This module checks the schema only (types, ``extra=forbid``, positive GPU counts). The
structural rules (cycles, duplicate names, depths) live in :mod:`topology.model`.
Reading and writing files is in :func:`load_spec` / :func:`dump_spec`; ``dump`` then ``load``
returns an equal spec.

Must not import grpc, generated protos, databases or subprocess.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError

from topology.errors import TopologyError
from topology.tiers import NVLINK_H100, TierSpec

FORMAT: Final = "firsthop.topology/v1"

PositiveInt = Annotated[int, Field(ge=1)]


class HostSpec(BaseModel):
    """A host whose GPU count differs from the file's ``gpus_per_host``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(min_length=1)]
    gpus: PositiveInt


def _host_entry_kind(value: object) -> str:
    return "name" if isinstance(value, str) else "spec"


HostEntry = Annotated[
    Annotated[Annotated[str, Field(min_length=1)], Tag("name")] | Annotated[HostSpec, Tag("spec")],
    Discriminator(_host_entry_kind),
]
"""A host: its name (with the file's ``gpus_per_host``) or a :class:`HostSpec`."""


class SwitchSpec(BaseModel):
    """A switch (leaf, rail group, spine, pod, core...) of some tier."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(min_length=1)]
    tier: str
    parent: str | None = None
    hosts: tuple[HostEntry, ...] = ()


class TopologySpec(BaseModel):
    """The whole file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["firsthop.topology/v1"] = "firsthop.topology/v1"
    name: Annotated[str, Field(min_length=1)]
    gpus_per_host: PositiveInt = 8
    host_fabric: TierSpec = NVLINK_H100
    tiers: tuple[TierSpec, ...]
    switches: tuple[SwitchSpec, ...] = ()
    hosts: tuple[HostEntry, ...] = ()
    """Hosts directly under the cluster root (only when every tier is optional)."""

    def host_gpus(self, entry: HostEntry) -> tuple[str, int]:
        """The (name, GPU count) of a host entry, applying the file's default."""
        if isinstance(entry, HostSpec):
            return entry.name, entry.gpus
        return entry, self.gpus_per_host


def spec_from_data(data: Any, *, source: str = "topology") -> TopologySpec:
    """Validate already-parsed data, turning pydantic errors into one clear line."""
    try:
        return TopologySpec.model_validate(data)
    except ValidationError as exc:
        raise TopologyError(f"{source}: {_first_error(exc)}") from None


def load_spec(path: Path) -> TopologySpec:
    """Read and validate a topology file (``.json``, or YAML for anything else)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TopologyError(
            f"cannot read {path}: {exc.strerror}", reason="unreadable_file"
        ) from None
    except UnicodeDecodeError as exc:
        raise TopologyError(
            f"{path}: not UTF-8 text (byte {exc.start})", reason="unreadable_file"
        ) from None
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            data = yaml.load(text, Loader=_LOADER)
    except (json.JSONDecodeError, yaml.YAMLError, RecursionError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if isinstance(exc, RecursionError):
            detail = "nested too deeply"
        raise TopologyError(f"{path}: not valid {_kind(path)}: {detail}") from None
    if not isinstance(data, dict):
        raise TopologyError(f"{path}: expected a mapping at the top level")
    return spec_from_data(data, source=str(path))


def spec_to_data(spec: TopologySpec) -> dict[str, Any]:
    """Plain data for writing: unset optional fields and empty host lists dropped."""
    data = spec.model_dump(mode="json", exclude_none=True)
    for switch in data["switches"]:
        if not switch["hosts"]:
            del switch["hosts"]
    if not data["hosts"]:
        del data["hosts"]
    return data


def dump_spec(spec: TopologySpec, path: Path) -> None:
    """Write ``spec`` as JSON (``.json``) or YAML (anything else)."""
    data = spec_to_data(spec)
    if path.suffix.lower() == ".json":
        text = json.dumps(data, indent=1) + "\n"
    else:
        text = yaml.dump(data, Dumper=_DUMPER, sort_keys=False, default_flow_style=None, width=100)
    path.write_text(text, encoding="utf-8")


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors()
    err = errors[0]
    loc = ".".join(str(part) for part in err["loc"])
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{loc}: {err['msg']}{more}"


def _kind(path: Path) -> str:
    return "JSON" if path.suffix.lower() == ".json" else "YAML"


_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_DUMPER: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
