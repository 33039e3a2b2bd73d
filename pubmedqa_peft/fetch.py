"""Getting input files: download or copy a source, and refuse it unless its SHA-256 matches.

A source is an ``http(s)://`` URL, a ``file://`` URL or a local path. Local paths are
resolved from the working directory, which for every stage is the project root. A
``file://`` URL must name no host or ``localhost``: this machine cannot read another
host's files, and reading the local path of ``file://otherhost/x`` instead would be
silently wrong. The bytes are streamed into a temporary file beside the destination and
only renamed onto it once the hash matches, so a failed or refused fetch never leaves a
partial file. Messages and logs show a source through
:func:`~pubmedqa_peft.redaction.redact_url`, so credentials in it are never printed.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from pubmedqa_peft import files, paths
from pubmedqa_peft.config import IngestConfig
from pubmedqa_peft.redaction import redact_secrets, redact_url
from pubmedqa_peft.stage import PipelineError

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
USER_AGENT = "pubmedqa-peft (+https://github.com/pubmedqa/pubmedqa)"

EXAMPLE_LOCAL_DIR = "../shared/data/pubmedqa"
"""Where the offline hint says a local copy might be; only used in error messages."""


def sha256_file(path: Path | str) -> str:
    """SHA-256 of a file's bytes, read in chunks.

    Args:
        path: The file to hash.

    Returns:
        The lowercase hex digest.
    """
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _is_url(source: str) -> bool:
    scheme = urllib.parse.urlsplit(source).scheme
    # A one-letter "scheme" is a Windows drive (C:\data\x.json), i.e. a local path.
    return len(scheme) > 1


LOCAL_FILE_HOSTS = ("", "localhost")
"""The hosts a ``file://`` URL may name (RFC 8089): none, or this machine by name."""


def _file_url_path(source: str, what: str) -> Path:
    """The local path of a ``file:`` URL; a URL naming another host is refused."""
    parts = urllib.parse.urlsplit(source)
    if parts.netloc.lower() not in LOCAL_FILE_HOSTS:
        shown = redact_url(source)
        raise PipelineError(
            f"{what}: {shown!r} names host {urllib.parse.urlsplit(shown).netloc!r}, but a file:// URL can only "
            "read this machine's files; use a plain local path or file:///abs/path"
        )
    return Path(urllib.request.url2pathname(parts.path))


def _offline_hint(source: str, what: str) -> str:
    name = PurePosixPath(urllib.parse.urlsplit(source).path).name or "FILE"
    example = f"{EXAMPLE_LOCAL_DIR}/{name}"
    return (
        f"If this machine is offline or the URL is blocked, point {what} at a local copy of the file "
        f"(same bytes, so the expected sha256 stays the same), e.g.\n"
        f"    dvc exp run -S '{what}={example}'\n"
        f"or set {what}: {example} in params.yaml and run `dvc repro`."
    )


def _network_reason(err: BaseException) -> str:
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    if isinstance(err, urllib.error.URLError):
        reason = err.reason
        if isinstance(reason, socket.gaierror):
            return f"host name could not be resolved ({reason})"
        if isinstance(reason, TimeoutError | socket.timeout):
            return "timed out"
        return str(reason)
    if isinstance(err, TimeoutError | socket.timeout):
        return "timed out"
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__


def _url_chunks(source: str, timeout_s: float, what: str) -> Iterator[bytes]:
    """Yield the body of ``source``; every network failure becomes a PipelineError."""
    request = urllib.request.Request(source, headers={"User-Agent": USER_AGENT})
    try:
        # timeout_s bounds each blocking socket operation (connect, each read), not the
        # whole download, so a slow but live connection is not cut off.
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            while chunk := response.read(CHUNK_BYTES):
                yield chunk
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
        # The reason can echo parts of the URL (e.g. "nonnumeric port: 'pass@host'").
        reason = redact_secrets(_network_reason(err), source)
        raise PipelineError(
            f"{what}: could not download {redact_url(source)} (timeout {timeout_s:g} s): {reason}.\n"
            + _offline_hint(source, what)
        ) from None


