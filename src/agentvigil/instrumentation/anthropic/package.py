"""Supported ``anthropic`` versions: 0.40 is the oldest with prompt-caching usage fields on the GA namespace."""

_instruments = ("anthropic >= 0.40",)
