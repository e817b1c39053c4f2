"""Supported ``litellm`` versions: 1.68.2 (oldest, tested) to 1.110.2 (tested). 1.68 is the first release that
calls ``CustomLogger.async_pre_call_deployment_hook`` for SDK ``acompletion`` calls, the one hook whose exception
stops the call (the guards); every other hook used (``log_pre_api_call`` / ``log_post_api_call``, sync and async
success and failure events, ``Usage.prompt_tokens_details.cached_tokens``) is older."""

_instruments = ("litellm >= 1.68.2",)
