"""Bounded inputs on the client side: every limit of a job spec, and no traceback from any
malformed spec through the real ``firsthop`` entry point (one line, exit 2).

The sizing test builds the largest job the limits allow and checks that what the scheduler
would send for it (``StartRanks`` to an agent, the job in a response) fits the receive limit.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from firsthop.v1 import agent_pb2, jobs_pb2
from scheduler import limits
from scheduler.api.agent_serde import (
    health_check_from_proto,
    rank_exited_from_proto,
    start_ranks_to_proto,
)
from scheduler.api.spec_serde import job_spec_to_proto
from scheduler.cli.user import app as user_app
from scheduler.core.actions import StartRanks
from scheduler.core.records import RankSlot
from scheduler.jobspec import job_spec_from_data
from scheduler.jobspec_file import load_job_spec
from topology.errors import ExitCode, FirsthopError

runner = CliRunner()

VALID: dict[str, Any] = {"name": "ok", "gpus": 8, "command": ["python", "train.py"]}


@pytest.fixture(scope="module")
def refused_server() -> Iterator[str]:
    """An address where nothing listens (a bound socket that never listens)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{sock.getsockname()[1]}"


def _reason(data: Any) -> str:
    with pytest.raises(FirsthopError) as info:
        job_spec_from_data(data)
    return str(info.value.reason)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"gpus": 4294967296}, "invalid_job_spec"),
        ({"gpus": limits.MAX_GPUS + 1}, "invalid_job_spec"),
        ({"gpus": True}, "invalid_job_spec"),
        ({"gpus": "8"}, "invalid_job_spec"),
        ({"priority": -(2**40)}, "invalid_job_spec"),
        ({"name": "n" * (limits.MAX_NAME_CHARS + 1)}, "invalid_job_spec"),
        ({"queue": "q" * (limits.MAX_NAME_CHARS + 1)}, "invalid_job_spec"),
        ({"env": {"A=B": "c"}}, "invalid_job_spec"),
        ({"env": {"": "c"}}, "invalid_job_spec"),
        ({"env": {"A": "x\x00y"}}, "invalid_text"),
        ({"env": {"A": "\ud800"}}, "invalid_text"),
        ({"command": ["py\x00thon"]}, "invalid_text"),
        ({"command": ["x"] * (limits.MAX_COMMAND_ARGS + 1)}, "field_too_large"),
        ({"command": ["x" * (limits.MAX_COMMAND_BYTES + 1)]}, "field_too_large"),
        ({"env": {f"K{i}": "" for i in range(limits.MAX_ENV_VARS + 1)}}, "field_too_large"),
        ({"env": {"K": "v" * limits.MAX_ENV_BYTES}}, "field_too_large"),
        ({"env": {"K" * (limits.MAX_ENV_KEY_BYTES + 1): ""}}, "field_too_large"),
        ({"checkpoint": {"dir": "d" * 5000, "interval_s": 1}}, "invalid_job_spec"),
        ({"placement": {"required_tier": {"dp": "t" * 200}}}, "invalid_job_spec"),
        ({"parallelism": {"tp": True, "dp": 8}}, "invalid_job_spec"),
    ],
)
def test_each_limit_has_a_stable_reason(change: dict[str, Any], reason: str) -> None:
    assert _reason(VALID | change) == reason


def test_deep_nesting_and_huge_item_counts_are_refused_before_validation() -> None:
    nested: Any = "x"
    for _ in range(limits.MAX_SPEC_DEPTH + 2):
        nested = [nested]

    assert _reason(VALID | {"placement": {"model": nested}}) == "field_too_large"
    assert _reason(VALID | {"env": {"A": ["x"] * limits.MAX_SPEC_ITEMS}}) == "field_too_large"


def test_a_flag_may_be_true_where_the_model_has_a_flag() -> None:
    model = {"layers": 2, "hidden": 64, "kv_heads": 2, "head_dim": 32, "params": 1e6}
    model |= {"seq_len": 128, "recompute": True}

    spec = job_spec_from_data(VALID | {"placement": {"model": model}})

    assert spec.placement.model is not None
    assert spec.placement.model.recompute is True


