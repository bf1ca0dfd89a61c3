"""The Slurm plug-in's parts without Slurm: comment, table, slices, hooks, install, status."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from slurm_builders import GPUS, expected_ranks, lab, lab_spec, leaf_of

from agents.slurm import hooks, install, state
from agents.slurm.cli import run_hook
from agents.slurm.comment import CommentError, JobShape, parse_comment
from agents.slurm.config import ConfigError, HookConfig
from agents.slurm.ctld import ShapeError, allocation_table, master_port
from agents.slurm.slurmcmd import Completed, drain_argv
from agents.slurm.status import parse_sinfo, status_from_nodes
from agents.slurm.taskprolog import task_prolog
from topology.spec import dump_spec

GOLDEN = Path(__file__).parents[1] / "golden"


# ------------------------------------------------------------------------ comment


def test_comment_parses_sizes_and_order() -> None:
    shape = parse_comment("run 7 firsthop:tp=8,pp=4,dp=16,order=tp-cp-dp-pp other")
    assert shape == JobShape({"tp": 8, "pp": 4, "dp": 16}, "tp-cp-dp-pp")


def test_comment_without_the_word_is_not_a_firsthop_job() -> None:
    assert parse_comment(None) is None
    assert parse_comment("") is None
    assert parse_comment("nightly run tp=8") is None


@pytest.mark.parametrize(
    "comment",
    [
        "firsthop:",
        "firsthop:tp=8,tp=4",
        "firsthop:tp=0",
        "firsthop:tp=x",
        "firsthop:gpus=8",
        "firsthop:tp",
        "firsthop:order=",
    ],
)
def test_bad_comments_have_a_stable_reason(comment: str) -> None:
    with pytest.raises(CommentError) as info:
        parse_comment(comment)
    assert info.value.reason == "invalid_comment"


def test_missing_dp_is_what_the_allocation_leaves() -> None:
    assert JobShape({"tp": 4, "pp": 2}).resolved(32)["dp"] == 4
    with pytest.raises(CommentError, match="does not divide"):
        JobShape({"tp": 3}).resolved(8)


# ------------------------------------------------------------------------ table


def test_table_keeps_dp_pairs_in_a_leaf_where_slurm_order_does_not() -> None:
    topo = lab()
    computed = allocation_table(
        topo, "7", ["n1", "n2", "n3", "n4"], JobShape({"tp": 4, "dp": 2, "pp": 2})
    )
    rows = computed.table.rank_rows()
    node_of = {rank: node for rank, node, _ in rows}
    for rank in (0, 8):
        assert leaf_of(node_of[rank]) == leaf_of(node_of[rank + 4])
    assert computed.cost_ms < computed.slurm_order_cost_ms
    want = expected_ranks(topo, ["n1", "n2", "n3", "n4"], tp=4, dp=2, pp=2)
    assert {rank: (node, gpu) for rank, node, gpu in rows} == want
    slices = computed.table.slices
    assert [slices[n].node_rank for n in state.node_order(slices)] == [0, 1, 2, 3]
    assert all(s.master_addr == node_of[0] for s in slices.values())
    assert all(s.master_port == master_port("7", 20000, 10000) == 20007 for s in slices.values())


def test_sub_host_job_uses_the_jobs_gpu_ordinals() -> None:
    computed = allocation_table(lab(), "3", ["n2"], JobShape({"tp": 2, "dp": 1}))
    assert computed.table.slices["n2"].ranks == (0, 1)
    assert computed.table.slices["n2"].world_size == 2


@pytest.mark.parametrize(
    ("nodes", "shape", "reason"),
    [
        (["n1", "n9"], JobShape({"dp": 8}), "unknown_node"),
        (["n1", "n2"], JobShape({"tp": 2, "dp": 3}), "shape_mismatch"),
        (["n1", "n2"], JobShape({"tp": 8, "dp": 1}), "tp_exceeds_nvlink_domain"),
        (["n1", "n2"], JobShape({"tp": 4, "dp": 2}, "tp-xx"), "invalid_order"),
    ],
)
def test_impossible_shapes_fail_with_a_reason(
    nodes: list[str], shape: JobShape, reason: str
) -> None:
    with pytest.raises(ShapeError) as info:
        allocation_table(lab(), "1", nodes, shape)
    assert info.value.reason == reason


# ------------------------------------------------------------------------ state and slices


def test_publish_replaces_a_table_atomically_and_slices_round_trip(tmp_path: Path) -> None:
    first = allocation_table(lab(), "9", ["n1", "n3"], JobShape({"tp": 4, "dp": 2}))
    second = allocation_table(lab(), "9", ["n2", "n4"], JobShape({"tp": 4, "dp": 2}))
    state.publish(tmp_path, first.table)
    state.publish(tmp_path, second.table)
    assert state.read_host_slice(tmp_path, "8", "n1") is None  # no table for job 8
    text = state.read_host_slice(tmp_path, "9", "n4")
    assert text is not None
    assert state.HostSlice.parse(text) == second.table.slices["n4"]
    record = state.read_table(tmp_path, "9")
    assert record is not None
    assert record["slurm_nodes"] == ["n2", "n4"]
    assert [n["node"] for n in record["nodes"]] == state.node_order(second.table.slices)
    assert sorted(r for n in record["nodes"] for r in n["ranks"]) == list(range(8))
    with pytest.raises(state.SliceError, match="not in job 9"):
        state.read_host_slice(tmp_path, "9", "n1")  # in the first table, not the second
    assert sorted(p.name for p in (tmp_path / "jobs").iterdir()) == ["9"]
    assert state.remove_job(tmp_path, "9")
    assert not state.remove_job(tmp_path, "9")


def test_names_that_escape_the_state_dir_are_refused(tmp_path: Path) -> None:
    with pytest.raises(state.SliceError):
        state.read_host_slice(tmp_path, "9", "../n1")
    with pytest.raises(state.SliceError):
        state.job_dir(tmp_path, "../9")


def _slice(job: str = "5", ranks: Sequence[int] = (4, 5, 6, 7)) -> state.HostSlice:
    return state.HostSlice(job, 8, 2, 1, 4, "n3", 20005, tuple(ranks))


def _task(
    local: Path, env: Mapping[str, str], *, fail_closed: bool = False
) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = task_prolog(str(local), env, out, err, fail_closed=fail_closed)
    return code, out.getvalue(), err.getvalue()


def test_task_prolog_exports_the_rank_of_its_gpu(tmp_path: Path) -> None:
    state.write_local_slice(tmp_path, "n1", "5", _slice().to_text())
    code, out, _ = _task(
        tmp_path, {"SLURM_JOB_ID": "5", "SLURMD_NODENAME": "n1", "SLURM_LOCALID": "2"}
    )
    assert code == 0
    exports = dict(line.removeprefix("export ").split("=", 1) for line in out.splitlines())
    assert exports == {
        "RANK": "6",
        "LOCAL_RANK": "2",
        "WORLD_SIZE": "8",
        "LOCAL_WORLD_SIZE": "4",
        "MASTER_ADDR": "n3",
        "MASTER_PORT": "20005",
        "NODE_RANK": "1",
        "FIRSTHOP_NODE_RANK": "1",
        "FIRSTHOP_NNODES": "2",
        "FIRSTHOP_JOB_ID": "5",
    }


def test_task_prolog_is_silent_without_a_slice_and_survives_a_corrupt_one(tmp_path: Path) -> None:
    env = {"SLURM_JOB_ID": "5", "SLURMD_NODENAME": "n1", "SLURM_LOCALID": "0"}
    assert _task(tmp_path, env) == (0, "", "")
    state.write_local_slice(tmp_path, "n1", "5", "job_id=5\nranks=x\n")
    code, out, err = _task(tmp_path, env)
    assert (code, out) == (0, "")
    assert "bad slice" in err
    assert _task(tmp_path, env, fail_closed=True)[0] == 2


def test_task_prolog_imports_only_the_standard_library_basics() -> None:
    root = Path(__file__).parents[2]
    code = (
        f"import sys; sys.path.insert(0, {str(root)!r}); import agents.slurm.taskprolog; "
        "print(' '.join(sorted(sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, check=True
    )
    loaded = set(done.stdout.split())
    assert "agents.slurm.taskprolog" in loaded
    heavy = {"pydantic", "numpy", "grpc", "torch", "typing", "pathlib", "dataclasses", "json"}
    assert not heavy & loaded


# ------------------------------------------------------------------------ hooks


class FakeRunner:
    """Records Slurm commands; answers with a fixed result."""

    def __init__(self, returncode: int = 0) -> None:
        self.calls: list[tuple[list[str], dict[str, str]]] = []
        self.returncode = returncode

    def __call__(self, argv: Sequence[str], *, env: Mapping[str, str], timeout: float) -> Completed:
        self.calls.append((list(argv), dict(env)))
        return Completed(self.returncode, "", "" if self.returncode == 0 else "refused")


def _config(tmp_path: Path, **changes: object) -> HookConfig:
    topo = tmp_path / "lab.yaml"
    if not topo.exists():
        dump_spec(lab_spec(), topo)
    (tmp_path / "state" / "fake-probe").mkdir(parents=True, exist_ok=True)
    values: dict[str, object] = {
        "topology": str(topo),
        "state_dir": str(tmp_path / "state"),
        "local_dir": str(tmp_path / "local"),
        "slurm_conf": "/etc/slurm/test.conf",
        "log_file": str(tmp_path / "hooks.log"),
        "checkpoint_path": str(tmp_path),
    }
    values.update(changes)
    return HookConfig.from_dict(values)


def _fake(config: HookConfig, node: str, *faults: str) -> None:
    lines = [f"FIRSTHOP_FAKE_GPUS={GPUS}", *(f"FIRSTHOP_FAKE_FAULT={f}" for f in faults)]
    state.fake_probe_file(Path(config.state_dir), node).write_text("\n".join(lines) + "\n")


def _ctx(
    config: HookConfig, env: Mapping[str, str], runner: FakeRunner | None = None
) -> tuple[hooks.HookContext, list[str]]:
    lines: list[str] = []
    ctx = hooks.HookContext(config=config, env=env, log=lines.append, runner=runner or FakeRunner())
    return ctx, lines


def _published(config: HookConfig, job: str, nodes: str, comment: str) -> None:
    env = {"SLURM_JOB_ID": job, "SLURM_JOB_NODELIST": nodes, "SLURM_JOB_COMMENT": comment}
    ctx, _ = _ctx(config, env)
    assert hooks.prolog_ctld(ctx) == hooks.EXIT_OK


def test_prolog_ctld_publishes_and_rejects_bad_comments(tmp_path: Path) -> None:
    config = _config(tmp_path)
    env = {
        "SLURM_JOB_ID": "4",
        "SLURM_JOB_NODELIST": "n[1-4]",
        "SLURM_JOB_COMMENT": "firsthop:tp=4,pp=2",
    }
    ctx, lines = _ctx(config, env)
    assert hooks.prolog_ctld(ctx) == hooks.EXIT_OK
    record = state.read_table(Path(config.state_dir), "4")
    assert record is not None
    assert record["parallelism"]["dp"] == 2
    assert len(lines) == 1
    assert "action=publish" in lines[0]
    runner = FakeRunner()
    bad, bad_lines = _ctx(
        config, {**env, "SLURM_JOB_ID": "5", "SLURM_JOB_COMMENT": "firsthop:tp=3,dp=5"}, runner
    )
    assert hooks.prolog_ctld(bad) == hooks.EXIT_REJECT
    assert "reason=shape_mismatch" in bad_lines[0]
    argv, cmd_env = runner.calls[0]
    assert argv[:3] == ["/usr/bin/scontrol", "update", "jobid=5"]
    assert argv[3].startswith("admincomment=firsthop: shape_mismatch: tp*cp*ep*dp*pp = 15")
    assert cmd_env["SLURM_CONF"] == "/etc/slurm/test.conf"
    none, none_lines = _ctx(config, {**env, "SLURM_JOB_ID": "6", "SLURM_JOB_COMMENT": "plain"})
    assert hooks.prolog_ctld(none) == hooks.EXIT_OK
    assert none_lines == []
    assert state.read_table(Path(config.state_dir), "6") is None


def test_prolog_drains_a_failed_node_with_the_reason(tmp_path: Path) -> None:
    config = _config(tmp_path)
    _published(config, "8", "n[1-2]", "firsthop:tp=4,dp=2")
    _fake(config, "n1", "1:ecc:0:0:1")
    runner = FakeRunner()
    env = {"SLURM_JOB_ID": "8", "SLURMD_NODENAME": "n1", "SLURM_JOB_COMMENT": "firsthop:tp=4,dp=2"}
    ctx, lines = _ctx(config, env, runner)
    assert hooks.prolog(ctx) == hooks.EXIT_REJECT
    argv, cmd_env = runner.calls[0]
    assert argv[:4] == ["/usr/bin/scontrol", "update", "nodename=n1", "state=drain"]
    assert argv[4].startswith("reason=firsthop: ecc_uncorrectable: GPU 0")
    assert cmd_env["SLURM_CONF"] == "/etc/slurm/test.conf"
    assert "action=drained health=FAILED" in lines[0]
    assert not state.local_slice_path(Path(config.local_dir), "n1", "8").exists()


def test_prolog_continues_on_suspect_and_copies_the_slice(tmp_path: Path) -> None:
    config = _config(tmp_path)
    _published(config, "8", "n[1-2]", "firsthop:tp=4,dp=2")
    _fake(config, "n2", "1:temp:3:91")
    env = {"SLURM_JOB_ID": "8", "SLURMD_NODENAME": "n2", "SLURM_JOB_COMMENT": "firsthop:tp=4,dp=2"}
    ctx, lines = _ctx(config, env)
    assert hooks.prolog(ctx) == hooks.EXIT_OK
    assert "health=SUSPECT temperature_high" in lines[0]
    local = state.local_slice_path(Path(config.local_dir), "n2", "8")
    assert state.HostSlice.parse(local.read_text()).nnodes == 2


def test_epilog_drains_a_node_that_broke_during_the_job(tmp_path: Path) -> None:
    config = _config(tmp_path)
    _published(config, "8", "n[1-2]", "firsthop:tp=4,dp=2")
    _fake(config, "n2", "2:remap-pending:1")
    env = {"SLURM_JOB_ID": "8", "SLURMD_NODENAME": "n2", "SLURM_JOB_COMMENT": "firsthop:tp=4,dp=2"}
    ctx, _ = _ctx(config, env)
    assert hooks.prolog(ctx) == hooks.EXIT_OK
    runner = FakeRunner()
    ctx, _ = _ctx(config, env, runner)
    assert hooks.epilog(ctx) == hooks.EXIT_OK
    assert not state.local_slice_path(Path(config.local_dir), "n2", "8").exists()
    assert runner.calls[0][0][4].startswith("reason=firsthop: after job 8: row_remap_pending")
    # The job never ran on a node without a slice: no check, no drain.
    runner = FakeRunner()
    ctx, _ = _ctx(config, env, runner)
    assert hooks.epilog(ctx) == hooks.EXIT_OK
    assert runner.calls == []


def _write_config(tmp_path: Path, config: HookConfig) -> Path:
    path = tmp_path / "firsthop-slurm.json"
    path.write_text(config.to_json())
    return path


@pytest.mark.parametrize(("mode", "code"), [("open", 0), ("closed", 2)])
def test_an_outage_follows_the_fail_mode(tmp_path: Path, mode: str, code: int) -> None:
    config = _config(tmp_path, fail_mode=mode)
    path = _write_config(tmp_path, config)
    env = {"SLURM_JOB_ID": "8", "SLURMD_NODENAME": "n2", "SLURM_JOB_COMMENT": "firsthop:tp=4,dp=2"}
    _fake(config, "n2")
    err = io.StringIO()
    assert run_hook("prolog", path, env, err) == code  # no table was published
    log = Path(config.log_file).read_text()
    assert "reason=no_rank_table" in log
    assert ("fail_open warning" in log) == (mode == "open")
    assert "Traceback" not in err.getvalue()


def test_a_hook_past_its_deadline_fails_open(tmp_path: Path) -> None:
    config = _config(tmp_path, timeout_s={"prolog": 0.2})
    path = _write_config(tmp_path, config)
    _fake(config, "n2")

    class Stuck(hooks.StateDirPublisher):
        def fetch_slice(self, job_id: str, node: str) -> str | None:
            threading.Event().wait(30)
            return None

    def factory(**kwargs: object) -> hooks.HookContext:
        ctx = hooks.HookContext(**kwargs)  # type: ignore[arg-type]
        ctx.publisher = Stuck(Path(config.state_dir))
        return ctx

    env = {"SLURM_JOB_ID": "8", "SLURMD_NODENAME": "n2", "SLURM_JOB_COMMENT": "firsthop:tp=4"}
    assert run_hook("prolog", path, env, io.StringIO(), context_factory=factory) == 0
    assert "reason=timeout" in Path(config.log_file).read_text()


def test_config_rejects_unknown_keys_and_relative_paths(tmp_path: Path) -> None:
    good = json.loads(_config(tmp_path).to_json())
    with pytest.raises(ConfigError, match="unknown configuration keys: nope"):
        HookConfig.from_dict({**good, "nope": 1})
    with pytest.raises(ConfigError, match="absolute path"):
        HookConfig.from_dict({**good, "state_dir": "state"})
    with pytest.raises(ConfigError, match="fail_mode"):
        HookConfig.from_dict({**good, "fail_mode": "maybe"})


def test_drain_reason_is_prefixed_and_one_line() -> None:
    argv = drain_argv("/usr/bin/scontrol", "n4", "gpu_lost:\n GPU 3 unreadable")
    assert argv[-1] == "reason=firsthop: gpu_lost: GPU 3 unreadable"


# ------------------------------------------------------------------------ install and status


def test_install_writes_wrappers_fragment_and_config(tmp_path: Path) -> None:
    topo = tmp_path / "lab.yaml"
    dump_spec(lab_spec(), topo)
    plan = install.render(topo, tmp_path / "etc", scheduler_parameters="bf_interval=5")
    install.write(plan, topo)
    fragment = (tmp_path / "etc" / "slurm.conf.firsthop").read_text().splitlines()
    assert "SchedulerParameters=bf_interval=5,nohold_on_prolog_fail" in fragment
    assert "PrologFlags=Alloc" in fragment
    assert "TopologyPlugin=topology/tree" in fragment
    for key, hook in install.HOOKS.items():
        wrapper = tmp_path / "etc" / "hooks" / hook
        assert f"{key}={wrapper}" in fragment
        assert wrapper.stat().st_mode & 0o111
    assert "-I -S" in (tmp_path / "etc" / "hooks" / "task-prolog").read_text()
    config = HookConfig.load(tmp_path / "etc" / "firsthop-slurm.json")
    assert config.state_dir == str(tmp_path / "etc" / "state")
    assert Path(config.topology).read_text() == topo.read_text()
    assert "SwitchName=la Nodes=n[1,3,5]" in (tmp_path / "etc" / "topology.conf").read_text()


def test_install_refuses_paths_a_wrapper_cannot_carry(tmp_path: Path) -> None:
    topo = tmp_path / "lab.yaml"
    dump_spec(lab_spec(), topo)
    with pytest.raises(Exception, match="shell characters") as info:
        install.render(topo, tmp_path / "bad dir")
    assert getattr(info.value, "reason", None) == "invalid_path"


def test_status_counts_one_host_jobs_per_host() -> None:
    from agents.slurm.status import NodeInfo
    from topology.generators import fat_tree
    from topology.model import Topology

    topo = Topology.from_spec(fat_tree(1, 2, 2, gpus_per_host=8))
    nodes = [NodeInfo(name, "idle", 8, 0) for name in topo.hosts]
    nodes[0] = NodeInfo(nodes[0].name, "mixed", 8, 3)
    fits8 = next(row for row in status_from_nodes(topo, nodes, {})["fits"] if row["job_gpus"] == 8)
    assert fits8["host"] == 3
    assert fits8["leaf"] == 3


def test_status_from_captured_sinfo() -> None:
    nodes = parse_sinfo((GOLDEN / "slurm_22.05_sinfo_gres.txt").read_text())
    data = status_from_nodes(lab(), nodes, {"running": 2})
    assert data["gpus_total"] == 24
    assert data["gpus_allocated"] == 6
    assert data["gpus_out_of_service"] == 4  # n5 drained
    assert data["gpus_free"] == 24 - 6 - 4
    leaves = {d["domain"]: d for d in data["domains"]}
    assert leaves["la"]["free_gpus"] == 4  # n1 free, n3 full, n5 drained
    assert leaves["lb"]["whole_free_hosts"] == 2  # n4, n6
    fits8 = next(row for row in data["fits"] if row["job_gpus"] == 8)
    assert fits8["leaf"] == 1  # two whole free hosts only under lb
    assert fits8["cluster"] == 1
    assert data["stranded_gpus"] == 2


def test_install_command_reports_bad_input_with_exit_2(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from scheduler.cli.ctl import app

    missing = tmp_path / "nope.yaml"
    result = CliRunner().invoke(
        app, ["slurm", "install", "--topology", str(missing), "--dir", str(tmp_path / "d")]
    )
    assert result.exit_code == 2
    assert "error:" in result.output
    assert not (tmp_path / "d").exists()


def test_status_query_failure_has_a_reason(tmp_path: Path) -> None:
    from agents.slurm.status import SlurmQueryError, query_status

    topo = tmp_path / "lab.yaml"
    dump_spec(lab_spec(), topo)
    with pytest.raises(SlurmQueryError, match="sinfo failed: refused") as info:
        query_status(topo, tmp_path / "slurm.conf", runner=FakeRunner(returncode=1))
    assert info.value.reason == "slurm_unavailable"


def test_install_with_a_server_writes_it_and_checks_the_address(tmp_path: Path) -> None:
    topo = tmp_path / "lab.yaml"
    dump_spec(lab_spec(), topo)
    plan = install.render(topo, tmp_path / "etc", server="sched.example:50051")
    assert plan.config.server == "sched.example:50051"
    with pytest.raises(Exception, match="not HOST:PORT") as info:
        install.render(topo, tmp_path / "etc", server="sched.example")
    assert getattr(info.value, "reason", None) == "invalid_server"
