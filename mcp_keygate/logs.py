"""Logging that cannot leak: one scrubbing filter on every handler, for every logger and level.

Our own log lines never hold a key, but other libraries' do not know what a key is: httpx2's
DEBUG lines print response headers (an upstream may echo the key), the MCP SDK logs session ids
at INFO. A filter on the handler — not on our loggers — sees every record that reaches stderr.
"""

from __future__ import annotations

import logging
import re
import sys

from .keys.secret import scrub

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Streamable-HTTP session ids (uuid4().hex) and SSE session ids (UUIDs): whoever holds one may use the session.
_SESSION_ID = re.compile(r"\b[0-9a-f]{32}\b|\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")


class ScrubFilter(logging.Filter):
    """Rewrites each record's final text (message, exception, stack) with secrets and session ids removed."""

    def __init__(self) -> None:
        super().__init__("keygate-scrub")
        self.secrets: tuple[str, ...] = ()

    def add_secrets(self, secrets: list[str]) -> None:
        self.secrets = tuple(dict.fromkeys([*self.secrets, *(s for s in secrets if s)]))

    def clean(self, text: str) -> str:
        return _SESSION_ID.sub("<session>", scrub(text, self.secrets))

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed %-format from some library: keep what can be shown
            message = f"{record.msg!r} (unformattable arguments)"
        record.msg, record.args = self.clean(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.clean(record.exc_text)
        if record.stack_info:
            record.stack_info = self.clean(record.stack_info)
        return True


SCRUBBER = ScrubFilter()


def setup_logging(level: str) -> None:
    """stderr only (in stdio mode stdout belongs to the protocol), every record scrubbed."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(SCRUBBER)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def protect_all_handlers() -> None:
    """Put the scrubber on every handler any library has attached since start-up (uvicorn's, for one)."""
    loggers = [
        logging.getLogger(),
        *(lg for lg in logging.root.manager.loggerDict.values() if isinstance(lg, logging.Logger)),
    ]
    for logger in loggers:
        for handler in logger.handlers:
            if SCRUBBER not in handler.filters:
                handler.addFilter(SCRUBBER)
