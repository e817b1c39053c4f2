"""The fake provider itself: loopback only, scriptable over HTTP (for docs and benchmarks in other processes)."""

from __future__ import annotations

import json
import urllib.request

import pytest

from agentvigil.testing import FakeProvider, Reply


def _post(url, payload):
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), json.loads(err.read())


def test_loopback_only():
    with pytest.raises(ValueError):
        FakeProvider(host="0.0.0.0")


def test_enqueue_over_http_and_wire_shapes(fake):
    _post(fake.url + "/_fake/enqueue", [{"status": 429, "headers": {"retry-after": "3"}},
                                        {"input_tokens": 1200, "cache_read_tokens": 1000, "cache_write_tokens": 100}])
    status, headers, body = _post(fake.openai_base_url + "/chat/completions", {"model": "m", "messages": []})
    assert status == 429 and headers["retry-after"] == "3" and body["error"]["code"] == "rate_limit_exceeded"
    status, _, body = _post(fake.anthropic_base_url + "/v1/messages", {"model": "claude", "messages": []})
    assert status == 200
    assert body["usage"] == {"input_tokens": 100, "cache_creation_input_tokens": 100,
                             "cache_read_input_tokens": 1000, "output_tokens": 5, "service_tier": "standard"}
    assert [r.path for r in fake.requests] == ["/v1/chat/completions", "/v1/messages"]


def test_anthropic_error_shape(fake):
    fake.enqueue(Reply.overloaded())
    status, _, body = _post(fake.anthropic_base_url + "/v1/messages", {"model": "claude", "messages": []})
    assert status == 529 and body["error"]["type"] == "overloaded_error"
