"""Camera credentials from the environment or a netrc file, so passwords need not be on the command line.

A command line is visible to every user of the machine (``ps``) and lands in shell history and unit
files; ``--source rtsp://cam.local/live`` plus one of these keeps the password out of all of them:

- ``EDGECAT_RTSP_USER`` / ``EDGECAT_RTSP_PASSWORD``: used for every network source without a user;
- a credentials file in netrc format (``machine cam.local login admin password s3cret``, one line per
  camera host) named by ``EDGECAT_CREDENTIALS`` (or ``--credentials FILE``); it wins over the two
  variables for the hosts it lists. Keep it mode 0600: a file others can read is refused.

Credentials written into the URI itself still work and take precedence. Either way the URI is only
ever shown through :func:`edgecat.redact.redact` (``rtsp://admin:***@cam.local/live``).
"""

from __future__ import annotations

import netrc
import os
import stat
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from edgecat.errors import EdgecatError

USER_ENV = "EDGECAT_RTSP_USER"
PASSWORD_ENV = "EDGECAT_RTSP_PASSWORD"
FILE_ENV = "EDGECAT_CREDENTIALS"


def read_credentials_file(path: str | os.PathLike[str]) -> dict[str, tuple[str, str]]:
    """host -> (user, password) from a netrc-format file that only its owner can read."""
    p = Path(path)
    try:
        mode = p.stat().st_mode
    except OSError as exc:
        raise EdgecatError(f"cannot read credentials file {p}: {exc.strerror or exc}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise EdgecatError(f"credentials file {p} is readable by other users: chmod 600 {p}")
    try:
        hosts = netrc.netrc(str(p)).hosts
    except (netrc.NetrcParseError, OSError) as exc:
        raise EdgecatError(f"credentials file {p} is not in netrc format "
                           f"('machine HOST login USER password PASSWORD'): {getattr(exc, 'msg', exc)}") from None
    out: dict[str, tuple[str, str]] = {}
    for host, (login, _account, password) in hosts.items():
        out[host] = (login or "", password or "")
    return out


def with_credentials(uri: str, credentials_file: str | None = None) -> str:
    """``uri`` with user and password filled in from the file or the environment when it has none."""
    parts = urlsplit(uri)
    if parts.username is not None or not parts.hostname:
        return uri
    user = password = None
    path = credentials_file or os.environ.get(FILE_ENV)
    if path:
        entry = read_credentials_file(path).get(parts.hostname)
        if entry:
            user, password = entry
    if user is None and os.environ.get(USER_ENV):
        user, password = os.environ[USER_ENV], os.environ.get(PASSWORD_ENV, "")
    if not user:
        return uri
    auth = quote(user, safe="") + (f":{quote(password, safe='')}" if password else "")
    return urlunsplit(parts._replace(netloc=f"{auth}@{parts.netloc}"))
