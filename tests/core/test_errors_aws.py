"""botocore errors classified by AWS error code, without importing botocore (shapes as botocore builds them)."""

import os
import subprocess
import sys

import pytest

from agentvigil.errors import PROVIDER_KINDS, classify_exception


class ClientError(Exception):
    """botocore.exceptions.ClientError's shape: ``response`` is a dict."""

    def __init__(self, code: str, message: str = "", status: int = 400, operation: str = "Converse"):
        self.response = {"Error": {"Code": code, "Message": message},
                         "ResponseMetadata": {"HTTPStatusCode": status}}
        self.operation_name = operation
        super().__init__(f"An error occurred ({code}) when calling the {operation} operation: {message}")


class ThrottlingException(ClientError):
    """boto3's modelled exception (client.exceptions.ThrottlingException) is a ClientError subclass."""


@pytest.mark.parametrize("code, kind", [
    ("ThrottlingException", "rate_limit"), ("TooManyRequestsException", "rate_limit"),
    ("ProvisionedThroughputExceededException", "rate_limit"), ("SlowDown", "rate_limit"),
    ("ServiceQuotaExceededException", "rate_limit"),
    ("AccessDeniedException", "auth"), ("UnrecognizedClientException", "auth"), ("ExpiredTokenException", "auth"),
    ("ValidationException", "invalid_request"), ("ResourceNotFoundException", "not_found"),
    ("ModelTimeoutException", "timeout"), ("InternalServerException", "server_error"),
    ("ServiceUnavailableException", "server_error"), ("ModelStreamErrorException", "server_error"),
])
def test_client_error_by_code(code, kind):
    assert classify_exception(ClientError(code)) == kind


def test_throttling_counts_for_the_breaker_and_validation_does_not():
    assert classify_exception(ClientError("ThrottlingException", status=400)) in PROVIDER_KINDS
    assert classify_exception(ClientError("ValidationException")) not in PROVIDER_KINDS


def test_modelled_subclass_and_unknown_code_falls_back_to_status():
    assert classify_exception(ThrottlingException("ThrottlingException")) == "rate_limit"
    assert classify_exception(ClientError("SomethingNew", status=503)) == "server_error"
    assert classify_exception(ClientError("SomethingNew", status=429)) == "rate_limit"
    assert classify_exception(ClientError("SomethingNew", status=200)) == "unknown"


def test_bedrock_context_length_message_wins():
    exc = ClientError("ValidationException", "Input is too long for requested model.")
    assert classify_exception(exc) == "context_length"


def test_botocore_transport_errors_by_class_name():
    for name, kind in (("ReadTimeoutError", "timeout"), ("ConnectTimeoutError", "timeout"),
                       ("EndpointConnectionError", "network"), ("NoCredentialsError", "auth")):
        assert classify_exception(type(name, (Exception,), {})("x")) == kind


def test_odd_response_shapes_never_raise():
    for response in ({"Error": "nope"}, {"Error": {"Code": 42}}, {"ResponseMetadata": None}, []):
        exc = Exception("x")
        exc.response = response   # type: ignore[attr-defined]
        assert classify_exception(exc) == "unknown"


def test_botocore_is_not_imported():
    code = ("import sys; from agentvigil.errors import classify_exception; "
            "e = Exception('x'); e.response = {'Error': {'Code': 'ThrottlingException'}}; "
            "assert classify_exception(e) == 'rate_limit'; assert 'botocore' not in sys.modules")
    assert subprocess.run([sys.executable, "-c", code], env=dict(os.environ)).returncode == 0
