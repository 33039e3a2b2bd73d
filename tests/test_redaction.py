from __future__ import annotations

import json

import pytest

from pubmedqa_peft.config import IngestConfig, ModelConfig
from pubmedqa_peft.provenance import provenance
from pubmedqa_peft.redaction import redact_secrets, redact_url

PQAL = "https://raw.githubusercontent.com/pubmedqa/pubmedqa/master/data/ori_pqal.json"


@pytest.mark.parametrize(
    ("source", "shown"),
    [
        ("https://user:pass@host/path?token=abc", "https://***@host/path?token=***"),
        ("https://user@host:8443/p?a=1&b=&flag", "https://***@host:8443/p?a=***&b=***&***"),
        ("https://host/p?token=abc#section", "https://host/p?token=***#section"),
        ("file:///data/x.json?token=abc", "file:///data/x.json?token=***"),
        ("http://[::1/x?token=abc", "http:***"),  # unparseable: only the scheme is left
        (PQAL, PQAL),
        ("../shared/data/pubmedqa/ori_pqal.json", "../shared/data/pubmedqa/ori_pqal.json"),
        ("C:\\data\\x.json?y=1", "C:\\data\\x.json?y=1"),  # a Windows path, not a URL
        ("google/flan-t5-small", "google/flan-t5-small"),
    ],
)
def test_redact_url_hides_userinfo_and_query_values(source: str, shown: str) -> None:
    assert redact_url(source) == shown


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        ("nonnumeric port: 'pw@127.0.0.1'", "nonnumeric port: '***@127.0.0.1'"),
        (
            "can't contain control characters. '/x?dl=1&token=abc'",
            "can't contain control characters. '/x?dl=***&token=***'",
        ),
        ("bad URL http://user:pw@127.0.0.1/x?dl=1&token=abc", "bad URL http://***@127.0.0.1/x?dl=***&token=***"),
        ("[Errno 111] Connection refused by 127.0.0.1", "[Errno 111] Connection refused by 127.0.0.1"),
    ],
)
def test_redact_secrets_hides_echoed_pieces_and_nothing_else(text: str, redacted: str) -> None:
    assert redact_secrets(text, "http://user:pw@127.0.0.1/x?dl=1&token=abc") == redacted


def test_provenance_redacts_url_valued_params() -> None:
    ingest = IngestConfig(source="https://user:s3cret-pw@host/path/ori_pqal.json?token=tok-abc123")
    prov = provenance(ingest=ingest, model=ModelConfig())
    assert prov["config"]["ingest"] == ingest.model_dump(mode="json") | {
        "source": "https://***@host/path/ori_pqal.json?token=***"
    }
    assert prov["config"]["model"] == ModelConfig().model_dump(mode="json")
    text = json.dumps(prov)
    assert "s3cret-pw" not in text and "tok-abc123" not in text
