"""Guards shared through Redis: every transition, reservation, commit and release is one Lua script, so it
is atomic across processes and hosts, and reads the time from Redis (``TIME``), never from a worker's
clock. Half-open probe slots and token reservations are leases: those of a worker that dies expire instead
of blocking the breaker or leaking budget.

When Redis cannot be reached, each backend follows its declared policy (``fail="open"``: behave as if
unguarded; ``fail="closed"``: refuse), counts every such decision in
``agentvigil_internal_errors_total{component="guard_backend"}`` (alert AgentvigilGuardBackendDown) and does
not retry Redis for ``retry_interval`` seconds, so a dead Redis costs one short timeout, not one per call.
"""

from __future__ import annotations

import os
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any

from .._safety import fork_safe_lock, internal_error
from . import FAIL_CLOSED, FAIL_OPEN, POLICIES

PREFIX = "agentvigil:"
TIMEOUT = 0.25           # seconds: connect and read timeout of every Redis call
RETRY_INTERVAL = 1.0     # seconds without trying Redis after a failure
PROBE_LEASE = 60.0       # seconds a half-open probe slot is held if its worker never reports back
RESERVATION_TTL = 600.0  # seconds a reservation is held if its worker never commits or releases it

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

BREAKER_LUA = _NOW + """
local key, probes = KEYS[1], KEYS[2]
local op, threshold, recovery = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local max_probes, need, token, kind, lease = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6], ARGV[7], tonumber(ARGV[8])
local h = redis.call('HMGET', key, 'state', 'failures', 'successes', 'opened_at')
local state = h[1] or 'closed'
local failures, successes, opened_at = tonumber(h[2]) or 0, tonumber(h[3]) or 0, tonumber(h[4]) or 0
redis.call('ZREMRANGEBYSCORE', probes, '-inf', now)
local to, reason, allowed, remaining, probe = '', '', 1, 0, 0
local function enter(s, r)
  state, failures, successes, to, reason = s, 0, 0, s, r
  redis.call('DEL', probes)
  if s == 'open' then opened_at = now end
end
if op == 'allow' then
  if state == 'open' then
    remaining = opened_at + recovery - now
    if remaining > 0 then allowed = 0 else enter('half_open', 'recovery_timeout'); remaining = 0 end
  end
  if allowed == 1 and state == 'half_open' then
    if redis.call('ZCARD', probes) >= max_probes then allowed = 0
    else redis.call('ZADD', probes, now + lease, token); probe = 1 end
  end
elseif op == 'success' then
  if state == 'half_open' then
    redis.call('ZREM', probes, token)
    successes = successes + 1
    if successes >= need then enter('closed', 'probe_succeeded') end
  elseif state == 'closed' then failures = 0 end
elseif op == 'failure' then
  if state == 'half_open' then enter('open', kind)
  elseif state == 'closed' then
    failures = failures + 1
    if failures >= threshold then enter('open', kind) end
  end
elseif op == 'release' then
  redis.call('ZREM', probes, token)
elseif op == 'reset' then
  if state ~= 'closed' then enter('closed', 'manual') end
elseif op == 'state' then
  if state == 'open' then remaining = math.max(opened_at + recovery - now, 0) end
end
redis.call('HSET', key, 'state', state, 'failures', failures, 'successes', successes, 'opened_at', opened_at)
return {state, to, reason, allowed, remaining, probe}
"""

BUDGET_LUA = _NOW + """
local key, leases, amounts = KEYS[1], KEYS[2], KEYS[3]
local op, limit, tokens, rid, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
local reserved = tonumber(redis.call('HGET', key, 'reserved')) or 0
local committed = tonumber(redis.call('HGET', key, 'committed')) or 0
local expired = redis.call('ZRANGEBYSCORE', leases, '-inf', now, 'LIMIT', 0, 1000)
for _, id in ipairs(expired) do
  reserved = reserved - (tonumber(redis.call('HGET', amounts, id)) or 0)
  redis.call('HDEL', amounts, id)
  redis.call('ZREM', leases, id)
end
if reserved < 0 then reserved = 0 end
local granted, before = 1, committed
if op == 'reserve' then
  if tokens > limit - committed - reserved then granted = 0
  else
    reserved = reserved + tokens
    redis.call('ZADD', leases, now + ttl, rid)
    redis.call('HSET', amounts, rid, tokens)
  end
elseif op == 'settle' then
  local held = tonumber(redis.call('HGET', amounts, rid))
  if held then
    reserved = math.max(reserved - held, 0)
    redis.call('HDEL', amounts, rid)
    redis.call('ZREM', leases, rid)
  end
  committed = committed + tokens
elseif op == 'reset' then
  committed = 0
end
redis.call('HSET', key, 'committed', committed, 'reserved', reserved, 'limit', limit)
return {granted, committed, reserved, before, #expired}
"""


