"""Bad input, measured: job spec and topology files, random and mutated.

Every file either loads or is refused with a :class:`~topology.errors.FirsthopError` carrying
a stable reason; nothing else escapes (no ``KeyError``, ``TypeError``, ``RecursionError``...).
Inputs: random YAML/JSON documents (nested mappings, lists, numbers at the edges, odd
strings), valid documents with one field replaced by such a value, and raw bytes (invalid
UTF-8, truncated YAML).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler.jobspec_file import load_job_spec
from tests.security.fuzz_builders import EXAMPLES, TALLY, write_report
from topology.errors import FirsthopError
from topology.generators import fat_tree
from topology.model import Topology
from topology.spec import dump_spec

FILES = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, -1, 2**31, 2**63, 10**18]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["", "../x", "a" * 300, "h0001", "leaf", "8"]),
)
documents = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6), st.dictionaries(st.text(max_size=12), inner, max_size=6)
    ),
    max_leaves=30,
)


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    yield
    write_report()


def _valid_job() -> dict[str, Any]:
    return {"name": "train", "gpus": 16, "command": ["python", "train.py"], "queue": "default"}


def _valid_topology(tmp: Path) -> dict[str, Any]:
    path = tmp / "valid.yaml"
    dump_spec(fat_tree(1, 2, 2, gpus_per_host=8), path)
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


def _load(kind: str, loader: Any, path: Path) -> None:
    try:
        loader(path)
    except FirsthopError as exc:
        reason = exc.reason
        TALLY.add(kind, "refused", reason)
        assert reason
        assert reason == reason.lower()
        return
    TALLY.add(kind, "loaded", "")


def _write(path: Path, document: Any, as_json: bool) -> Path:
    text = json.dumps(document, default=str) if as_json else yaml.safe_dump(document)
    path.write_text(text)
    return path


@FILES
@given(document=documents, as_json=st.booleans())
def test_random_job_spec_files(tmp_path: Path, document: Any, as_json: bool) -> None:
    path = _write(tmp_path / ("job.json" if as_json else "job.yaml"), document, as_json)
    _load("job_spec_file", load_job_spec, path)


@FILES
@given(
    field=st.sampled_from([*sorted(_valid_job()), "env", "topology", "priority"]), value=documents
)
def test_job_specs_with_one_bad_field(tmp_path: Path, field: str, value: Any) -> None:
    document = {**_valid_job(), field: value}
    _load("job_spec_field", load_job_spec, _write(tmp_path / "job.yaml", document, False))


@FILES
@given(document=documents, as_json=st.booleans())
def test_random_topology_files(tmp_path: Path, document: Any, as_json: bool) -> None:
    path = _write(tmp_path / ("t.json" if as_json else "t.yaml"), document, as_json)
    _load("topology_file", Topology.load, path)


@FILES
@given(data=st.data())
def test_topology_files_with_one_bad_value(tmp_path: Path, data: st.DataObject) -> None:
    document = _valid_topology(tmp_path)
    keys = sorted(document)
    key = data.draw(st.sampled_from(keys))
    target: Any = document
    # Walk into the chosen key a little, then replace what is there.
    while isinstance(target.get(key) if isinstance(target, dict) else None, dict | list) and (
        data.draw(st.booleans())
    ):
        inner = target[key]
        if isinstance(inner, dict) and inner:
            target, key = inner, data.draw(st.sampled_from(sorted(inner)))
        elif isinstance(inner, list) and inner and isinstance(inner[0], dict):
            target = inner[data.draw(st.integers(0, len(inner) - 1))]
            if not target:
                break
            key = data.draw(st.sampled_from(sorted(target)))
        else:
            break
    target[key] = data.draw(documents)
    _load("topology_field", Topology.load, _write(tmp_path / "t.yaml", document, False))


@FILES
@given(raw=st.binary(max_size=400), kind=st.sampled_from(["job", "topology"]))
def test_raw_bytes_as_files(tmp_path: Path, raw: bytes, kind: str) -> None:
    path = tmp_path / f"{kind}.yaml"
    path.write_bytes(raw)
    loader = load_job_spec if kind == "job" else Topology.load
    _load(f"{kind}_raw_bytes", loader, path)


@pytest.mark.parametrize("suffix", ["yaml", "json"])
@pytest.mark.parametrize("text", ["a: &x [*x]", "{" * 5000, "[" * 100_000, "- " * 3000 + "x"])
@pytest.mark.parametrize("kind", ["job", "topology"])
def test_pathological_documents_are_refused(
    tmp_path: Path, text: str, suffix: str, kind: str
) -> None:
    path = tmp_path / f"{kind}.{suffix}"
    path.write_text(text)
    loader = load_job_spec if kind == "job" else Topology.load
    with pytest.raises(FirsthopError) as refused:
        loader(path)
    TALLY.add("pathological_document", "refused", refused.value.reason)
