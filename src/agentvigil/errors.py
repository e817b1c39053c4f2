"""A fixed, bounded taxonomy of error kinds, and classifiers that map exceptions and HTTP statuses onto it.

Classification works on class names (the whole MRO) and status attributes, so no SDK is imported:
``openai.RateLimitError``, ``anthropic.RateLimitError`` and ``httpx.ReadTimeout`` are recognised by name, and
botocore's ``ClientError`` by its AWS error code (``ThrottlingException`` is a rate limit).
The kind is used as a Prometheus label value, so it must stay inside ``ERROR_KINDS``.
"""

from __future__ import annotations

RATE_LIMIT = "rate_limit"
TIMEOUT = "timeout"
AUTH = "auth"
INVALID_REQUEST = "invalid_request"
NOT_FOUND = "not_found"
CONTEXT_LENGTH = "context_length"
CONTENT_FILTER = "content_filter"
SERVER_ERROR = "server_error"
NETWORK = "network"
TOOL_ERROR = "tool_error"
UNKNOWN = "unknown"

ERROR_KINDS = (
    RATE_LIMIT, TIMEOUT, AUTH, INVALID_REQUEST, NOT_FOUND, CONTEXT_LENGTH,
    CONTENT_FILTER, SERVER_ERROR, NETWORK, TOOL_ERROR, UNKNOWN,
)

#: Reasons of rejected actions (``tool_end`` with status ``rejected``: nothing ran), set by the integrations.
#: Not error kinds: a rejected action is counted as ``agent_tool_calls_total{status="rejected"}``, never as an error.
PARSE_ERROR = "parse_error"      # the action or its arguments could not be parsed
UNKNOWN_TOOL = "unknown_tool"    # the action names a tool the agent does not have

#: Kinds that say the *provider* is unhealthy. Only these count as circuit-breaker failures: a bad request
#: or a missing key is the caller's fault, and opening the breaker would not help.
PROVIDER_KINDS = frozenset({RATE_LIMIT, TIMEOUT, SERVER_ERROR, NETWORK})

# Checked against every class name in the exception's MRO, most specific first.
_BY_CLASS_NAME = {
    # openai / anthropic (same names in both SDKs), litellm, google
    "RateLimitError": RATE_LIMIT,
    "TooManyRequests": RATE_LIMIT,
    "ResourceExhausted": RATE_LIMIT,
    "APITimeoutError": TIMEOUT,
    "Timeout": TIMEOUT,
    "TimeoutError": TIMEOUT,
    "TimeoutException": TIMEOUT,
    "ReadTimeout": TIMEOUT,
    "WriteTimeout": TIMEOUT,
    "ConnectTimeout": TIMEOUT,
    "PoolTimeout": TIMEOUT,
    "DeadlineExceeded": TIMEOUT,
    "AuthenticationError": AUTH,
    "PermissionDeniedError": AUTH,
    "PermissionDenied": AUTH,
    "PermissionError": AUTH,
    "Unauthenticated": AUTH,
    "ContextWindowExceededError": CONTEXT_LENGTH,
    "ContentPolicyViolationError": CONTENT_FILTER,
    "ContentFilterFinishReasonError": CONTENT_FILTER,
    "BadRequestError": INVALID_REQUEST,
    "UnprocessableEntityError": INVALID_REQUEST,
    "InvalidRequestError": INVALID_REQUEST,
    "InvalidArgument": INVALID_REQUEST,
    "ValidationError": INVALID_REQUEST,
    "NotFoundError": NOT_FOUND,
    "NotFound": NOT_FOUND,
    "FileNotFoundError": NOT_FOUND,
    "InternalServerError": SERVER_ERROR,
    "ServiceUnavailableError": SERVER_ERROR,
    "OverloadedError": SERVER_ERROR,
    "ServiceUnavailable": SERVER_ERROR,
    "APIConnectionError": NETWORK,
    "ConnectError": NETWORK,
    "ConnectionError": NETWORK,
    "RemoteProtocolError": NETWORK,
    "NetworkError": NETWORK,
    "TransportError": NETWORK,
    "ProtocolError": NETWORK,
    "ClientConnectionError": NETWORK,   # aiohttp (google-genai's async transport): refused, reset, disconnected
    # botocore (AWS): transport errors by class; service errors are ClientError, classified by code below
    "ReadTimeoutError": TIMEOUT,
    "ConnectTimeoutError": TIMEOUT,
    "EndpointConnectionError": NETWORK,
    "ConnectionClosedError": NETWORK,
    "NoCredentialsError": AUTH,
    "PartialCredentialsError": AUTH,
}

