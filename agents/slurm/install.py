"""``firsthopctl slurm install``: the files a Slurm site needs to run firsthop's hooks.

:func:`render` and :func:`write` put into one directory (``DIR``):

- ``topology.conf``: the topology/tree export of the firsthop topology (Slurm 22.05 reads it
  from the directory of ``slurm.conf``: copy or link it there);
- ``slurm.conf.firsthop``: the lines a site adds with ``Include DIR/slurm.conf.firsthop``
  (``TopologyPlugin``, ``PrologFlags=Alloc``, the five hooks, ``SchedulerParameters`` with
  ``nohold_on_prolog_fail`` merged into the site's own parameters);
- ``firsthop-slurm.json``: the hooks' configuration (:class:`~agents.slurm.config.HookConfig`;
  with ``server`` the tables go to the scheduler's SlurmService instead of the state
  directory, which then only holds fake-probe files);
- ``topology.yaml`` (or the input's suffix): a copy of the topology the hooks load;
- ``hooks/<name>``: one executable ``/bin/sh`` wrapper per hook with absolute paths, since
  Slurm runs hook programs without arguments and (Prolog) without ``PATH``. The TaskProlog
  wrapper runs the interpreter with ``-I -S`` and imports only the standard library, because
  it runs once per task.

Rendering reads only the topology (:func:`render`); :func:`write` writes the result. Must not import
``scheduler``.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from agents.slurm.config import CONFIG_NAME, FailMode, HookConfig
from topology.errors import InvalidInputError
from topology.model import Topology
from topology.slurm import export_tree

FRAGMENT_NAME = "slurm.conf.firsthop"
HOOKS = {
    "PrologSlurmctld": "prolog-ctld",
    "Prolog": "prolog",
    "TaskProlog": "task-prolog",
    "Epilog": "epilog",
    "EpilogSlurmctld": "epilog-ctld",
}
_UNSAFE_PATH_CHARS = frozenset("'\"\\$`\n\r\t ")


@dataclass(frozen=True, slots=True)
class InstallPlan:
    """What :func:`write` writes: relative path -> (text, mode)."""

    files: dict[str, tuple[str, int]]
    config: HookConfig
    directory: Path


def _abs(path: Path, what: str) -> Path:
    resolved = path.expanduser().absolute()
    if _UNSAFE_PATH_CHARS & set(str(resolved)):
        raise InvalidInputError(
            f"{what} {str(resolved)!r} has quotes, spaces or shell characters",
            reason="invalid_path",
        )
    return resolved


def package_root() -> Path:
    """The directory holding the ``agents`` package (added to ``sys.path`` under ``-S``)."""
    import agents

    return Path(agents.__file__).resolve().parent.parent


def hook_command(python: Path, hook: str, config: Path) -> str:
    """The wrapper's ``exec`` line for a configured hook."""
    script = python.parent / "firsthop-slurm"
    if script.exists():
        return f"exec {script} {hook} --config {config}"
    return f"exec {python} -I -m agents.slurm {hook} --config {config}"


def task_prolog_command(python: Path, root: Path, local_dir: Path, fail_closed: bool) -> str:
    """The TaskProlog wrapper's ``exec`` line: no site packages, standard library only."""
    code = (
        f"import sys; sys.path.insert(0, '{root}'); "
        "from agents.slurm.taskprolog import main; "
        f"sys.exit(main('{local_dir}', {fail_closed!r}))"
    )
    return f'exec {python} -I -S -c "{code}"'


def wrapper(hook: str, command: str) -> str:
    """A hook wrapper script.

    Every hook but the TaskProlog (which has no comment in its environment) returns at once
    for a job whose comment lacks ``firsthop:``, before any interpreter starts; the Python
    side checks the comment again properly.
    """
    skip = (
        ""
        if hook == "task-prolog"
        else 'case "$SLURM_JOB_COMMENT" in *firsthop:*) ;; *) exit 0 ;; esac\n'
    )
    return (
        "#!/bin/sh\n"
        f"# firsthop Slurm hook: {hook}. Written by `firsthopctl slurm install`; Slurm runs it\n"
        "# without arguments and with almost no environment, so every path is absolute.\n"
        f"{skip}{command}\n"
    )


def merge_scheduler_parameters(site: str) -> str:
    """The site's ``SchedulerParameters`` with ``nohold_on_prolog_fail`` added once."""
    items = [p.strip() for p in site.split(",") if p.strip()]
    if "nohold_on_prolog_fail" not in items:
        items.append("nohold_on_prolog_fail")
    return ",".join(items)


