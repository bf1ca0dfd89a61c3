"""The hooks' configuration file, ``firsthop-slurm.json``, written by ``firsthopctl slurm
install`` and read by every hook (Slurm starts hooks without arguments or a useful
environment, so the wrappers pass ``--config`` with its absolute path).

Standard library only (the TaskProlog reads it); must not import ``scheduler``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

CONFIG_NAME = "firsthop-slurm.json"
_TLS_KEYS = ("tls_cert", "tls_key", "tls_ca")
FailMode = Literal["open", "closed"]


class ConfigError(ValueError):
    """An unreadable or invalid hook configuration (reason ``invalid_config``)."""

    reason = "invalid_config"


@dataclass(frozen=True, slots=True)
class HookConfig:
    """Everything a hook needs to know.

    Attributes:
        topology: the cluster's topology file (a copy kept next to the hooks).
        state_dir: where PrologSlurmctld publishes rank tables; every compute node must be
            able to read it (a shared file system). Also holds ``fake-probe/<node>.env``.
        local_dir: node-local directory for this host's slice of a running job's table
            (``<local_dir>/<node>/<job>.env``), read by the TaskProlog.
        server: the firsthop scheduler's ``HOST:PORT`` to publish to instead of the state
            directory (``--server``); ``None``: state-directory mode.
        slurm_conf: the ``slurm.conf`` that ``scontrol`` must use (hooks have no SLURM_CONF).
        scontrol: absolute path of ``scontrol``.
        log_file: where hooks append one line per action (Slurm 22.05 drops the output of a
            successful hook and of every PrologSlurmctld).
        fail_mode: what an outage of firsthop itself does (state directory unreadable,
            topology missing, a timeout, an unexpected error): ``open`` lets the job run with
            Slurm's own order and logs a warning; ``closed`` fails the hook. A bad comment or
            an impossible shape always fails PrologSlurmctld; a FAILED node always fails the
            Prolog.
        timeout_s: per hook name, seconds before the hook gives up (then ``fail_mode``).
        master_port_base: ``MASTER_PORT`` is ``base + job_id % span``.
        master_port_span: see ``master_port_base``.
        epilog_check: run the fast health check after each firsthop job and drain a node
            whose GPUs broke during it.
        checkpoint_path: the file system the host probe checks for free space.
        tls_cert: with ``server``, the hooks' client certificate (``firsthopctl certs
            issue-slurm``): they speak mutual TLS to the scheduler's agents' port
            (``--agent-listen``). All three of ``tls_cert``, ``tls_key`` and ``tls_ca``, or
            none (a plain channel, for a scheduler without TLS).
        tls_key: the certificate's private key (readable by SlurmUser on the controller and
            by root on compute nodes; nobody else).
        tls_ca: the cluster CA, to check the scheduler's certificate.
    """

    topology: str
    state_dir: str
    local_dir: str = "/run/firsthop-slurm"
    server: str | None = None
    slurm_conf: str = "/etc/slurm/slurm.conf"
    scontrol: str = "/usr/bin/scontrol"
    log_file: str = "/var/log/firsthop-slurm.log"
    fail_mode: FailMode = "open"
    timeout_s: dict[str, float] = field(
        default_factory=lambda: {
            "prolog-ctld": 20.0,
            "prolog": 20.0,
            "task-prolog": 5.0,
            "epilog": 20.0,
            "epilog-ctld": 10.0,
        }
    )
    master_port_base: int = 20000
    master_port_span: int = 10000
    epilog_check: bool = True
    checkpoint_path: str = "/"
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None

    @classmethod
    def load(cls, path: Path) -> HookConfig:
        """Read a configuration file.

        Raises:
            ConfigError: unreadable, not JSON, unknown or missing keys, wrong types.
        """
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from exc
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Any) -> HookConfig:
        """Build from parsed JSON (see :meth:`load`)."""
        if not isinstance(data, dict):
            raise ConfigError("the configuration must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown configuration keys: {', '.join(unknown)}")
        if data.get("fail_mode", "open") not in ("open", "closed"):
            raise ConfigError("fail_mode must be 'open' or 'closed'")
        try:
            config = cls(**data)
        except TypeError as exc:
            raise ConfigError(f"bad configuration: {exc}") from exc
        for name in ("topology", "state_dir", "local_dir", "slurm_conf", "scontrol", "log_file"):
            value = getattr(config, name)
            if not isinstance(value, str) or not value.startswith("/"):
                raise ConfigError(f"{name} must be an absolute path, got {value!r}")
        tls = config.tls_files()
        if tls is not None:
            for name, value in zip(_TLS_KEYS, tls, strict=True):
                if not isinstance(value, str) or not value.startswith("/"):
                    raise ConfigError(f"{name} must be an absolute path, got {value!r}")
        return config

    def tls_files(self) -> tuple[str, str, str] | None:
        """``(tls_cert, tls_key, tls_ca)``, or ``None`` when the hooks use a plain channel.

        Raises:
            ConfigError: only some of the three are set.
        """
        given = (self.tls_cert, self.tls_key, self.tls_ca)
        if all(v is None for v in given):
            return None
        if self.tls_cert is None or self.tls_key is None or self.tls_ca is None:
            raise ConfigError("tls_cert, tls_key and tls_ca go together (all three or none)")
        return (self.tls_cert, self.tls_key, self.tls_ca)

    def to_json(self) -> str:
        """The file's text."""
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    def timeout(self, hook: str) -> float:
        """Seconds the hook ``hook`` may take (30 when not configured)."""
        return float(self.timeout_s.get(hook, 30.0))
