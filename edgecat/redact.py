"""Keep secrets inside the process: passwords in URIs and access tokens are masked wherever text leaves.

edgecat runs unattended next to cameras and its output lands in journals and log files, so a camera
password in ``rtsp://admin:s3cret@cam/live`` must never be printed or stored. Every place that shows
a URI shows :func:`redact` of it (``rtsp://admin:***@cam/live``); :class:`RedactingFilter` on the log
handlers is the safety net for anything that slips through, and :func:`register_secret` masks bare
values known to be secret (a password read from the environment, the live view's access token).
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

MASK = "***"

# scheme://user:password@host -- the password runs to the last '@' before the path, so an unencoded
# '@' inside it is masked too (FFmpeg reads such URIs the same way).
_USERINFO = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@?#]*):(?P<pw>[^\s/?#]*)@")
# ?password=...&token=... (cameras that take credentials as query parameters, the live view's token)
_SECRET_PARAMS = ("password", "passwd", "pwd", "pass", "token", "access_token", "auth", "key", "api_key",
                  "apikey", "secret", "signature", "sig")
_QUERY = re.compile(r"(?P<head>[?&;](?:%s)=)(?P<value>[^&#\s\"']+)" % "|".join(_SECRET_PARAMS), re.IGNORECASE)

_secrets: set[str] = set()
_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Mask ``value`` wherever it appears from now on (ignored when too short to be a real secret)."""
    if value and len(value) >= 4:
        with _lock:
            _secrets.add(value)


def redact(text: Any) -> str:
    """``text`` with URI passwords, secret query parameters and registered secrets replaced by ***."""
    out = str(text)
    if "://" in out:
        out = _USERINFO.sub(lambda m: f"{m.group('head')}:{MASK}@", out)
    if "=" in out:
        out = _QUERY.sub(lambda m: f"{m.group('head')}{MASK}", out)
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in out:
            out = out.replace(secret, MASK)
    return out


def redact_obj(obj: Any) -> Any:
    """A copy of a JSON-like structure with every string redacted (manifests, summaries, reports)."""
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, dict):
        return {k: redact_obj(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact_obj(v) for v in obj]
    return obj


class RedactingFilter(logging.Filter):
    """A handler filter: the formatted message and exception text of every record, redacted.

    On the handler (not a logger) so records from every library logger pass through it too.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is logging's problem, not ours
            return True
        clean = redact(message)
        if clean != message or record.args:
            record.msg, record.args = clean, ()
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            text = str(exc)
            if redact(text) != text:  # keep the traceback's shape, drop the secret from its message
                record.exc_text = None
                record.exc_info = None
                record.msg = f"{record.msg} ({type(exc).__name__}: {redact(text)})"
        return True


def install(handler: logging.Handler) -> None:
    """Add the redacting filter to ``handler`` once."""
    if not any(isinstance(f, RedactingFilter) for f in handler.filters):
        handler.addFilter(RedactingFilter())
