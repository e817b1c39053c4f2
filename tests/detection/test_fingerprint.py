import agentvigil
from agentvigil.fingerprint import EMPTY, similarity


def fp(value):
    return agentvigil.result_fingerprint(value)


def test_none_and_empty():
    assert fp(None) is None
    assert fp("") == EMPTY
    assert fp("  \n\t") == EMPTY


def test_numbers_hex_timestamps_addresses_are_masked():
    a = fp("build 2024-05-01T12:00:01Z pid 1234 commit 3fa9c2e1b7 at 0x7ffd1a2b ip 10.0.0.1:8080 took 3.25s")
    b = fp("build 2025-11-30T23:59:59Z pid 98 commit aa01ff93c4 at 0x55d0cafe ip 192.168.1.20:443 took 0.5s")
    assert a == b
    assert fp("request 550e8400-e29b-41d4-a716-446655440000 done") == fp(
        "request 123e4567-e89b-12d3-a456-426614174000 done")


def test_similar_outputs_are_near_and_unrelated_far():
    base = "\n".join(f"def handler_{chr(97 + i % 26)}(request): return render(request, 'page.html')"
                     for i in range(60))
    edited = base.replace("handler_c(request)", "handler_c(req)", 1)
    other = "Traceback (most recent call last): ImportError: cannot import name 'widget' from 'ui.kit'"
    assert similarity(fp(base), fp(edited)) >= 0.8
    assert similarity(fp(base), fp(other)) < 0.75
    assert similarity(fp(base), fp(base)) == 1.0


def test_structured_values_and_bytes():
    assert fp({"b": 1, "a": [1, 2]}) == fp({"a": [3, 4], "b": 2})   # key order and numbers do not matter
    assert fp(b"hello world again") == fp("hello world again")
    assert len(fp(object())) == 16   # falls back to str(); never raises


def test_format_is_16_hex_digits():
    value = fp("some output text here")
    assert len(value) == 16 and int(value, 16) >= 0