def test_errors_quote_a_bad_value_only_in_part() -> None:
    with pytest.raises(FirsthopError) as info:
        job_spec_from_data(VALID | {"env": {"A=" + "x" * 100_000: "v"}})

    assert len(info.value.message) < 400


def test_duplicate_keys_are_refused_in_yaml_and_json(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("name: a\ngpus: 1\ngpus: 2\ncommand: [x]\n")
    (tmp_path / "a.json").write_text('{"name": "a", "gpus": 1, "gpus": 2, "command": ["x"]}')

    for name in ("a.yaml", "a.json"):
        with pytest.raises(FirsthopError, match="given twice") as info:
            load_job_spec(tmp_path / name)
        assert info.value.reason == "invalid_job_spec"


def test_a_spec_file_over_the_size_limit_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("name: a\n" + "#" * limits.MAX_SPEC_BYTES)

    with pytest.raises(FirsthopError) as info:
        load_job_spec(path)

    assert info.value.reason == "field_too_large"


def _largest_spec() -> dict[str, Any]:
    arg = "a" * (limits.MAX_COMMAND_BYTES // limits.MAX_COMMAND_ARGS)
    value_bytes = limits.MAX_ENV_BYTES // limits.MAX_ENV_VARS - 8
    env = {f"K{i:06d}": "v" * value_bytes for i in range(limits.MAX_ENV_VARS)}
    return {
        "name": "n" * limits.MAX_NAME_CHARS,
        "gpus": limits.MAX_GPUS,
        "command": [arg] * limits.MAX_COMMAND_ARGS,
        "env": env,
        "checkpoint": {"dir": "d" * limits.MAX_PATH_BYTES, "interval_s": 1},
        "queue": "q" * limits.MAX_NAME_CHARS,
    }


def test_the_largest_job_the_limits_allow_fits_every_message() -> None:
    spec = job_spec_from_data(_largest_spec())
    host = "h" * limits.MAX_HOST_NAME_CHARS
    per_host = 64
    slots = tuple(RankSlot(rank=r, host=host, gpu=r % per_host) for r in range(per_host))
    start = StartRanks(
        command_id="c" * 300,
        job_id="j" * limits.MAX_ID_CHARS,
        node=host,
        attempt=2**31 - 1,
        job_name=spec.name,
        user="u" * limits.MAX_USER_CHARS,
        ranks=slots,
        node_rank=0,
        num_nodes=spec.gpus // per_host,
        world_size=spec.gpus,
        master_addr=host,
        master_port=65535,
        command=spec.command,
        env=spec.env,
        checkpoint_dir=spec.checkpoint.dir if spec.checkpoint else None,
        time_limit_s=limits.MAX_INT,
    )
    start_bytes = start_ranks_to_proto(start).ByteSize()
    job = jobs_pb2.Job(
        id="j" * limits.MAX_ID_CHARS,
        spec=job_spec_to_proto(spec),
        user="u" * limits.MAX_USER_CHARS,
        allocation=jobs_pb2.Allocation(
            ranks=[
                jobs_pb2.RankSlot(rank=r, host=host, gpu=r % per_host) for r in range(spec.gpus)
            ],
            hosts=[host] * (spec.gpus // per_host),
        ),
    )

    # Near the limits, and still well inside the agent's (and any client's) receive limit.
    assert job.spec.ByteSize() > limits.MAX_ENV_BYTES + limits.MAX_COMMAND_BYTES
    assert start_bytes < limits.MAX_MESSAGE_BYTES // 4
    assert job.ByteSize() < limits.MAX_MESSAGE_BYTES


def _submit(tmp: Path, text: str, server: str, suffix: str = ".yaml") -> tuple[int, str]:
    path = tmp / f"spec{suffix}"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    result = runner.invoke(user_app, ["--server", server, "submit", str(path)])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


MALFORMED = {
    "gpus_out_of_range": "name: a\ngpus: 4294967296\ncommand: [x]\n",
    "deep_nesting": "name: a\ngpus: 1\ncommand: [x]\nenv: " + "[" * 5000 + "]" * 5000 + "\n",
    "lone_surrogate": 'name: a\ngpus: 1\ncommand: [x]\nenv: {A: "\\ud800"}\n',
    "bool_gpus": "name: a\ngpus: true\ncommand: [x]\n",
    "duplicate_key": "name: a\ngpus: 1\ngpus: 2\ncommand: [x]\n",
    "env_key_with_equals": 'name: a\ngpus: 1\ncommand: [x]\nenv: {"A=B": c}\n',
    "nul_in_argv": 'name: a\ngpus: 1\ncommand: ["x\\0y"]\n',
    "nul_in_env": 'name: a\ngpus: 1\ncommand: [x]\nenv: {A: "x\\0y"}\n',
    "empty_command": "name: a\ngpus: 1\ncommand: []\n",
    "no_command": "name: a\ngpus: 1\n",
    "empty_program": 'name: a\ngpus: 1\ncommand: [""]\n',
    "alias_bomb": "a: &a [x, x, x, x, x, x, x, x, x]\n"
    + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, c in zip("abcdefg", "bcdefgh", strict=True)
    )
    + "name: a\ngpus: 1\ncommand: [x]\n",
    "not_a_mapping": "- 1\n- 2\n",
    "binary": "\udcff\udcfe",
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_every_known_malformed_spec_is_one_line_and_exit_2(
    case: str, tmp_path: Path, refused_server: str
) -> None:
    code, output = _submit(tmp_path, MALFORMED[case], refused_server)

    assert code == ExitCode.BAD_INPUT, output
    assert output.count("\n") == 1, output
    assert output.startswith("error: "), output
    assert "Traceback" not in output


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.text(max_size=20),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
_keys = st.sampled_from(
    [
        "name",
        "gpus",
        "command",
        "env",
        "priority",
        "queue",
        "checkpoint",
        "max_restarts",
        "time_limit_s",
        "placement",
        "launch",
        "parallelism",
        "other",
    ]
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    changes=st.dictionaries(_keys, _values, max_size=4),
    as_json=st.booleans(),
)
def test_no_malformed_spec_ends_in_a_traceback(
    changes: dict[str, Any], as_json: bool, tmp_path: Path, refused_server: str
) -> None:
    data = {**VALID, "command": ["x"], **changes}
    text = json.dumps(data) if as_json else yaml.safe_dump(data, allow_unicode=True)
    code, output = _submit(tmp_path, text, refused_server, ".json" if as_json else ".yaml")

    # Either refused as bad input, or valid and then refused by the absent server.
    assert code in {ExitCode.BAD_INPUT, ExitCode.UNAVAILABLE}, output
    assert output.count("\n") == 1, output
    assert output.startswith("error: "), output


def test_clip_says_how_long_the_value_was() -> None:
    clipped = limits.clip("x" * 100_000)

    assert len(clipped) < 120
    assert "100000 chars" in clipped
    assert limits.clip("short") == "'short'"


def test_an_agents_free_text_is_cut_before_it_reaches_a_record() -> None:
    report = agent_pb2.RankExited(
        job_id="j-1", attempt=0, rank=0, exit_reason=agent_pb2.RANK_EXIT_REASON_START_FAILED
    )
    report.message = "m" * 1_000_000
    check = agent_pb2.HealthCheckResult(check_id="c", passed=False, summary="s" * 1_000_000)

    event = rank_exited_from_proto(report, "h1")(datetime.now(UTC))
    result = health_check_from_proto(check)

    assert len(event.message) <= limits.MAX_AGENT_MESSAGE_CHARS
    assert event.reason == "start_failed"
    assert len(result.summary) <= limits.MAX_AGENT_MESSAGE_CHARS