class Unavailable(Exception):
    """Redis could not be reached (or is backing off after a failure)."""


class _Store:
    """One client per process (rebuilt after fork: a connection must not be shared with the parent)."""

    def __init__(self, url: str, timeout: float, retry_interval: float):
        self.url = url
        self.timeout = timeout
        self.retry_interval = retry_interval
        self._pid = -1
        self._client: Any = None
        self._scripts: dict[str, Any] = {}
        self._down_until = 0.0
        self._lock = fork_safe_lock()

    def run(self, script: str, keys: list[str], args: list[Any]) -> list[Any]:
        if time.monotonic() < self._down_until:
            raise Unavailable("backing off")
        try:
            runner = self._script(script)
            return list(runner(keys=keys, args=args))
        except Exception as exc:  # redis.RedisError, OSError, a script error: all mean "no answer"
            self._down_until = time.monotonic() + self.retry_interval
            raise Unavailable(repr(exc)) from exc

    def _script(self, script: str) -> Any:
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    import redis
                    from redis.backoff import NoBackoff
                    from redis.retry import Retry

                    # no client-side retries: one bounded attempt, then the fail policy and the backoff
                    self._client = redis.Redis.from_url(self.url, socket_timeout=self.timeout,
                                                        socket_connect_timeout=self.timeout,
                                                        retry=Retry(NoBackoff(), 0))
                    self._scripts = {}
                    self._pid = os.getpid()
        runner = self._scripts.get(script)
        if runner is None:
            runner = self._scripts[script] = self._client.register_script(script)
        return runner


def _policy(fail: str) -> str:
    if fail not in POLICIES:
        raise ValueError(f"fail must be one of {POLICIES}, got {fail!r}")
    return fail


@dataclass
class BreakerDecision:
    state: str
    transition: tuple[str, str] | None
    allowed: bool
    remaining: float  # seconds until an open breaker lets a probe through
    shared: bool      # False when decided by the fail policy, without Redis


class RedisBreakerBackend:
    """Breaker state in Redis under ``agentvigil:breaker:{name}``. ``fail``: what ``allow()`` does while Redis
    is unreachable ("open": allow the call, the default, so a Redis outage does not stop the agents;
    "closed": refuse with CircuitOpenError)."""

    def __init__(self, url: str, *, fail: str = FAIL_OPEN, timeout: float = TIMEOUT,
                 retry_interval: float = RETRY_INTERVAL, probe_lease: float = PROBE_LEASE, prefix: str = PREFIX):
        self.fail = _policy(fail)
        self.probe_lease = probe_lease
        self.prefix = prefix
        self._store = _Store(url, timeout, retry_interval)
        self._tokens: dict[str, deque[str]] = {}

    def _call(self, breaker: Any, op: str, kind: str = "", token: str = "") -> list[Any]:
        key = f"{self.prefix}breaker:{{{breaker.name}}}"
        args = [op, breaker.failure_threshold, int(breaker.recovery_timeout * 1000), breaker.half_open_max_calls,
                breaker.success_threshold, token, kind, int(self.probe_lease * 1000)]
        return self._store.run(BREAKER_LUA, [key, key + ":probes"], args)

    def _decide(self, reply: list[Any]) -> BreakerDecision:
        state, to, reason, allowed, remaining = (_text(reply[0]), _text(reply[1]), _text(reply[2]),
                                                 int(reply[3]), int(reply[4]))
        return BreakerDecision(state, (to, reason) if to else None, bool(allowed), max(remaining, 0) / 1000, True)

    def _down(self, breaker: Any, exc: Exception, allowed: bool) -> BreakerDecision:
        internal_error("guard_backend", exc)
        return BreakerDecision(breaker.state, None, allowed, self._store.retry_interval, False)

    def allow(self, breaker: Any) -> BreakerDecision:
        token = uuid.uuid4().hex
        try:
            reply = self._call(breaker, "allow", token=token)
        except Unavailable as exc:
            return self._down(breaker, exc, self.fail == FAIL_OPEN)
        if int(reply[5]):  # took a half-open probe slot: remember it to give it back
            self._tokens.setdefault(breaker.name, deque(maxlen=1000)).append(token)
        return self._decide(reply)

    def _token(self, breaker: Any) -> str:
        tokens = self._tokens.get(breaker.name)
        try:
            return tokens.popleft() if tokens else ""
        except IndexError:
            return ""

    def record(self, breaker: Any, success: bool, kind: str = "") -> BreakerDecision:
        try:
            reply = self._call(breaker, "success" if success else "failure", kind=kind, token=self._token(breaker))
        except Unavailable as exc:
            return self._down(breaker, exc, True)
        return self._decide(reply)

    def release(self, breaker: Any) -> None:
        token = self._token(breaker)
        if token:
            try:
                self._call(breaker, "release", token=token)
            except Unavailable as exc:  # the lease expires on its own
                internal_error("guard_backend", exc)

    def reset(self, breaker: Any) -> BreakerDecision:
        try:
            return self._decide(self._call(breaker, "reset"))
        except Unavailable as exc:
            return self._down(breaker, exc, True)

    def read(self, breaker: Any) -> BreakerDecision:
        try:
            return self._decide(self._call(breaker, "state"))
        except Unavailable as exc:
            return self._down(breaker, exc, True)


