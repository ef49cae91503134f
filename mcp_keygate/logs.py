"""Logging that cannot leak: one scrubbing filter on every handler, for every logger and level.

Our own log lines never hold a key, but other libraries' do not know what a key is: httpx2's
DEBUG lines print response headers (an upstream may echo the key), the MCP SDK logs session ids
at INFO. A filter on the handler — not on our loggers — sees every record that reaches stderr.
"""

from __future__ import annotations

import json
import logging
import re
import sys

from .keys.secret import scrub

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Line breaks and other control characters in a message could forge whole log lines.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")
# Streamable-HTTP session ids (uuid4().hex) and SSE session ids (UUIDs): whoever holds one may use the session.
_SESSION_ID = re.compile(r"\b[0-9a-f]{32}\b|\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")


class ScrubFilter(logging.Filter):
    """Rewrites each record's final text (message, exception, stack) with secrets and session ids
    removed, and so that no text a client chose can start a line of its own: control characters in a
    message are escaped, and every line of a traceback is indented."""

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
        record.msg, record.args = _escape(self.clean(message)), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = _indent(self.clean(record.exc_text))
        if record.stack_info:
            record.stack_info = _indent(self.clean(record.stack_info))
        return True


def _escape(text: str) -> str:
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


def _indent(text: str) -> str:
    return "\n".join("  | " + _escape(line) for line in text.splitlines())


SCRUBBER = ScrubFilter()


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for operators who ship logs (scrubbed like every other line)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(level: str, log_format: str = "text") -> None:
    """stderr only (in stdio mode stdout belongs to the protocol), every record scrubbed.

    The HTTP client's own line per request is left out below DEBUG: the router logs each attempt.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(LOG_FORMAT))
    handler.addFilter(SCRUBBER)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    if level.upper() != "DEBUG":
        logging.getLogger("httpx2").setLevel(logging.WARNING)


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
