from __future__ import annotations

import hashlib
import http.server
import logging
import socket
import threading
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import pytest

from pubmedqa_peft import fetch, stage
from pubmedqa_peft.config import IngestConfig
from pubmedqa_peft.fetch import fetch_verified, ingest, sha256_file
from pubmedqa_peft.stage import PipelineError

PAYLOAD = b'{"1": {"QUESTION": "q?"}}\n' * 50
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
UNREACHABLE = "http://127.0.0.1:9/ori_pqal.json"  # discard port: refused at once, never leaves the machine
SECRETS = ("s3cret-pw", "tok-abc123")
"""The password and the token of the credentialed sources below: never to be shown."""


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


@pytest.fixture
def source(tmp_path: Path) -> Path:
    src = tmp_path / "src" / "ori_pqal.json"
    src.parent.mkdir()
    src.write_bytes(PAYLOAD)
    return src


@pytest.fixture
def http_server() -> Iterator[str]:
    """A local HTTP server: /ori_pqal.json serves PAYLOAD, anything else is 404."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/ori_pqal.json":
                self.send_response(200)
                self.send_header("Content-Length", str(len(PAYLOAD)))
                self.end_headers()
                self.wfile.write(PAYLOAD)
            else:
                self.send_error(404, "Not Found")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_sha256_file_matches_hashlib(tmp_path: Path) -> None:
    f = tmp_path / "f.bin"
    data = bytes(range(256)) * 5000  # spans several read chunks
    f.write_bytes(data)
    assert sha256_file(f) == hashlib.sha256(data).hexdigest()


def test_local_relative_path_is_resolved_from_working_dir(
    tmp_path: Path, source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    dest = tmp_path / "out" / "raw.json"
    assert fetch_verified("src/ori_pqal.json", dest, PAYLOAD_SHA, 5, "ingest.source") == dest
    assert dest.read_bytes() == PAYLOAD
    assert leftovers(dest.parent) == ["raw.json"]


def test_file_url_and_uppercase_hash_are_accepted(tmp_path: Path, source: Path) -> None:
    dest = tmp_path / "raw.json"
    fetch_verified(source.as_uri(), dest, PAYLOAD_SHA.upper(), 5, "ingest.source")
    assert dest.read_bytes() == PAYLOAD


def test_hash_mismatch_is_refused_and_leaves_dest_unchanged(tmp_path: Path, source: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    dest = out / "raw.json"
    dest.write_bytes(b"previous good file")
    wrong = "0" * 64
    with pytest.raises(PipelineError) as err:
        fetch_verified(str(source), dest, wrong, 5, "ingest.source", sha256_key="ingest.sha256")
    msg = str(err.value)
    assert str(source) in msg and wrong in msg and PAYLOAD_SHA in msg
    assert "ingest.sha256" in msg and "ingest.source" in msg
    assert dest.read_bytes() == b"previous good file"
    assert leftovers(out) == ["raw.json"]


def test_hash_mismatch_leaves_no_file_when_dest_absent(tmp_path: Path, source: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(PipelineError, match="SHA-256 mismatch"):
        fetch_verified(str(source), out / "raw.json", "1" * 64, 5, "ingest.source")
    assert leftovers(out) == []


def test_missing_local_file_is_a_clear_error(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(PipelineError) as err:
        fetch_verified(str(tmp_path / "nope.json"), out / "raw.json", PAYLOAD_SHA, 5, "ingest.source")
    assert "not found" in str(err.value) and "nope.json" in str(err.value) and "ingest.source" in str(err.value)
    assert leftovers(out) == []


def test_directory_source_is_refused(tmp_path: Path, source: Path) -> None:
    with pytest.raises(PipelineError, match="not a regular file"):
        fetch_verified(str(source.parent), tmp_path / "raw.json", PAYLOAD_SHA, 5, "ingest.source")
    assert not (tmp_path / "raw.json").exists()


def test_unsupported_scheme_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match="unsupported scheme 'ftp'"):
        fetch_verified("ftp://example.invalid/x.json", tmp_path / "raw.json", PAYLOAD_SHA, 5, "ingest.source")
    assert leftovers(tmp_path) == []


def test_unreachable_url_tells_how_to_use_a_local_copy(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(PipelineError) as err:
        fetch_verified(UNREACHABLE, out / "ori_pqal.json", PAYLOAD_SHA, 5, "ingest.source")
    msg = str(err.value)
    assert UNREACHABLE in msg
    assert "dvc exp run -S 'ingest.source=../shared/data/pubmedqa/ori_pqal.json'" in msg
    assert "params.yaml" in msg
    assert leftovers(out) == []


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "http://user:s3cret-pw@127.0.0.1:9/ori_pqal.json?token=tok-abc123&dl=1",
            "http://***@127.0.0.1:9/ori_pqal.json?token=***&dl=***",
        ),
        # Without a port, urllib's own reason echoes the password: "nonnumeric port: 's3cret-pw@127.0.0.1'".
        (
            "http://user:s3cret-pw@127.0.0.1/ori_pqal.json?token=tok-abc123",
            "http://***@127.0.0.1/ori_pqal.json?token=***",
        ),
    ],
)
def test_unreachable_credentialed_url_is_shown_without_its_secrets(tmp_path: Path, url: str, shown: str) -> None:
    with pytest.raises(PipelineError) as err:
        fetch_verified(url, tmp_path / "ori_pqal.json", PAYLOAD_SHA, 5, "ingest.source")
    msg = str(err.value)
    assert msg.startswith(f"ingest.source: could not download {shown} (timeout 5 s): ")
    assert not [s for s in SECRETS if s in msg] and "user:" not in msg
    assert "dvc exp run -S 'ingest.source=../shared/data/pubmedqa/ori_pqal.json'" in msg
    assert leftovers(tmp_path) == []


def test_every_message_naming_the_source_redacts_it(tmp_path: Path, source: Path) -> None:
    token = "?token=tok-abc123"  # a file: URL's query is ignored when reading, but must not be shown
    missing = (tmp_path / "nope.json").as_uri()
    cases = {
        f"{source.as_uri()}{token}": f"SHA-256 mismatch for {source.as_uri()}?token=***\n",
        f"{missing}{token}": f"local file '{missing}?token=***' not found",
        f"ftp://user:s3cret-pw@example.invalid/x.json{token}": "'ftp://***@example.invalid/x.json?token=***'; use",
    }
    for url, shown in cases.items():
        with pytest.raises(PipelineError) as err:
            fetch_verified(url, tmp_path / "out" / "raw.json", "0" * 64, 5, "ingest.source")
        assert shown in str(err.value)
        assert not [s for s in SECRETS if s in str(err.value)]
    assert leftovers(tmp_path / "out") == []


def test_ingest_log_shows_the_source_redacted(tmp_path: Path, source: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="pubmedqa_peft.fetch"):
        ingest(IngestConfig(source=f"{source.as_uri()}?token=tok-abc123", sha256=PAYLOAD_SHA), tmp_path / "raw.json")
    (line,) = [r.getMessage() for r in caplog.records if r.name == "pubmedqa_peft.fetch"]
    assert line.startswith(f"ingest: {source.as_uri()}?token=*** -> ")


@pytest.mark.parametrize(
    ("prefix", "host"),
    [
        ("file://otherhost", "otherhost"),
        ("file://localhost:8080", "localhost:8080"),
        ("file://u:s3cret-pw@localhost", "***@localhost"),
    ],
)
def test_file_url_naming_a_host_is_refused(tmp_path: Path, source: Path, prefix: str, host: str) -> None:
    # The path exists on this machine, so reading it instead would silently "work".
    url = f"{prefix}{source}"
    with pytest.raises(PipelineError) as err:
        fetch_verified(url, tmp_path / "out" / "raw.json", PAYLOAD_SHA, 5, "ingest.source")
    shown = url.replace("u:s3cret-pw@", "***@")
    assert str(err.value) == (
        f"ingest.source: '{shown}' names host '{host}', but a file:// URL can only read this machine's files; "
        "use a plain local path or file:///abs/path"
    )
    assert leftovers(tmp_path / "out") == []


@pytest.mark.parametrize("prefix", ["file://", "file://localhost", "FILE://LocalHost"])
def test_file_url_with_no_host_or_localhost_is_read(tmp_path: Path, source: Path, prefix: str) -> None:
    dest = tmp_path / "raw.json"
    fetch_verified(f"{prefix}{source}", dest, PAYLOAD_SHA, 5, "ingest.source")
    assert dest.read_bytes() == PAYLOAD


def test_dns_failure_is_reported_as_such(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_dns(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError(socket.gaierror(-3, "Temporary failure in name resolution"))

    monkeypatch.setattr(fetch.urllib.request, "urlopen", no_dns)
    with pytest.raises(PipelineError, match="could not be resolved") as err:
        fetch_verified(
            "https://example.invalid/data/test_ground_truth.json",
            tmp_path / "t.json",
            PAYLOAD_SHA,
            5,
            "split.official_test_ids",
        )
    assert "split.official_test_ids=../shared/data/pubmedqa/test_ground_truth.json" in str(err.value)
    assert leftovers(tmp_path) == []


def test_download_over_http(tmp_path: Path, http_server: str) -> None:
    dest = tmp_path / "raw.json"
    fetch_verified(f"{http_server}/ori_pqal.json", dest, PAYLOAD_SHA, 5, "ingest.source")
    assert dest.read_bytes() == PAYLOAD


def test_http_error_names_the_status(tmp_path: Path, http_server: str) -> None:
    with pytest.raises(PipelineError, match="HTTP 404"):
        fetch_verified(f"{http_server}/missing.json", tmp_path / "raw.json", PAYLOAD_SHA, 5, "ingest.source")
    assert leftovers(tmp_path) == []


def test_timeout_is_reported(tmp_path: Path) -> None:
    # A server that accepts the connection but never answers.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/ori_pqal.json"
        with pytest.raises(PipelineError, match="timed out"):
            fetch_verified(url, tmp_path / "raw.json", PAYLOAD_SHA, 0.3, "ingest.source")
    assert leftovers(tmp_path) == []


def test_ingest_logs_source_bytes_and_hash(tmp_path: Path, source: Path, caplog: pytest.LogCaptureFixture) -> None:
    dest = tmp_path / "data" / "raw" / "ori_pqal.json"
    with caplog.at_level(logging.INFO, logger="pubmedqa_peft.fetch"):
        ingest(IngestConfig(source=str(source), sha256=PAYLOAD_SHA), dest)
    assert dest.read_bytes() == PAYLOAD
    lines = [r.getMessage() for r in caplog.records if r.name == "pubmedqa_peft.fetch"]
    assert len(lines) == 1
    assert str(source) in lines[0] and str(len(PAYLOAD)) in lines[0] and PAYLOAD_SHA in lines[0]


def test_ingest_stage_exits_1_with_message_and_no_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from stages import ingest as ingest_stage

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(stage, "setup_logging", lambda *a, **k: None)
    (tmp_path / "params.yaml").write_text(f"ingest:\n  source: {UNREACHABLE}\n  timeout_s: 5\n")
    with pytest.raises(SystemExit) as exit_info:
        ingest_stage.main()
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: stage ingest: ingest.source: could not download")
    assert "Traceback" not in err
    assert not (tmp_path / "data" / "raw" / "ori_pqal.json").exists()
    assert leftovers(tmp_path / "data" / "raw") == []


def test_ingest_takes_a_generated_pqaa_file_with_its_printed_hash(tmp_path: Path, shared_data: Path) -> None:
    from pubmedqa_peft.large_data import write_pqaa

    raw = tmp_path / "pqaa" / "ori_pqaa.json"
    sha = write_pqaa(raw, 200, 0, shared_data / "ori_pqal.json")
    dest = ingest(IngestConfig(source=str(raw), sha256=sha), tmp_path / "data" / "raw" / "ori_pqal.json")
    assert dest.read_bytes() == raw.read_bytes()
    with pytest.raises(PipelineError, match=r"ingest\.sha256"):
        ingest(IngestConfig(source=str(raw), sha256=sha256_file(shared_data / "ori_pqal.json")), dest)
