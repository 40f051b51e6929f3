"""Logging that cannot leak a secret: every record is redacted when it is created.

Redaction happens in the record factory, so every handler (console, files, test capture) sees only
the redacted text, including rendered tracebacks.
"""

import logging
import re
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from typing import Any

SECRET_PATTERNS = [
    re.compile(r"xai-[A-Za-z0-9_\-]{4,}"),
    re.compile(r"sk-[A-Za-z0-9_\-]{4,}"),
    re.compile(r"sbt_[A-Za-z0-9_\-]{4,}"),
    re.compile(r"(?i)(bearer\s+)[^\s\"']+"),
    re.compile(
        r"(?i)((?:\"(?:[a-z_]*api_key|client_secret|password|secret|token)\"\s*:\s*\")"
        r"|(?:\b(?:[a-z_]*api_key|client_secret|password|secret)=))[^\s\",}&]+"
    ),
]


def redact(text: str) -> str:
    for pattern in SECRET_PATTERNS:
        if pattern.groups:
            text = pattern.sub(lambda m: m.group(1) + "[REDACTED]", text)
        else:
            text = pattern.sub("[REDACTED]", text)
    return text


_base_factory = logging.getLogRecordFactory()


def _redacting_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    record = _base_factory(*args, **kwargs)
    try:
        message = record.getMessage()
    except Exception:  # a bad format string must not lose the record
        message = str(record.msg)
    record.msg = redact(message)
    record.args = None
    if record.exc_info and record.exc_info[1] is not None:
        record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)).rstrip())
        record.exc_info = None
    return record


def install_redaction() -> None:
    if logging.getLogRecordFactory() is not _redacting_factory:
        logging.setLogRecordFactory(_redacting_factory)


def configure_logging(
    level: str = "INFO", packages: tuple[str, ...] = ("switchboard_runtime",)
) -> None:
    """Redacted records from here on, to stderr, at `level` for these packages' loggers."""
    install_redaction()
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    for package in packages:
        logging.getLogger(package).setLevel(level.upper())


class RepeatedWarnings:
    """Warnings anyone on the network can cause, one kind at a time (a webhook without a valid
    signature, a socket that shows no token): each kind is logged at most once every `every`
    seconds, the next line saying how many were held back, so a flood of them can neither fill
    the disk nor drown the warnings that matter. Every one is counted (`counts`, for /metrics).

    Kinds are the caller's fixed names (or a control plane's error codes), never text a peer
    chose, so the counters stay few. Held-back warnings are said with the next of their kind;
    /metrics has them at once. Thread-safe: the control plane warns from its worker threads."""

    def __init__(
        self,
        logger: logging.Logger,
        every: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger, self.every, self.clock = logger, every, clock
        self.counts: Counter[str] = Counter()
        self._said_at: dict[str, float] = {}
        self._held_back: Counter[str] = Counter()
        self._lock = threading.Lock()

    def warn(self, kind: str, message: str, *args: object) -> None:
        with self._lock:
            self.counts[kind] += 1
            now = self.clock()
            said_at = self._said_at.get(kind)
            if said_at is not None and now - said_at < self.every:
                self._held_back[kind] += 1
                return
            self._said_at[kind] = now
            held_back = self._held_back.pop(kind, 0)
        if held_back:
            message += " (and %d more like it since the last such line; at most one a %.0f s)"
            args = (*args, held_back, self.every)
        self.logger.warning(message, *args)
