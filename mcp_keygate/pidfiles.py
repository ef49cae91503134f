"""Where `mcp-keygate reload` finds the servers of a config: one pid file per running server, in
the state's directory (next to the SQLite state, or where it would be), named after the state
file or, for the memory and Redis backends, after the config file. Desktop clients start one
stdio server each, so there may be several."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from pathlib import Path

from .config import Config, default_state_path, state_path


class PidFile:
    def __init__(self, directory: Path, stem: str, pid: int | None = None) -> None:
        self.directory = directory
        self.stem = stem
        self.pid = os.getpid() if pid is None else pid

    @classmethod
    def for_config(cls, config: Config, config_path: Path | None) -> PidFile:
        if config.state.backend == "sqlite":
            state = state_path(config)
            return cls(state.parent, state.name)
        origin = str(config_path.resolve()) if config_path is not None else "environment"
        digest = hashlib.sha256(origin.encode()).hexdigest()[:12]
        return cls(default_state_path().parent, f"config-{digest}")

    @property
    def path(self) -> Path:
        return self.directory / f"{self.stem}.{self.pid}.pid"

    def write(self) -> None:
        with contextlib.suppress(OSError):  # a read-only directory only costs `reload` its way in
            self.directory.mkdir(parents=True, exist_ok=True)
            self.path.write_text(f"{self.pid}\n", encoding="utf-8")

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()
        with contextlib.suppress(OSError):
            self.outcome_path(self.pid).unlink()

    def outcome_path(self, pid: int) -> Path:
        """Where the server `pid` says how its last reload went (for `mcp-keygate reload` to print)."""
        return self.directory / f"{self.stem}.{pid}.reload"

    def write_outcome(self, ok: bool, message: str) -> None:
        with contextlib.suppress(OSError):
            record = json.dumps({"at": time.time(), "ok": ok, "message": message})
            self.outcome_path(self.pid).write_text(record, encoding="utf-8")

    def outcome_since(self, pid: int, since: float) -> tuple[bool, str] | None:
        """The server's reload outcome written after `since`, if there is one yet."""
        try:
            record = json.loads(self.outcome_path(pid).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or float(record.get("at", 0)) < since:
            return None
        return bool(record.get("ok")), str(record.get("message", ""))

    def running(self) -> list[int]:
        """Pids of live mcp-keygate servers of this config. A file whose name and content disagree,
        or whose process is gone or is not an mcp-keygate server (a pid reused after a crash), is
        removed and never signalled."""
        alive = []
        for file in sorted(self.directory.glob(f"{self.stem}.*.pid")):
            named = file.name[len(self.stem) + 1 : -len(".pid")]
            try:
                pid = int(file.read_text(encoding="utf-8").strip())
            except (ValueError, OSError):
                pid = -1
            if str(pid) != named or not is_keygate_server(pid):
                with contextlib.suppress(OSError):
                    file.unlink()
                continue
            alive.append(pid)
        return alive


def is_keygate_server(pid: int) -> bool:
    """Is `pid` a running `mcp-keygate serve`? Read from /proc where there is one; elsewhere only
    whether the process exists can be known."""
    if pid <= 0:
        return False
    proc = Path("/proc") / str(pid) / "cmdline"
    if Path("/proc/self/cmdline").exists():
        try:
            words = proc.read_bytes().split(b"\0")
        except OSError:
            return False
        joined = b" ".join(words)
        return (b"mcp_keygate" in joined or b"mcp-keygate" in joined) and b"serve" in words
    try:
        os.kill(pid, 0)
    except PermissionError:
        return True
    except OSError:
        return False
    return True
