"""Credentials out of everything bench prints, logs or reports: ``redact(text)``.

Plain text in, the same text out with each secret replaced by ``***``. Found wherever they sit in
the text (a log line, an exception message, a tag, a page), by pattern, not by parsing: a URL no
parser accepts still has its password taken out.

- **URL userinfo**, any scheme (``postgresql://``, ``mlflow-artifacts://``, ``my-db://``, ...):
  ``scheme://user:secret@host/path`` -> ``scheme://user:***@host/path``. The password runs from the
  first ``:`` after the user to the *last* ``@`` before the next whitespace, so a raw ``@`` or ``/``
  in it hides all of it; a URL whose path also holds an ``@`` after a password loses more than the
  password, never less. A user without a password (``postgresql://bench@db/optuna``) is no secret.
- **Query parameters** (``?name=value`` / ``&name=value``) whose name, split into words at
  ``_ - .`` and camelCase, has a word in :data:`QUERY_SECRET_WORDS` (``password``, ``passwd``,
  ``pwd``, ``pass``, ``passphrase``, ``secret``, ``token``, ``key``, ``apikey``, ``signature``,
  ``sig``, ``credential(s)``, ``auth``, ``authorization``) or, run together, contains one of
  :data:`SECRET_FRAGMENTS` (``password``, ``passwd``, ``secret``, ``token``, ``apikey``,
  ``accesskey``, ``privatekey``, ``signature``, ``credential``, ``authorization``). So
  ``api_key``, ``apiKey``, ``api-key``, ``access_key``, ``client_secret``, ``X-Amz-Signature``,
  ``X-Amz-Security-Token``, ``sig`` (Azure SAS) and ``key`` (Google API keys) are masked;
  ``sort``, ``page``, ``sslmode`` are not. The value runs to the next ``&``, ``#`` or whitespace.
- **key=value pairs in free text**, as in libpq connection strings (``host=h user=u
  password=secret``, ``password='se cret'`` with libpq's quoting) and log lines: a name containing
  one of :data:`SECRET_FRAGMENTS`, or equal to ``pwd`` / ``passwd``. The short words (``key``,
  ``sig``, ``auth``, ``pass``) count only inside a query string: in prose ``key=val_acc`` is no
  secret. Quoted mappings (``"password": "x"``, ``'token': 'x'``) are masked the same way.
- **HTTP authorization** text: ``Authorization: Basic ...`` / ``Bearer ...``.

An unquoted value keeps a closing quote, bracket or sentence punctuation that ends the text around
it outside the mask (they would be percent-encoded inside a real URL or password). Text with
nothing to hide comes back exactly as written.
"""

from __future__ import annotations

import logging
import re
import traceback

MASK = "***"

QUERY_SECRET_WORDS = frozenset({
    "password", "passwd", "pwd", "pass", "passphrase", "secret", "token", "key", "apikey", "signature", "sig",
    "credential", "credentials", "auth", "authorization",
})
SECRET_FRAGMENTS = ("password", "passwd", "secret", "token", "apikey", "accesskey", "privatekey", "signature",
                    "credential", "authorization")
_FREE_TEXT_WORDS = frozenset({"pwd", "passwd"})

# scheme://user: , not inside a longer run of scheme characters (so each character is scanned once).
# The user may hold an "@" itself (``bench@server``, as some hosted PostgreSQL services name users).
_SCHEME_USER = re.compile(r"(?<![a-z0-9+.\-])[a-z][a-z0-9+.\-]*://[^\s:/?#]*:", re.I)
_TOKEN = re.compile(r"\S+")
# What may close the text around an unquoted value (a quote, a bracket, a full stop): kept outside the mask.
# Bounded, so a long run of them costs no more than a short one.
_CLOSE = r"""['")\]}>,;.!]{0,4}(?:\s|$)"""
_QUERY_PAIR = re.compile(r"(?P<head>[?&](?P<name>[A-Za-z0-9_.\-]+)=)(?P<secret>[^&#\s]+?)(?=[&#]|" + _CLOSE + ")")
_FREE_PAIR = re.compile(
    r"(?P<head>(?<![\w.\-?&])(?P<name>[A-Za-z][A-Za-z0-9_.\-]*)\s*=\s*)"
    # libpq quoting: '...' with \' and \\ inside; unquoted, a backslash escapes the next character (a space too).
    r"(?P<secret>'(?:[^'\\]|\\.)*'?|\"(?:[^\"\\]|\\.)*\"?|(?:\\.|[^\s'\"\\])(?:\\.|[^\s\\])*?(?=" + _CLOSE + "))"
)
_QUOTED_PAIR = re.compile(r"""(?P<head>(?P<q>["'])(?P<name>[A-Za-z][A-Za-z0-9_.\-]*)(?P=q)\s*:\s*)"""
                          r"""(?P<secret>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')""")
