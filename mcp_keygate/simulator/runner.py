"""Run the simulator on loopback: in a background thread (tests, demo, bench) or in the foreground (CLI)."""

from __future__ import annotations

import threading
import time
from typing import Any

import uvicorn

from .app import create_app
from .scenario import Scenario


class SimulatorThread:
    """A real HTTP simulator on 127.0.0.1 in a daemon thread; `port=0` picks a free port."""

    def __init__(self, scenario: Scenario | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = create_app(scenario)
        config = uvicorn.Config(self.app, host=host, port=port, log_level="warning", lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="keygate-simulator", daemon=True)
        self.host = host
        self.port = port

    def __enter__(self) -> SimulatorThread:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self, timeout: float = 10.0) -> SimulatorThread:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the simulator did not start")
            time.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def openai_base(self) -> str:
        return f"{self.url}/v1"


def serve_forever(scenario: Scenario | None, host: str, port: int) -> None:
    """Foreground mode for `mcp-keygate simulator`."""
    uvicorn.run(create_app(scenario), host=host, port=port, log_level="info", lifespan="off")
