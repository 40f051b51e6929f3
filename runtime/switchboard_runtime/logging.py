"""Logging that cannot leak a secret: every record is redacted when it is created.

Redaction happens in the record factory, so every handler (console, files, test capture) sees only
the redacted text, including rendered tracebacks.
"""

import logging
import re
import traceback
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
