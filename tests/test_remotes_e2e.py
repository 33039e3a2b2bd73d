"""End to end with real ``dvc``: push to a remote, pull in fresh clones, nothing reruns.

The round trip is what a user does to move trained adapters between machines: after a run,
``dvc push``; in a fresh ``git clone`` elsewhere, ``dvc pull``; then ``dvc status`` is clean,
``dvc repro`` runs no stage and ``dvc metrics show`` prints the same numbers. It runs against
the default local remote shipped in ``.dvc/config`` and against an S3 bucket on a moto
server bound to 127.0.0.1 (through the ``dvc-s3`` plugin).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path

import pytest
from e2e_support import dvc, git, status

pytestmark = pytest.mark.e2e

# Where `url = ../../pubmedqa-peft-remote` in .dvc/config points: beside the project folder.
DEFAULT_REMOTE_NAME = "pubmedqa-peft-remote"
BUCKET = "pubmedqa-peft"
FAKE_KEY, FAKE_SECRET = "e2e-access-key", "e2e-secret-key"


def _clone_sharing_cache(src: Path, dest: Path) -> Path:
    """A working copy of ``src`` whose DVC cache is ``src``'s, outputs checked out (the machine that ran)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    git(src.parent, "clone", "-q", str(src), str(dest))
    dvc(dest, "cache", "dir", "--local", str(src / ".dvc" / "cache"))
    dvc(dest, "checkout")
    return dest


def _fresh_clone(src: Path, dest: Path) -> Path:
    """A plain ``git clone``: no outputs, its own empty DVC cache (another machine)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    git(src.parent, "clone", "-q", str(src), str(dest))
    assert not (dest / "models" / "lora").exists() and not (dest / ".dvc" / "cache").exists()
    return dest


def _digest(root: Path, rel: str) -> dict[str, str]:
    base = root / rel
    return {
        str(p.relative_to(base)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(base.rglob("*"))
        if p.is_file()
    }


def _assert_restored_without_rerun(clone: Path, reference: Path) -> None:
    """Everything pulled, nothing stale, nothing reruns, same metrics and adapters as ``reference``."""
    assert status(clone) == {}
    out = dvc(clone, "repro").stdout
    assert "Running stage" not in out and "Data and pipelines are up to date" in out, out
    assert dvc(clone, "metrics", "show").stdout == dvc(reference, "metrics", "show").stdout
    assert dvc(clone, "metrics", "show", "--json").stdout == dvc(reference, "metrics", "show", "--json").stdout
    for out_dir in ("models", "data"):
        assert _digest(clone, out_dir) == _digest(reference, out_dir), out_dir
    assert git(clone, "status", "--porcelain") == ""  # nothing the round trip wrote shows up in git


def test_local_remote_round_trip_in_two_fresh_clones(pipeline_repo, tmp_path):
    laptop = tmp_path / "laptop"
    origin = _clone_sharing_cache(pipeline_repo, laptop / "project")
    remote = laptop / DEFAULT_REMOTE_NAME
    assert dvc(origin, "config", "core.remote").stdout.strip() == "local"
    assert f"url = ../../{DEFAULT_REMOTE_NAME}" in (origin / ".dvc" / "config").read_text()
    assert dvc(origin, "config", "remote.local.url").stdout.strip() == str(remote)  # resolved from .dvc/
    assert not remote.exists()

    dvc(origin, "push")
    assert any((remote / "files" / "md5").rglob("*"))

    # A clone beside the project finds the remote through the committed relative url...
    beside = _fresh_clone(origin, laptop / "second-checkout")
    dvc(beside, "pull")
    _assert_restored_without_rerun(beside, pipeline_repo)

    # ...a clone elsewhere points the same remote at the folder in its own, untracked config.
    elsewhere = _fresh_clone(origin, tmp_path / "other-machine" / "work" / "project")
    assert dvc(elsewhere, "pull", check=False).returncode != 0  # ../../pubmedqa-peft-remote is not there
    dvc(elsewhere, "remote", "modify", "--local", "local", "url", str(remote))
    dvc(elsewhere, "pull")
    _assert_restored_without_rerun(elsewhere, pipeline_repo)


@pytest.fixture
def s3_endpoint():
    """An S3-compatible server (moto) on 127.0.0.1 with an empty bucket, stopped after the test."""
    try:
        import boto3
        from moto.server import ThreadedMotoServer
    except ImportError as err:
        pytest.skip(f"cannot start the S3 test server: moto[server]/boto3 not importable ({err})")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    # start() waits for the server forever if it fails to bind; bound the wait.
    starter = threading.Thread(target=server.start, daemon=True)
    starter.start()
    starter.join(timeout=30)
    if starter.is_alive():
        pytest.skip("cannot start the S3 test server: moto did not listen on 127.0.0.1 within 30 s")
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    s3 = boto3.client(
        "s3", endpoint_url=url, aws_access_key_id=FAKE_KEY, aws_secret_access_key=FAKE_SECRET, region_name="us-east-1"
    )
    s3.create_bucket(Bucket=BUCKET)
    yield url, s3
    server.stop()


def _s3_credentials(repo: Path, url: str) -> None:
    """Endpoint and credentials go to .dvc/config.local (git-ignored), never to .dvc/config."""
    for key, value in (
        ("endpointurl", url),
        ("access_key_id", FAKE_KEY),
        ("secret_access_key", FAKE_SECRET),
        ("region", "us-east-1"),
    ):
        dvc(repo, "remote", "modify", "--local", "s3", key, value)


def test_s3_remote_round_trip_against_a_loopback_server(pipeline_repo, tmp_path, s3_endpoint):
    url, s3 = s3_endpoint
    origin = _clone_sharing_cache(pipeline_repo, tmp_path / "gpu-box" / "project")
    dvc(origin, "remote", "add", "s3", f"s3://{BUCKET}/dvc-cache")
    git(origin, "commit", "-q", "-m", "S3 remote", ".dvc/config")
    _s3_credentials(origin, url)
    config = (origin / ".dvc" / "config").read_text()
    assert f"s3://{BUCKET}/dvc-cache" in config and FAKE_SECRET not in config and url not in config

    dvc(origin, "push", "-r", "s3")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    assert keys and all(k.startswith("dvc-cache/files/md5/") for k in keys)

    fresh = _fresh_clone(origin, tmp_path / "laptop" / "project")
    _s3_credentials(fresh, url)
    dvc(fresh, "pull", "-r", "s3")
    _assert_restored_without_rerun(fresh, pipeline_repo)
