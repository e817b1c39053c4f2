"""Supported ``openai`` versions. Tested against the newest release; 1.40 is the oldest with the APIs we wrap
(``prompt_tokens_details.cached_tokens``, ``stream_options``). The Responses API is wrapped when present."""

_instruments = ("openai >= 1.40",)
