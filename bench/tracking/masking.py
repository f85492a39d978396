"""Credentials out of everything bench prints, logs or reports.

Each URL found in a text is parsed by SQLAlchemy (``make_url``) and, when it holds a password
(``scheme://user:pw@host``) or a secret query value (``?password=...``), rendered again with
``***`` in its place. A URL with nothing to hide is left exactly as written.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from sqlalchemy.engine import make_url

# Where a URL sits in free text (a log line, an exception message); SQLAlchemy parses each one.
_URL_IN_TEXT = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s'\"<>]+", re.I)
_SECRET_QUERY_KEYS = ("password", "passwd", "pwd", "secret", "token")
_HIDDEN = "__bench_hidden__"
MASK = "***"


def redact(text: str) -> str:
    """``postgresql://user:secret@host/db?password=x`` -> ``postgresql://user:***@host/db?password=***``."""
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), str(text))


def redact_url(url: str) -> str:
    try:
        parsed = make_url(url)
    except Exception:  # not a URL SQLAlchemy reads: nothing we can tell apart in it
        return url
    secret_keys = [k for k in parsed.query if any(s in k.lower() for s in _SECRET_QUERY_KEYS)]
    if parsed.password is None and not secret_keys:
        return url
    if secret_keys:
        parsed = parsed.update_query_dict({k: _HIDDEN for k in secret_keys})
    return parsed.render_as_string(hide_password=True).replace(quote(_HIDDEN), MASK).replace(_HIDDEN, MASK)
