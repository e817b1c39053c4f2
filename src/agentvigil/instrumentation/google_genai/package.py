"""Supported ``google-genai`` versions: 1.8 is the oldest whose ``usage_metadata`` has ``thoughts_token_count``
(without it the thinking tokens, billed as output, would be missing from output and cost). Everything else we
use is in 1.0 (``Models`` / ``AsyncModels``, ``cached_content_token_count``, ``APIError.code``). Tested against
1.8.0 and the newest release."""

_instruments = ("google-genai >= 1.8",)
