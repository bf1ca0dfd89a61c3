"""`firsthopctl place` (on a Typer app built here) and the job spec loader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from placement_builders import fat_tree
from typer.testing import CliRunner

from placement import Parallelism
from scheduler.cli.place_cmd import place
from scheduler.jobspec import JobSpec, job_spec_from_data
from scheduler.jobspec_file import load_job_spec
from topology.errors import InvalidInputError
from topology.spec import dump_spec

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "jobs"


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command()(place)
    return app


@pytest.fixture
def topology(tmp_path: Path) -> Path:
    path = tmp_path / "topo.yaml"
    dump_spec(fat_tree(2, 2, 4).to_spec(), path)
    return path


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _run(*args: str | Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(_app(), [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def test_placed_json_has_the_contract_keys(topology: Path, tmp_path: Path) -> None:
    job = _write(tmp_path, "job.yaml", "name: j\ngpus: 32\nparallelism: {tp: 8, dp: 4}\n")
    busy = _write(tmp_path, "busy", "h001\nh002:3\n# comment\n\n")
    code, out, err = _run("--topology", topology, "--job", job, "--busy", busy, "--output", "json")
    data = json.loads(out)

    assert code == 0, err
    for key in (
        "status",
        "reason",
        "ranks",
        "cost",
        "lower_bound",
        "solve_seconds",
        "groups_spanning",
    ):
        assert key in data
    assert data["status"] == "placed"
    assert data["reason"] is None
    assert len(data["ranks"]) == 32
    assert data["ranks"][9] == {"rank": 9, "host": data["ranks"][8]["host"], "gpu": 1}
    used = {r["host"] for r in data["ranks"]}
    assert not used & {"h001", "h002"}
    assert data["groups_spanning"]["dp"] == {"host": 0, "leaf": 8, "pod": 0, "cluster": 0}
    assert data["cost"] >= data["lower_bound"] > 0
    assert data["gap"] == pytest.approx(1 - data["lower_bound"] / data["cost"], abs=1e-5)
    # Figures that bound something else than the cost are named for it, never beside "cost".
    assert "proven_bound" not in data
    solver = data["solver"]
    assert set(solver) >= {"status", "count_model_objective", "count_model_bound", "models"}


def test_unplaceable_exits_3_with_reason(topology: Path, tmp_path: Path) -> None:
    job = _write(tmp_path, "job.yaml", "name: big\ngpus: 256\nparallelism: {tp: 8, dp: 32}\n")
    code, out, _ = _run("--topology", topology, "--job", job, "--output", "json")
    data = json.loads(out)

    assert code == 3
    assert data["status"] == "unplaceable"
    assert data["reason"] == "insufficient_gpus"
    assert data["counts"] == {"needed_gpus": 256, "free_gpus": 128}
    assert data["ranks"] == []


@pytest.mark.parametrize(
    ("job_text", "busy_text", "reason"),
    [
        ("name: j\ngpus: 16\nparallelism: {tp: 8, dp: 3}\n", None, "parallelism_mismatch"),
        ("name: j\ngpus: 16\nparallelism: {tp: 16}\n", None, "tp_exceeds_nvlink_domain"),
        ("name: j\ngpus: 8\n", "h999\n", "unknown_host"),
        ("name: j\ngpus: 8\n", "h001:9\n", "unknown_gpu"),
        ("name: j\ngpus: 8\ncolour: red\n", None, "invalid_job_spec"),
        ("name: j\ngpus: [8\n", None, "invalid_job_spec"),
        ("name: j\ngpus: 8\nplacement: {required_tier: {dp: spine}}\n", None, "unknown_tier"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    topology: Path, tmp_path: Path, job_text: str, busy_text: str | None, reason: str
) -> None:
    job = _write(tmp_path, "job.yaml", job_text)
    args: list[str | Path] = ["--topology", topology, "--job", job]
    if busy_text is not None:
        args += ["--busy", _write(tmp_path, "busy", busy_text)]
    code, out, err = _run(*args)

    assert code == 2
    assert err.startswith(f"error: {reason}: ")
    assert err.count("\n") == 1
    assert "Traceback" not in err + out


def test_missing_files_are_bad_input(topology: Path, tmp_path: Path) -> None:
    job = _write(tmp_path, "job.yaml", "name: j\ngpus: 8\n")
    code_job, _, err_job = _run("--topology", topology, "--job", tmp_path / "nope.yaml")
    code_busy, _, err_busy = _run("--topology", topology, "--job", job, "--busy", tmp_path / "nope")

    assert (code_job, code_busy) == (2, 2)
    assert err_job.startswith("error: unreadable_file: ")
    assert err_busy.startswith("error: unreadable_file: ")


def test_table_output_names_domains_cost_and_crossings(topology: Path, tmp_path: Path) -> None:
    job = _write(tmp_path, "job.yaml", "name: table-job\ngpus: 64\nparallelism: {tp: 8, dp: 8}\n")
    code, out, _ = _run("--topology", topology, "--job", job)
    _, json_out, _ = _run("--topology", topology, "--job", job, "--output", "json")
    (pod,) = json.loads(json_out)["domains"]["pod"]

    assert code == 0
    for text in ("table-job", "cost against the bound", "lower bound", pod, "leaf", "dp"):
        assert text in out


def test_example_job_specs_load_and_convert() -> None:
    specs = {p.name: load_job_spec(p) for p in sorted(EXAMPLES.glob("*.yaml"))}
    llama = specs["llama-405b-tp8-pp16-dp128.yaml"]
    request = llama.to_request()

    assert len(specs) >= 3
    assert llama.gpus == 16384
    assert request.par == Parallelism(tp=8, pp=16, dp=128)
    assert request.model is not None
    assert specs["dp-in-pod-64gpu.yaml"].to_request().required_tier == {"dp": "pod"}


def test_job_without_parallelism_is_pure_dp() -> None:
    spec = job_spec_from_data({"name": "dp-only", "gpus": 16})

    assert spec.par.dp == 16
    assert spec.to_request().par.world_size == 16
    assert spec.queue == "default"


def test_job_spec_json_and_errors_carry_the_file_name(tmp_path: Path) -> None:
    good = _write(tmp_path, "job.json", json.dumps({"name": "j", "gpus": 8, "priority": 3}))
    bad = _write(tmp_path, "bad.json", json.dumps({"name": "j", "gpus": 0}))
    with pytest.raises(InvalidInputError) as caught:
        load_job_spec(bad)

    assert load_job_spec(good).priority == 3
    assert caught.value.reason == "invalid_job_spec"
    assert caught.value.message.startswith(f"{bad}: gpus:")


def test_checkpoint_and_limits_are_validated() -> None:
    spec = JobSpec.model_validate(
        {
            "name": "ck",
            "gpus": 8,
            "checkpoint": {"dir": "/ckpt", "interval_s": 600},
            "max_restarts": 3,
            "time_limit_s": 3600,
            "command": ["python", "train.py"],
            "env": {"A": "1"},
        }
    )
    with pytest.raises(InvalidInputError) as caught:
        job_spec_from_data({"name": "ck", "gpus": 8, "checkpoint": {"dir": "/c", "interval_s": 0}})
    with pytest.raises(InvalidInputError) as bad_signal:
        job_spec_from_data({"name": "ck", "gpus": 8, "checkpoint": {"signal": "SIGKILL"}})
    # Only the checkpoint-on-request keys: dir and interval are optional.
    asked = job_spec_from_data({"name": "ck", "gpus": 8, "checkpoint": {"grace_s": 60}})

    assert spec.checkpoint is not None
    assert spec.checkpoint.interval_s == 600
    assert spec.command == ("python", "train.py")
    assert caught.value.message.startswith("job spec: checkpoint.interval_s")
    assert bad_signal.value.message.startswith("job spec: checkpoint.signal")
    assert asked.checkpoint is not None
    assert (asked.checkpoint.signal, asked.checkpoint.grace_s) == ("SIGTERM", 60)
