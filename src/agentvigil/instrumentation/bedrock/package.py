"""Supported ``botocore`` versions: 1.34.116 (2024-05-30) is the first whose ``bedrock-runtime`` model has the
``Converse`` and ``ConverseStream`` operations (1.34.115 has only ``InvokeModel`` and its stream)."""

_instruments = ("botocore >= 1.34.116",)
