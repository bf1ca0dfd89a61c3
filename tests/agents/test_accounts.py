"""Ranks run as their job user's local account (an agent as root), never as root, and rank
log paths stay inside the log directory whatever the job id."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.accounts import AccountError, UserMap
from agents.launch import ProcessExecutor, checkpoint_report_path, rank_log_path
from agents.ranks import RankControl, RankKey, RankLaunch
from firsthop.reasons import RankExitReason
from topology.errors import InvalidInputError


def _nobody() -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        return None


@settings(max_examples=300, deadline=None)
@given(
    job_id=st.one_of(
        st.text(max_size=60),
        st.sampled_from(["..", "../..", "/etc/passwd", "a/../../b", ".", "~root", "\x00x"]),
    ),
    attempt=st.integers(0, 10**6),
    rank=st.integers(0, 10**6),
)
def test_rank_log_paths_never_leave_the_log_directory(
    tmp_path_factory: pytest.TempPathFactory, job_id: str, attempt: int, rank: int
) -> None:
    root = tmp_path_factory.getbasetemp() / "logs"
    path = rank_log_path(root, job_id, attempt, rank)
    assert path.resolve().is_relative_to(root.resolve())
    assert path.parent.parent.parent == root
    assert checkpoint_report_path(root, job_id, attempt).resolve().is_relative_to(root.resolve())


def test_negative_rank_numbers_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must be >= 0"):
        rank_log_path(tmp_path, "j-1", 0, -1)


def test_the_mapping_names_accounts_and_refuses_root_and_unknown_ones() -> None:
    users = UserMap({"alice": "root", "bob": "no-such-account-here"})
    with pytest.raises(AccountError) as root:
        users.account_of("alice")
    assert root.value.reason == "root_account_refused"
    with pytest.raises(AccountError) as unknown:
        users.account_of("bob")
    assert unknown.value.reason == "unknown_account"
    with pytest.raises(AccountError):
        users.account_of("root")  # the same-named account is root too


def test_a_bad_mapping_file_is_refused_with_a_reason(tmp_path: Path) -> None:
    bad = tmp_path / "map.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(InvalidInputError) as caught:
        UserMap.load(bad)
    assert caught.value.reason == "invalid_user_map"
    good = tmp_path / "good.yaml"
    good.write_text("alice: nobody\n")
    assert UserMap.load(good).mapping == {"alice": "nobody"}


@pytest.mark.skipif(os.geteuid() != 0 or _nobody() is None, reason="needs root and 'nobody'")
async def test_a_rank_runs_as_the_mapped_account_not_as_root(tmp_path: Path) -> None:
    nobody = _nobody()
    assert nobody is not None
    tmp_path.chmod(0o755)
    executor = ProcessExecutor(tmp_path, base_env={}, users=UserMap({"alice": "nobody"}))
    script = 'echo "$(id -u) $USER"'
    launch = RankLaunch(RankKey("j-1", 0, 0), ("/bin/sh", "-c", script), {}, 0, 0, user="alice")
    # /bin/sh here is the job's own argv (a test program), not a shell the agent adds.
    result = await executor.run(launch, RankControl(lambda *_: None))
    assert result.reason is RankExitReason.COMPLETED
    log = rank_log_path(tmp_path, "j-1", 0, 0).read_text().split()
    assert log == [str(nobody.pw_uid), "nobody"]


async def test_a_user_without_an_account_does_not_start(tmp_path: Path) -> None:
    executor = ProcessExecutor(tmp_path, base_env={}, users=UserMap())
    launch = RankLaunch(RankKey("j-1", 0, 0), ("/bin/true",), {}, 0, 0, user="no-such-user-x")
    result = await executor.run(launch, RankControl(lambda *_: None))
    assert result.reason is RankExitReason.START_FAILED
    assert "no local account" in result.message
