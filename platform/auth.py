"""Bearer tokens of client teams, the roles and banks they grant, and per-team rate limits
(per process, or shared by every ingress replica of a cluster).

Only SHA-256 digests of tokens are configured. A presented token is hashed and compared with
every configured digest in constant time. With no tokens configured the service is anonymous,
and then only loopback clients are accepted. A team granted named banks sees, matches against
and writes those banks only; `admin` sees everything.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import math
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from .errors import Forbidden, RateLimited, Unauthorized
from .settings import TeamToken

ROLES = ("match", "bank_write", "admin")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Principal:
    team: str
    roles: frozenset[str]
    banks: frozenset[str] | None = None  # the banks granted; None: every bank
    rate_per_second: float | None = None
    burst: int | None = None

    def sees(self, bank: str) -> bool:
        return "admin" in self.roles or self.banks is None or bank in self.banks

    def allows(self, role: str, bank: str | None = None) -> bool:
        if "admin" in self.roles:
            return True
        return role in self.roles and (bank is None or self.sees(bank))

    def require(self, role: str, bank: str | None = None) -> None:
        if role not in self.roles and "admin" not in self.roles:
            raise Forbidden(f"team {self.team!r} lacks the {role!r} role")
        if bank is not None and not self.sees(bank):
            raise Forbidden(f"team {self.team!r} is not granted bank {bank!r}")

    def require_reader(self, bank: str | None = None) -> None:
        """Reading banks and entries: the match or bank_write role (on that bank)."""
        self.require("match" if "match" in self.roles else "bank_write", bank)

    def scope(self, banks: list[str] | None) -> list[str] | None:
        """The banks a request may touch: those it names (each must be granted), else every
        granted bank (None: all)."""
        if banks is not None:
            for bank in banks:
                self.require_reader(bank)
            return banks
        return None if self.banks is None or "admin" in self.roles else sorted(self.banks)


ANONYMOUS = Principal("anonymous", frozenset(ROLES))


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> tuple[str, str]:
    """A fresh random token and the digest to configure for it."""
    token = "mm_" + secrets.token_urlsafe(32)
    return token, token_digest(token)


def is_loopback(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class Authenticator:
    def __init__(self, tokens: list[TeamToken]):
        self.tokens = list(tokens)

    @property
    def anonymous(self) -> bool:
        return not self.tokens

    def authenticate(self, authorization: str | None, client_host: str | None) -> Principal:
        if self.anonymous:
            if not is_loopback(client_host):
                raise Unauthorized("this server has no tokens configured and accepts loopback clients only")
            return ANONYMOUS
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
        digest = token_digest(token.strip())
        found = None
        for configured in self.tokens:  # every digest compared, in constant time
            if hmac.compare_digest(digest, configured.token_sha256):
                found = configured
        if found is None:
            raise Unauthorized("unknown token")
        banks = None if found.banks is None else frozenset(found.banks)
        return Principal(found.team, frozenset(found.roles), banks, found.rate_per_second, found.burst)


class TokenBuckets:
    """A token bucket per team: `rate` tokens a second sustained, up to `burst` at once."""

    def __init__(self):
        self._buckets: dict[str, tuple[float, float]] = {}  # team -> (tokens, at)

    def take(self, team: str, rate: float, burst: int, want: int = 1) -> tuple[int, float]:
        """Up to `want` whole tokens now, and the seconds until the next one when none is left."""
        now = time.monotonic()
        tokens, at = self._buckets.get(team, (burst, now))
        tokens = min(burst, tokens + (now - at) * rate)
        granted = min(want, int(tokens))
        self._buckets[team] = (tokens - granted, now)
        return granted, 0.0 if granted else (1 - tokens) / rate


def bucket_size(who: Principal) -> int:
    return who.burst or max(1, math.ceil(2 * who.rate_per_second))


def rate_limited(who: Principal, wait: float) -> RateLimited:
    return RateLimited(f"team {who.team!r} is over its rate limit of {who.rate_per_second:g} requests per second", max(1, math.ceil(wait)))


class RateLimiter:
    """Each team's rate in this process: `rate_per_second` sustained, `burst` at once (default 2 s worth)."""

    def __init__(self):
        self.buckets = TokenBuckets()
        self._lock = threading.Lock()

    def check(self, who: Principal) -> None:
        if not who.rate_per_second:
            return
        with self._lock:
            granted, wait = self.buckets.take(who.team, who.rate_per_second, bucket_size(who))
        if not granted:
            raise rate_limited(who, wait)


Lease = Callable[[str, float, int, int], Awaitable[tuple[int, float]]]


@dataclass
class _Lease:
    tokens: int = 0
    expires: float = 0.0
    refused_until: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class SharedRateLimiter:
    """Each team's rate across every process that shares one set of TokenBuckets (the cluster's
    ingress replicas): tokens are leased from it a few at a time (`lease_seconds` of the rate),
    so most requests are admitted from the local lease without a round trip. Every admission
    spends a shared token, so the cluster never admits more than the rate; leased tokens unused
    after `ttl` lapse (at most a lease per replica per ttl is lost). A refusal is remembered
    until the next token is due, so a team far over its rate costs no round trip per request.
    While the shared buckets do not answer within `timeout`, each process limits on its own (logged)."""

    def __init__(self, lease: Lease, lease_seconds: float = 0.05, ttl: float = 1.0, timeout: float = 1.0):
        self.lease, self.lease_seconds, self.ttl, self.timeout = lease, lease_seconds, ttl, timeout
        self.local = RateLimiter()
        self.leases: dict[str, _Lease] = {}

    async def check(self, who: Principal) -> None:
        if not who.rate_per_second:
            return
        held = self.leases.setdefault(who.team, _Lease())
        async with held.lock:  # one lease call per team at a time; the others wait for its tokens
            now = time.monotonic()
            if held.tokens and now < held.expires:
                held.tokens -= 1
                return
            if now < held.refused_until:
                raise rate_limited(who, held.refused_until - now)
            want = max(1, int(who.rate_per_second * self.lease_seconds))
            try:
                granted, wait = await asyncio.wait_for(self.lease(who.team, who.rate_per_second, bucket_size(who), want), self.timeout)
            except Exception as exc:
                log.warning("shared rate limits unreachable, limiting in this replica alone: %s: %s", type(exc).__name__, exc)
                return self.local.check(who)
            if not granted:
                held.refused_until = now + wait
                raise rate_limited(who, wait)
            held.tokens, held.expires = granted - 1, now + self.ttl
