"""Real Salt for the tests: minion and master configs, salt-call, daemons that always stop.

Salt is never imported into the test process (its import hooks trip ``-W error``); every
Salt command runs as a subprocess with this tree first on ``PYTHONPATH``.  The configs
name the extension's directories (``module_dirs``...) as well, so the tree under test is
loaded even where the installed distribution predates its ``salt.loader`` entry point.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import jailhouse
import jailhouse.saltext

if TYPE_CHECKING:
    from collections.abc import Iterator

REPO = Path(jailhouse.__file__).resolve().parent.parent
SALTEXT = Path(jailhouse.saltext.__file__).resolve().parent
HAVE_SALT = importlib.util.find_spec("salt") is not None and shutil.which("salt-call") is not None
NEEDS_SALT = pytest.mark.skipif(
    not HAVE_SALT, reason="Salt is not installed: pip install 'python-jailhouse[salt]'"
)
TIMEOUT = 180


def env() -> dict[str, str]:
    """The environment Salt commands run in: this tree importable first."""
    out = dict(os.environ)
    out["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [out.get("PYTHONPATH")])])
    out.pop("JAILHOUSE_URI", None)
    return out


def yaml_config(values: dict[str, Any]) -> str:
    """Render a Salt config; JSON is YAML, so nothing needs a YAML library."""
    return "\n".join(f"{key}: {json.dumps(value)}" for key, value in values.items()) + "\n"


def ext_dirs() -> dict[str, list[str]]:
    """The extension's module directories, for a minion or master config."""
    return {
        "module_dirs": [str(SALTEXT / "modules")],
        "states_dirs": [str(SALTEXT / "states")],
        "runner_dirs": [str(SALTEXT / "runners")],
    }


def common(root: Path) -> dict[str, Any]:
    """The per-daemon directories, all under ``root``."""
    return {
        "root_dir": str(root),
        "pki_dir": str(root / "pki"),
        "cachedir": str(root / "cache"),
        "sock_dir": str(root / "sock"),
        "pidfile": str(root / "salt.pid"),
        "log_file": str(root / "salt.log"),
        "log_level_logfile": "info",
        "user": os.environ.get("USER") or "root",
    }


class Result:
    """What a Salt command returned: exit status, the parsed JSON output, stderr."""

    def __init__(self, proc: subprocess.CompletedProcess[str], key: str | None) -> None:
        """Parse the JSON output (``--out=json``); ``data`` is ``None`` when there is none."""
        self.returncode = proc.returncode
        self.stderr = proc.stderr
        self.stdout = proc.stdout
        parsed: Any = None
        with contextlib.suppress(json.JSONDecodeError):
            parsed = json.loads(proc.stdout) if proc.stdout.strip() else None
        self.data: Any = parsed[key] if key is not None and isinstance(parsed, dict) else parsed

    def __repr__(self) -> str:
        """Show everything, for assertion messages."""
        return f"Result(rc={self.returncode}, data={self.data!r}, stderr={self.stderr[-2000:]!r})"


def run(argv: list[str], key: str | None = None) -> Result:
    """Run a Salt command with JSON output."""
    proc = subprocess.run(
        [*argv, "--out=json"],
        capture_output=True,
        text=True,
        env=env(),
        timeout=TIMEOUT,
        check=False,
    )
    return Result(proc, key)


