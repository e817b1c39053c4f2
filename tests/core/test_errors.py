import pytest

from agentvigil.errors import ERROR_KINDS, PROVIDER_KINDS, classify_exception, classify_status


def named(name, base=Exception, **attrs):
    return type(name, (base,), attrs)


@pytest.mark.parametrize("cls_name,kind", [
    ("RateLimitError", "rate_limit"), ("APITimeoutError", "timeout"), ("AuthenticationError", "auth"),
    ("PermissionDeniedError", "auth"), ("BadRequestError", "invalid_request"), ("NotFoundError", "not_found"),
    ("InternalServerError", "server_error"), ("OverloadedError", "server_error"), ("APIConnectionError", "network"),
    ("ReadTimeout", "timeout"), ("ConnectError", "network"), ("ContextWindowExceededError", "context_length"),
])
def test_sdk_exception_names(cls_name, kind):
    assert classify_exception(named(cls_name)("boom")) == kind


def test_subclass_of_sdk_name_is_recognised_through_the_mro():
    base = named("RateLimitError")
    sub = type("MyProxyRateLimit", (base,), {})
    assert classify_exception(sub("x")) == "rate_limit"


def test_status_on_exception_or_response():
    class Resp:
        status_code = 529
    err = named("APIStatusError")("overloaded")
    err.response = Resp()
    assert classify_exception(err) == "server_error"
    assert classify_exception(named("HTTPError", status_code=429)("x")) == "rate_limit"


def test_message_markers_beat_generic_bad_request():
    err = named("BadRequestError", status_code=400)("This model's maximum context length is 128000 tokens")
    assert classify_exception(err) == "context_length"
    assert classify_exception(named("BadRequestError")("flagged by content_filter")) == "content_filter"


def test_builtins_and_defaults():
    assert classify_exception(TimeoutError()) == "timeout"
    assert classify_exception(ConnectionResetError()) == "network"
    assert classify_exception(ValueError("x")) == "unknown"
    assert classify_exception(ValueError("x"), default="tool_error") == "tool_error"
    assert classify_exception(None) == "unknown"


def test_hostile_str_does_not_raise():
    class Evil(Exception):
        def __str__(self):
            raise RuntimeError("no")
    assert classify_exception(Evil()) in ERROR_KINDS


@pytest.mark.parametrize("status,kind", [(429, "rate_limit"), (401, "auth"), (403, "auth"), (404, "not_found"),
                                         (400, "invalid_request"), (413, "context_length"), (500, "server_error"),
                                         (503, "server_error"), (504, "timeout"), (None, "unknown")])
def test_status_table(status, kind):
    assert classify_status(status) == kind


def test_taxonomy_is_bounded_and_provider_kinds_inside_it():
    assert len(ERROR_KINDS) == 11 and PROVIDER_KINDS < set(ERROR_KINDS)
