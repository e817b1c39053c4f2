"""Supported LangChain versions (LangGraph is optional and probed at run time)."""

_instruments = ("langchain-core >= 0.3",)
