"""``JobSpec.to_request``: the request without excluded hosts is built once per spec and kept
(:attr:`JobSpec.request`); it always equals a freshly built one, and excluded hosts never come
from, or go into, the cache."""

from __future__ import annotations

from typing import Any

from scheduler.jobspec import JobSpec, job_spec_from_data

BASE: dict[str, Any] = {"name": "a", "gpus": 16, "parallelism": {"tp": 8, "dp": 2}}


def _spec(**changes: Any) -> JobSpec:
    return job_spec_from_data(BASE | changes)


def _fresh(spec: JobSpec, excluded: frozenset[str] = frozenset()) -> Any:
    # What to_request built before it was cached: the request of the spec's fields.
    hints = spec.placement
    return type(spec.request)(
        gpus=spec.gpus,
        parallelism=spec.par,
        model=hints.model,
        volumes_gb=hints.volumes_gb,
        required_tier=hints.required_tier,
        nvlink_dims=hints.nvlink_dims | {"tp"},
        max_leaves=hints.max_leaves,
        excluded_hosts=excluded,
    )


def test_the_request_is_built_once_per_spec() -> None:
    spec = _spec()
    assert spec.to_request() is spec.to_request() is spec.request
    assert spec.to_request() == _fresh(spec)
    assert spec.request_key == _fresh(spec).model_dump_json()


def test_equal_specs_give_equal_requests_and_different_specs_do_not_share() -> None:
    one, same, other = _spec(), _spec(), _spec(gpus=32, parallelism={"tp": 8, "dp": 4})
    assert one.request == same.request
    assert one.request_key == same.request_key
    assert other.request.gpus == 32
    assert other.request_key != one.request_key
    hinted = _spec(placement={"max_leaves": 1})
    assert hinted.request.max_leaves == 1
    assert hinted.request_key != one.request_key


def test_excluded_hosts_bypass_the_cache() -> None:
    spec = _spec()
    excluded = spec.to_request(["h1", "h2"])
    assert excluded.excluded_hosts == {"h1", "h2"}
    assert excluded == _fresh(spec, frozenset({"h1", "h2"}))
    assert spec.to_request().excluded_hosts == frozenset()
    assert spec.to_request(iter(())) is spec.request  # an empty iterable excludes nothing


def test_the_cache_is_not_part_of_the_spec() -> None:
    spec = _spec()
    _ = spec.request_key
    assert spec == _spec()
    assert "request" not in spec.model_dump()
    assert JobSpec.model_validate_json(spec.model_dump_json()) == spec
