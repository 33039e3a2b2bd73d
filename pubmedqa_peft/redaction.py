"""Hiding the secrets a source URL can carry before it is shown or written down.

A source may be given as ``https://user:pass@host/path?token=abc``. Everything that shows
a source (error messages, logs, the provenance in metrics files, which are committed)
shows :func:`redact_url` of it instead: ``https://***@host/path?token=***``.

What counts as secret: the whole userinfo (user name and password) and every query value;
query keys stay, so a reader still sees which parameters were given. Scheme, host, port,
path and fragment stay: they are what a reader needs to find the source. Local paths are
never changed.
"""

from __future__ import annotations

import re
import urllib.parse

REDACTED = "***"

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+:")
"""A URL scheme of two or more characters; one letter is a Windows drive (``C:\\data``),
the same rule by which :mod:`pubmedqa_peft.fetch` tells URLs from local paths."""


def _redact_query(query: str) -> str:
    # Split by hand rather than parse_qsl + urlencode, so that keys keep their exact
    # spelling. A bare item (no "=") cannot be told from a bare token, so it is hidden.
    items = (item.partition("=") for item in query.split("&"))
    return "&".join(f"{key}={REDACTED}" if sep else REDACTED for key, sep, _value in items)


def redact_url(source: str) -> str:
    """A source as it may be shown: userinfo and query values replaced by ``***``.

    Args:
        source: A URL or a local path (a path is returned unchanged).

    Returns:
        ``source`` with the userinfo replaced by ``***`` (``https://***@host/...``) and
        every query value too (``?token=***&dl=***``; a bare item without ``=`` becomes
        ``***``). A URL that cannot be parsed keeps only its scheme (``https:***``). A
        source with nothing to hide is returned exactly as given.
    """
    scheme = _SCHEME.match(source)
    if scheme is None:
        return source
    try:
        parts = urllib.parse.urlsplit(source)
    except ValueError:  # e.g. an unclosed IPv6 bracket: nothing in it can be trusted to be harmless
        return f"{scheme.group()}{REDACTED}"
    netloc, query = parts.netloc, parts.query
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rpartition('@')[2]}"
    if query:
        query = _redact_query(query)
    if (netloc, query) == (parts.netloc, parts.query):
        return source
    return parts._replace(netloc=netloc, query=query).geturl()


def redact_secrets(text: str, source: str) -> str:
    """``text`` with the secrets of URL ``source`` (those :func:`redact_url` hides) replaced by ``***``.

    For text that is not ours and may echo pieces of the URL, such as the reason of a
    network error (``nonnumeric port: 'pass@host'``). A secret is replaced where it
    stands with its URL delimiter, as a library echoes it: a userinfo or password before
    ``@``, a query value after ``=``, a bare query item after ``?`` or ``&``; so a query
    value like ``1`` does not mangle ``127.0.0.1`` elsewhere in the text.

    Args:
        text: The message.
        source: The URL whose secrets must not appear (a local path has none).

    Returns:
        ``text`` with the secrets replaced.
    """
    if _SCHEME.match(source) is None:
        return text
    text = text.replace(source, redact_url(source))
    try:
        parts = urllib.parse.urlsplit(source)
    except ValueError:
        return text
    echoes: set[tuple[str, str]] = set()  # (as echoed, replacement)
    userinfo = parts.netloc.rpartition("@")[0]
    for secret in {userinfo, userinfo.partition(":")[2]} - {""}:
        echoes.add((f"{secret}@", f"{REDACTED}@"))
    for item in parts.query.split("&") if parts.query else ():
        key, sep, value = item.partition("=")
        if sep and value:
            echoes.add((f"={value}", f"={REDACTED}"))
        elif not sep:
            echoes |= {(f"{delim}{key}", f"{delim}{REDACTED}") for delim in "?&"}
    # Decoded forms too, in case a library unquotes before echoing.
    echoes |= {(urllib.parse.unquote_plus(raw), new) for raw, new in echoes}
    for raw, new in sorted(echoes, key=lambda pair: len(pair[0]), reverse=True):  # "user:pass@" before "pass@"
        text = text.replace(raw, new)
    return text
