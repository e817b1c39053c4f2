"""Supported ``mcp`` (Model Context Protocol Python SDK) versions: ``ClientSession.call_tool`` /
``list_tools`` exist with these signatures since 1.2. Tested against 2.3.0; 1.x's camelCase result fields
(``isError``, ``structuredContent``) are read too."""

_instruments = ("mcp >= 1.2",)