class LocalMinion:
    """A masterless minion (``salt-call --local``) whose state tree is ``root/srv``."""

    def __init__(self, root: Path, connection: str | None) -> None:
        """Write the minion config; ``connection`` is ``jailhouse:connection``, if any."""
        self.root = root
        self.srv = root / "srv"
        self.srv.mkdir(parents=True, exist_ok=True)
        config: dict[str, Any] = {
            "id": "local-board",
            "file_client": "local",
            "file_roots": {"base": [str(self.srv)]},
            **common(root),
            **ext_dirs(),
        }
        if connection is not None:
            config["jailhouse"] = {"connection": connection}
        (root / "minion").write_text(yaml_config(config), encoding="utf-8")

    def call(self, *args: str) -> Result:
        """Run ``salt-call --local`` with this config."""
        return run(
            ["salt-call", "--local", "-c", str(self.root), "--retcode-passthrough", *args], "local"
        )

    def sls(self, name: str, text: str) -> None:
        """Write ``name.sls`` into the state tree."""
        (self.srv / f"{name}.sls").write_text(text, encoding="utf-8")

    def apply(self, name: str, *extra: str) -> Result:
        """Run ``state.apply name``; ``data`` is the list of state returns in run order."""
        result = self.call("state.apply", name, *extra)
        if isinstance(result.data, dict):
            result.data = sorted(result.data.values(), key=lambda r: r.get("__run_num__", 0))
        return result


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Daemons:
    """Salt daemons started in their own process groups, so every child can be stopped."""

    def __init__(self) -> None:
        """Start with none."""
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], log: Path) -> None:
        """Start a daemon in the foreground, in a new session, output to ``log``."""
        with log.open("wb") as out:
            self.procs.append(
                subprocess.Popen(
                    argv,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env(),
                    start_new_session=True,
                )
            )

    def stop(self) -> None:
        """Stop every daemon and its children: SIGTERM to the group, then SIGKILL."""
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # stragglers: job processes
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        self.procs.clear()


@contextlib.contextmanager
def fleet(root: Path, boards: dict[str, str]) -> Iterator[Path]:
    """Run a salt-master and one salt-minion per board on 127.0.0.1; yield the master's dir.

    ``boards`` maps minion ids to their ``jailhouse:connection``.  The daemons are
    stopped whatever happens.
    """
    publish, ret = free_port(), free_port()
    master = root / "master"
    master.mkdir(parents=True)
    (master / "master").write_text(
        yaml_config(
            {
                **common(master),
                "interface": "127.0.0.1",
                "publish_port": publish,
                "ret_port": ret,
                "auto_accept": True,
                "worker_threads": 2,
                "file_roots": {"base": [str(master / "srv")]},
                **ext_dirs(),
            }
        ),
        encoding="utf-8",
    )
    daemons = Daemons()
    try:
        daemons.start(["salt-master", "-c", str(master), "-l", "warning"], master / "out.log")
        for minion_id, connection in boards.items():
            mroot = root / "minions" / minion_id
            mroot.mkdir(parents=True)
            (mroot / "minion").write_text(
                yaml_config(
                    {
                        "id": minion_id,
                        "master": "127.0.0.1",
                        "master_port": ret,
                        "publish_port": publish,
                        "acceptance_wait_time": 1,
                        "random_reauth_delay": 0,
                        "jailhouse": {"connection": connection},
                        **common(mroot),
                        **ext_dirs(),
                    }
                ),
                encoding="utf-8",
            )
            daemons.start(["salt-minion", "-c", str(mroot), "-l", "warning"], mroot / "out.log")
        _wait_for(master, sorted(boards))
        yield master
    finally:
        daemons.stop()


def _wait_for(master: Path, minions: list[str]) -> None:
    """Wait until every minion answers test.ping through the master."""
    deadline = time.monotonic() + 120
    answered: set[str] = set()
    while time.monotonic() < deadline:
        result = run(["salt", "-c", str(master), "--timeout=5", "--static", "*", "test.ping"])
        if isinstance(result.data, dict):
            answered.update(k for k, v in result.data.items() if v is True)
        if answered >= set(minions):
            return
        time.sleep(1)
    logs = "".join(
        (master.parent / "minions" / m / "out.log").read_text(errors="replace")[-1500:]
        for m in minions
    )
    msg = f"minions {sorted(set(minions) - answered)} never answered; logs: {logs}"
    raise TimeoutError(msg)