@dataclass
class BudgetDecision:
    granted: bool
    committed: int
    reserved: int
    before: int     # committed before this operation
    rid: str | None  # the reservation's id in Redis (None when decided by the fail policy)


class RedisBudgetBackend:
    """Budget counters in Redis under ``agentvigil:budget:{name}``. ``fail``: what ``reserve()`` does while
    Redis is unreachable ("closed": refuse with BudgetExceeded, the default, so an outage cannot let the
    fleet spend past its limit; "open": grant, unaccounted). ``reservation_ttl``: seconds after which a
    reservation nobody committed or released (its worker died) is given back."""

    def __init__(self, url: str, *, fail: str = FAIL_CLOSED, timeout: float = TIMEOUT,
                 retry_interval: float = RETRY_INTERVAL, reservation_ttl: float = RESERVATION_TTL,
                 prefix: str = PREFIX):
        self.fail = _policy(fail)
        if reservation_ttl <= 0:
            raise ValueError(f"reservation_ttl must be > 0, got {reservation_ttl!r}")
        self.reservation_ttl = reservation_ttl
        self.prefix = prefix
        self._store = _Store(url, timeout, retry_interval)

    def _call(self, budget: Any, op: str, tokens: int = 0, rid: str = "") -> BudgetDecision:
        key = f"{self.prefix}budget:{{{budget.name}}}"
        reply = self._store.run(BUDGET_LUA, [key, key + ":leases", key + ":amounts"],
                                [op, budget.limit, tokens, rid, int(self.reservation_ttl * 1000)])
        return BudgetDecision(bool(int(reply[0])), int(reply[1]), int(reply[2]), int(reply[3]), rid or None)

    def reserve(self, budget: Any, tokens: int) -> BudgetDecision:
        rid = uuid.uuid4().hex
        try:
            return self._call(budget, "reserve", tokens, rid)
        except Unavailable as exc:
            internal_error("guard_backend", exc)
            return BudgetDecision(self.fail == FAIL_OPEN, budget.committed, budget.reserved, budget.committed, None)

    def settle(self, budget: Any, rid: str | None, actual: int) -> BudgetDecision | None:
        """Commit ``actual`` tokens (0: release) against reservation ``rid``; None if Redis is unreachable
        (the reservation then expires after ``reservation_ttl``; the usage is lost and counted)."""
        try:
            return self._call(budget, "settle", actual, rid or "")
        except Unavailable as exc:
            internal_error("guard_backend", exc)
            return None

    def reset(self, budget: Any) -> BudgetDecision | None:
        try:
            return self._call(budget, "reset")
        except Unavailable as exc:
            internal_error("guard_backend", exc)
            return None

    def read(self, budget: Any) -> BudgetDecision | None:
        try:
            return self._call(budget, "state")
        except Unavailable as exc:
            internal_error("guard_backend", exc)
            return None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
