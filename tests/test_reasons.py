"""The reason catalogue (``firsthop.reasons``): its vocabularies agree with each other, with
the proto enums that carry them, and with what the docs promise."""

from __future__ import annotations

from pathlib import Path

import pytest

from firsthop.reasons import (
    ErrorReason,
    FailureReason,
    JobReason,
    PendingReason,
    RankExitReason,
    StopReason,
)
from firsthop.v1 import agent_pb2
from scheduler.core.errors import DuplicateSubmissionError

ROOT = Path(__file__).parents[1]


@pytest.mark.parametrize("reason", list(FailureReason))
def test_every_failure_reason_is_a_job_reason_and_a_stop_reason(reason: FailureReason) -> None:
    assert JobReason(reason.value).value == reason.value
    assert StopReason(reason.value).value == reason.value


def test_rank_exit_reasons_and_their_proto_enum_are_the_same_words() -> None:
    wire = {
        name.removeprefix("RANK_EXIT_REASON_").lower()
        for name in agent_pb2.RankExitReason.keys()  # noqa: SIM118 - protobuf's API
        if name != "RANK_EXIT_REASON_UNSPECIFIED"
    }

    assert wire == {r.value for r in RankExitReason}


def test_values_are_lower_snake_case_and_unique_per_vocabulary() -> None:
    for vocabulary in (ErrorReason, FailureReason, JobReason, PendingReason, StopReason):
        values = [m.value for m in vocabulary]
        assert len(set(values)) == len(values)
        assert all(v == v.lower() and " " not in v for v in values)


def test_the_duplicate_submission_reason_is_the_one_jobs_proto_documents() -> None:
    proto = (ROOT / "proto" / "firsthop" / "v1" / "jobs.proto").read_text()

    assert DuplicateSubmissionError.default_reason == "duplicate_submission_id"
    assert f'reason "{ErrorReason.DUPLICATE_SUBMISSION_ID}"' in proto


def test_pending_reasons_the_proto_documents_exist() -> None:
    proto = (ROOT / "proto" / "firsthop" / "v1" / "jobs.proto").read_text()
    start = proto.index("message ExplainJobResponse")
    documented = proto[start : proto.index("}", start)]

    for reason in PendingReason:
        assert f'"{reason}"' in documented


def _message(proto: str, name: str) -> str:
    text = (ROOT / "proto" / "firsthop" / "v1" / proto).read_text()
    start = text.index(f"message {name} {{")
    return text[start : text.index("\n}", start)]


def test_failure_and_stop_reasons_the_protos_document_are_the_catalogues() -> None:
    failure = _message("jobs.proto", "Failure")
    stop = _message("agent.proto", "StopRanks")

    assert all(f'"{reason}"' in failure for reason in FailureReason)
    assert all(f'"{reason}"' in stop for reason in StopReason)
