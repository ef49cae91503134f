"""Live reload: `SIGHUP`, `mcp-keygate reload`, or (with `--watch`) a change of the config file
makes a running server take its config again without a restart.

A new config is checked exactly as `check` checks it; one that is wrong is refused with the same
messages, logged, and the running config stays. The file is watched by polling its size, time and
inode once a second: one `stat` a second costs nothing, sees editors that replace the file rather
than write it, and needs no native file-watching dependency.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

import anyio

from . import tracing
from .config import Config, ConfigError, load_config_file
from .errors import KeygateError
from .gateway import Keygate
from .logs import SCRUBBER
from .pidfiles import PidFile
from .reload_report import ReloadReport

log = logging.getLogger("mcp_keygate.reload")
POLL_S = 1.0

Listener = Callable[[ReloadReport], Awaitable[object]]


class Reloader:
    def __init__(
        self,
        gateway: Keygate,
        path: Path | None,
        *,
        watch: bool = False,
        env: Mapping[str, str] | None = None,
        pid_file: PidFile | None = None,
    ) -> None:
        self.gateway = gateway
        self.path = path
        self.watch = watch and path is not None
        self.env = env
        self.pid_file = pid_file
        self.listeners: list[Listener] = []
        self.token_names: set[str] | None = None  # over HTTP with tokens: what policies may name
        self._lock = anyio.Lock()

    async def reload(self, why: str) -> ReloadReport | None:
        """Take the config file again; None when it was refused (the running config stays)."""
        if self.path is None:
            log.warning("reload (%s) ignored: this server was started without a config file", why)
            return None
        async with self._lock:
            try:
                config = load_config_file(self.path, self.env)
                if problems := reload_problems(config, self.token_names):
                    raise ConfigError(problems, str(self.path))
                report = await self.gateway.reload(config, self.env)
            except (ConfigError, KeygateError) as exc:
                log.error("reload (%s) refused, the running config stays: %s", why, exc)
                self._tell(False, f"refused, the running config stays: {exc}")
                return None
            SCRUBBER.add_secrets(self.gateway.secrets)  # new keys are scrubbed from every log line too
            tracing.remember_secrets(self.gateway.secrets)
            for listener in self.listeners:
                await listener(report)
            log.info("config reloaded (%s): %s", why, report.summary())
            self._tell(True, f"reloaded: {report.summary()}")
            return report

    def _tell(self, ok: bool, message: str) -> None:
        if self.pid_file is not None:
            self.pid_file.write_outcome(ok, message)

    async def run(self) -> None:
        """Until cancelled: reload on SIGHUP, and on file changes when watching."""
        if self.pid_file is not None:
            self.pid_file.write()
        try:
            async with anyio.create_task_group() as group:
                if hasattr(signal, "SIGHUP"):
                    group.start_soon(self._on_signals)
                if self.watch:
                    group.start_soon(self._on_file_changes)
        finally:
            if self.pid_file is not None:
                self.pid_file.remove()

    async def _on_signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGHUP) as signals:
            async for _ in signals:
                await self.reload("SIGHUP")

    async def _on_file_changes(self) -> None:
        """Reload once a change has settled: the file unchanged for a whole poll (an editor writing
        in several steps is not read half-way)."""
        assert self.path is not None
        seen = _fingerprint(self.path)
        while True:
            await anyio.sleep(POLL_S)
            now = _fingerprint(self.path)
            if now == seen or now is None:
                continue
            while True:
                await anyio.sleep(POLL_S)
                later = _fingerprint(self.path)
                if later == now and later is not None:
                    break
                now = later
            seen = now
            await self.reload(f"{self.path.name} changed")


def reload_problems(config: Config, token_names: set[str] | None) -> list[str]:
    """What `serve` would refuse at start-up, which a reload must refuse too."""
    problems = []
    if not config.providers:
        problems.append("no providers: the new config would leave nothing to serve (an empty or half-written file?)")
    if token_names:
        problems += config.policy_token_problems(token_names)
    return problems


def _fingerprint(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None  # being replaced: look again at the next tick
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino)