def render(
    topology_file: Path,
    directory: Path,
    *,
    state_dir: Path | None = None,
    local_dir: Path = Path("/run/firsthop-slurm"),
    slurm_conf: Path = Path("/etc/slurm/slurm.conf"),
    log_file: Path | None = None,
    fail_mode: FailMode = "open",
    scheduler_parameters: str = "",
    epilog_check: bool = True,
    checkpoint_path: Path = Path("/"),
    python: Path | None = None,
    scontrol: Path = Path("/usr/bin/scontrol"),
    server: str | None = None,
    tls: tuple[Path | None, Path | None, Path | None] = (None, None, None),
) -> InstallPlan:
    """Everything :func:`write` writes (see the module docstring).

    Raises:
        TopologyError: the topology file is invalid (its own reasons).
        InvalidInputError: ``invalid_path`` for a path a wrapper cannot carry;
            ``invalid_server`` for a server address that is not ``HOST:PORT``;
            ``invalid_tls_config`` for only some of ``tls`` (certificate, key, CA) or TLS
            files without a server.
    """
    if server is not None:
        host, sep, port = server.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise InvalidInputError(
                f"--server {server!r} is not HOST:PORT", reason="invalid_server"
            )
    tls_files = _tls_files(tls, server)
    topology = Topology.load(topology_file)
    directory = _abs(directory, "--dir")
    state = _abs(state_dir or directory / "state", "--state-dir")
    local = _abs(local_dir, "--local-dir")
    interpreter = _abs(python or Path(sys.executable), "python")
    root = _abs(package_root(), "package root")
    topo_copy = directory / f"topology{topology_file.suffix or '.yaml'}"
    config = HookConfig(
        topology=str(topo_copy),
        state_dir=str(state),
        server=server,
        local_dir=str(local),
        slurm_conf=str(_abs(slurm_conf, "--slurm-conf")),
        scontrol=str(_abs(scontrol, "scontrol")),
        log_file=str(_abs(log_file or directory / "firsthop-slurm.log", "--log-file")),
        fail_mode=fail_mode,
        epilog_check=epilog_check,
        checkpoint_path=str(_abs(checkpoint_path, "--checkpoint-path")),
        tls_cert=tls_files[0],
        tls_key=tls_files[1],
        tls_ca=tls_files[2],
    )
    config_path = directory / CONFIG_NAME
    files: dict[str, tuple[str, int]] = {
        "topology.conf": (export_tree(topology), 0o644),
        CONFIG_NAME: (config.to_json(), 0o644),
    }
    lines = [
        "# firsthop Slurm plug-in, written by `firsthopctl slurm install`.",
        f"# Add `Include {directory / FRAGMENT_NAME}` at the end of slurm.conf, and put",
        f"# {directory / 'topology.conf'} next to slurm.conf. Remove the Include to roll back.",
        "TopologyPlugin=topology/tree",
        "PrologFlags=Alloc",
        f"SchedulerParameters={merge_scheduler_parameters(scheduler_parameters)}",
    ]
    for key, hook in HOOKS.items():
        path = directory / "hooks" / hook
        if hook == "task-prolog":
            command = task_prolog_command(interpreter, root, local, fail_mode == "closed")
        else:
            command = hook_command(interpreter, hook, config_path)
        files[f"hooks/{hook}"] = (wrapper(hook, command), 0o755)
        lines.append(f"{key}={path}")
    files[FRAGMENT_NAME] = ("\n".join(lines) + "\n", 0o644)
    return InstallPlan(files, config, directory)


def _tls_files(
    tls: tuple[Path | None, Path | None, Path | None], server: str | None
) -> tuple[str | None, str | None, str | None]:
    """The configuration's ``tls_cert``, ``tls_key``, ``tls_ca`` (absolute) from the flags."""
    given = [p for p in tls if p is not None]
    if not given:
        return (None, None, None)
    if len(given) != len(tls):
        raise InvalidInputError(
            "mutual TLS needs all of --cert, --key and --ca", reason="invalid_tls_config"
        )
    if server is None:
        raise InvalidInputError(
            "--cert, --key and --ca are for --server mode", reason="invalid_tls_config"
        )
    flags = ("--cert", "--key", "--ca")
    cert, key, ca = (str(_abs(p, flag)) for p, flag in zip(given, flags, strict=True))
    return (cert, key, ca)


def write(plan: InstallPlan, topology_file: Path) -> None:
    """Write a rendered plan (directories created, the state directory too)."""
    directory = plan.directory
    (directory / "hooks").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(topology_file, plan.config.topology)
    for relative, (text, mode) in plan.files.items():
        path = directory / relative
        path.write_text(text)
        path.chmod(mode)
    state = Path(plan.config.state_dir)
    for sub in (state, state / "jobs", state / "fake-probe"):
        sub.mkdir(parents=True, exist_ok=True)
        sub.chmod(0o755)


def written(plan: InstallPlan) -> Sequence[str]:
    """The paths written, for the install command's output."""
    return [str(plan.directory / rel) for rel in sorted(plan.files)] + [plan.config.topology]