# AWS error codes (botocore ClientError.response["Error"]["Code"]; also the class names of boto3's modelled
# exceptions, e.g. client.exceptions.ThrottlingException). Bedrock, S3, DynamoDB, STS and the common ones.
_AWS_CODES = {
    **dict.fromkeys(("ThrottlingException", "Throttling", "ThrottledException", "TooManyRequestsException",
                     "RequestLimitExceeded", "ProvisionedThroughputExceededException", "SlowDown",
                     "RequestThrottled", "RequestThrottledException", "LimitExceededException",
                     "ServiceQuotaExceededException"), RATE_LIMIT),
    **dict.fromkeys(("AccessDeniedException", "AccessDenied", "UnrecognizedClientException",
                     "InvalidSignatureException", "SignatureDoesNotMatch", "ExpiredTokenException",
                     "ExpiredToken", "InvalidClientTokenId", "NotAuthorized", "MissingAuthenticationToken",
                     "AuthFailure", "UnauthorizedOperation"), AUTH),
    **dict.fromkeys(("ValidationException", "ValidationError", "InvalidParameterValue", "InvalidParameterException",
                     "InvalidParameterCombination", "MissingParameter", "SerializationException",
                     "InvalidRequestException", "BadRequestException", "MalformedPolicyDocument"), INVALID_REQUEST),
    **dict.fromkeys(("ResourceNotFoundException", "NoSuchKey", "NoSuchBucket", "NotFoundException",
                     "NoSuchEntity"), NOT_FOUND),
    **dict.fromkeys(("RequestTimeout", "RequestTimeoutException", "ModelTimeoutException"), TIMEOUT),
    **dict.fromkeys(("InternalServerException", "InternalServerError", "InternalFailure", "InternalError",
                     "ServiceUnavailableException", "ServiceUnavailable", "ServiceException",
                     "ModelErrorException", "ModelNotReadyException", "ModelStreamErrorException"), SERVER_ERROR),
}

_CONTEXT_MARKERS = ("context_length_exceeded", "maximum context length", "context window", "prompt is too long",
                    "too many tokens", "input is too long",
                    "exceeds the maximum number of tokens")   # Gemini: "The input token count (N) exceeds ..."
_FILTER_MARKERS = ("content_filter", "content management policy", "content_policy", "safety system")


def classify_status(status: int | None) -> str:
    """Map an HTTP status code to an error kind."""
    if status is None:
        return UNKNOWN
    if status == 429:
        return RATE_LIMIT
    if status in (401, 403):
        return AUTH
    if status == 404:
        return NOT_FOUND
    if status in (408, 504):
        return TIMEOUT
    if status == 413:
        return CONTEXT_LENGTH
    if 400 <= status < 500:
        return INVALID_REQUEST
    if status >= 500:  # 529 is Anthropic's "overloaded"
        return SERVER_ERROR
    return UNKNOWN


def _status_of(exc: BaseException) -> int | None:
    for attr in ("status_code", "status", "http_status", "code"):
        value = getattr(exc, attr, None)
        if isinstance(value, int) and 100 <= value < 600:
            return value
    response = getattr(exc, "response", None)
    value = getattr(response, "status_code", None)
    if isinstance(value, int) and 100 <= value < 600:
        return value
    return None


def _aws_kind(exc: BaseException) -> str | None:
    """botocore's ClientError carries ``response = {"Error": {"Code": ...}, "ResponseMetadata":
    {"HTTPStatusCode": ...}}`` (a dict): the code first, then that status."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    error = response.get("Error")
    code = error.get("Code") if isinstance(error, dict) else None
    if isinstance(code, str):
        kind = _AWS_CODES.get(code) or _AWS_CODES.get(code.rpartition(".")[2])
        if kind is not None:
            return kind
    meta = response.get("ResponseMetadata")
    status = meta.get("HTTPStatusCode") if isinstance(meta, dict) else None
    if isinstance(status, int) and 100 <= status < 600:
        return classify_status(status)
    return None


def _message_kind(exc: BaseException) -> str | None:
    try:
        text = str(exc).lower()
    except Exception:  # a hostile __str__ must not break classification
        return None
    if any(marker in text for marker in _CONTEXT_MARKERS):
        return CONTEXT_LENGTH
    if any(marker in text for marker in _FILTER_MARKERS):
        return CONTENT_FILTER
    return None


def classify_exception(exc: BaseException | None, *, default: str = UNKNOWN) -> str:
    """Classify an exception into one of ``ERROR_KINDS``. Never raises.

    Order: message markers for context length and content filter (SDKs raise these as a plain 400), then the
    class names of the MRO, then an HTTP status found on the exception or its ``response``, then ``default``.
    """
    if exc is None:
        return default
    try:
        by_message = _message_kind(exc)
        if by_message is not None:
            return by_message
        if isinstance(exc, TimeoutError):  # also asyncio.TimeoutError (3.11+) and socket.timeout
            return TIMEOUT
        for cls in type(exc).__mro__:
            kind = _BY_CLASS_NAME.get(cls.__name__)
            if kind is not None:
                return kind
        kind = _AWS_CODES.get(type(exc).__name__) or _aws_kind(exc)
        if kind is not None:
            return kind
        status = _status_of(exc)
        if status is not None:
            return classify_status(status)
    except Exception:
        return UNKNOWN
    return default