_AUTHORIZATION = re.compile(r"(?P<head>\b(?:proxy-)?authorization\s*[:=]\s*(?:(?:basic|bearer|token|digest)\s+)?)"
                            r"(?P<secret>[^\s'\",]+)", re.I)
_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")


def redact(text: object) -> str:
    """``text`` as a string with every credential it holds replaced by ``***`` (see the module's list).

    ``postgresql://bench:pw@db/optuna?sslpassword=x`` -> ``postgresql://bench:***@db/optuna?sslpassword=***``;
    ``host=db user=bench password='se cret'`` -> ``host=db user=bench password=***``.
    """
    text = str(text)
    if not text:
        return text
    text = _TOKEN.sub(_mask_userinfo, text)
    text = _QUERY_PAIR.sub(lambda m: _masked(m, secret_name(m["name"], query=True)), text)
    text = _FREE_PAIR.sub(_free_pair, text)
    text = _QUOTED_PAIR.sub(lambda m: _masked(m, secret_name(m["name"], query=False), quote=m["q"]), text)
    return _AUTHORIZATION.sub(lambda m: f"{m['head']}{MASK}", text)


def _mask_userinfo(token: re.Match) -> str:
    """One whitespace-free run of text: from its first ``scheme://user:`` to its last ``@`` is a password."""
    text = token.group(0)
    at = text.rfind("@")
    head = _SCHEME_USER.search(text, 0, at) if at > 0 else None
    return text if head is None else f"{text[:head.end()]}{MASK}{text[at:]}"


def secret_name(name: str, *, query: bool) -> bool:
    """Whether a parameter called ``name`` holds a secret; ``query``: it is in a URL's query string."""
    words = [w.lower() for w in _WORDS.findall(name)]
    compact = "".join(words)
    if any(fragment in compact for fragment in SECRET_FRAGMENTS):
        return True
    return bool(set(words) & (QUERY_SECRET_WORDS if query else _FREE_TEXT_WORDS))


def _free_pair(match: re.Match) -> str:
    """``name=value``: the value masked when the name is a secret's; a quoted value of another name
    (``dsn='host=db password=x'``) is a text of its own, masked inside."""
    if secret_name(match["name"], query=False):
        return _masked(match, True)
    value = match["secret"]
    if len(value) >= 2 and value[0] in "'\"" and value[-1] == value[0]:
        return f"{match['head']}{value[0]}{redact(value[1:-1])}{value[0]}"
    return match.group(0)


def _masked(match: re.Match, secret: bool, quote: str = "") -> str:
    if not secret or match["secret"].strip("'\"") == MASK:
        return match.group(0)
    return f"{match['head']}{quote}{MASK}{quote}"


def mask_record(record: logging.LogRecord) -> logging.LogRecord:
    """Mask a log record in place: its message, and the traceback or stack it carries.

    The message is rendered once here (``msg % args``), so a secret passed as an argument is caught
    too; the traceback is rendered now, masked, and kept as ``exc_text``, which formatters print as is.
    """
    try:
        message = record.getMessage()
    except Exception:  # a malformed record: logging reports it itself when it formats it
        return record
    masked = redact(message)
    if masked != message:
        record.msg, record.args = masked, None
    if record.exc_info and not record.exc_text:
        record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)).rstrip("\n"))
    elif record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    return record