def _file_chunks(path: Path, source: str, what: str) -> Iterator[bytes]:
    """Yield the bytes of ``path`` (given as ``source``); a missing or unreadable file is a PipelineError."""
    resolved = path if path.is_absolute() else Path.cwd() / path
    if not path.exists():
        raise PipelineError(
            f"{what}: local file {redact_url(source)!r} not found (looked at {resolved}); relative paths are "
            f"resolved from the project root. Fix {what} in params.yaml."
        )
    if not path.is_file():
        raise PipelineError(f"{what}: {redact_url(source)!r} ({resolved}) is not a regular file")
    try:
        with path.open("rb") as fh:
            yield from iter(lambda: fh.read(CHUNK_BYTES), b"")
    except OSError as err:
        raise PipelineError(f"{what}: could not read {resolved}: {err.strerror or err}") from None


def fetch_verified(
    source: str,
    dest: Path,
    sha256: str,
    timeout_s: float,
    what: str,
    *,
    sha256_key: str | None = None,
) -> Path:
    """Download or copy ``source`` to ``dest``, keeping it only if its SHA-256 matches.

    Args:
        source: An ``http(s)://`` or ``file://`` URL, or a local path (relative paths are
            resolved from the working directory, i.e. the project root).
        dest: Where the verified file is written (atomically).
        sha256: Expected lowercase hex SHA-256 of the file.
        timeout_s: Network timeout in seconds for each connect/read of a URL.
        what: The parameter that named the source (e.g. ``ingest.source``), for messages.
        sha256_key: The parameter holding ``sha256`` (e.g. ``ingest.sha256``), for messages.

    Returns:
        ``dest``.

    Raises:
        PipelineError: If the source is unreachable, missing or unsupported (including a
            ``file://`` URL naming a host other than ``localhost``), or its hash differs
            from ``sha256``. ``dest`` is then left exactly as it was. Messages show the
            source through :func:`~pubmedqa_peft.redaction.redact_url`.
    """
    dest = Path(dest)
    sha256 = sha256.lower()
    if _is_url(source):
        scheme = urllib.parse.urlsplit(source).scheme.lower()
        if scheme in ("http", "https"):
            chunks = _url_chunks(source, timeout_s, what)
        elif scheme == "file":
            chunks = _file_chunks(_file_url_path(source, what), source, what)
        else:
            raise PipelineError(
                f"{what}: unsupported scheme {scheme!r} in {redact_url(source)!r}; "
                "use http(s)://, file:// or a local path"
            )
    else:
        chunks = _file_chunks(Path(source).expanduser(), source, what)

    with files.atomic_path(dest) as tmp:
        digest = hashlib.sha256()
        try:
            with tmp.open("wb") as out:
                for chunk in chunks:
                    digest.update(chunk)
                    out.write(chunk)
        except OSError as err:
            # Reading errors are already PipelineErrors; an OSError here is the write side.
            raise PipelineError(f"could not write {dest}: {err.strerror or err}") from None
        actual = digest.hexdigest()
        if actual != sha256:
            key = sha256_key or "the matching sha256 parameter"
            raise PipelineError(
                f"{what}: SHA-256 mismatch for {redact_url(source)}\n"
                f"    expected {sha256}\n"
                f"    actual   {actual}\n"
                f"The file is not the one the pipeline expects. Fix it by pointing {what} at the correct "
                f"file (or re-downloading it), or, if you really mean to use this file, set {key} to "
                f"{actual} in params.yaml."
            )
    return dest


def ingest(cfg: IngestConfig, dest: Path = paths.RAW_RECORDS) -> Path:
    """The ingest stage's work: fetch the raw PQA-L file and verify its hash.

    Args:
        cfg: The ``ingest`` section (source, expected sha256, timeout).
        dest: Where the raw file goes.

    Returns:
        ``dest``.

    Raises:
        PipelineError: As :func:`fetch_verified`.
    """
    fetch_verified(cfg.source, dest, cfg.sha256, cfg.timeout_s, "ingest.source", sha256_key="ingest.sha256")
    log.info("ingest: %s -> %s (%d bytes, sha256 %s)", redact_url(cfg.source), dest, dest.stat().st_size, cfg.sha256)
    return dest
