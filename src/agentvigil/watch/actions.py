"""Alias of ``agentvigil.actions``: the one action set, shared by ``watch`` and ``supervise``."""

from ..actions.file import FileLog
from ..actions.kill import START_TIME_TOLERANCE, Killer, ProcessRef, _proc_uid
from ..actions.webhook import WebhookSender, generic_payload, slack_payload

__all__ = ["START_TIME_TOLERANCE", "FileLog", "Killer", "ProcessRef", "WebhookSender", "_proc_uid",
           "generic_payload", "slack_payload"]
