"""Bearer tokens of client teams, the roles and banks they grant, and per-team rate limits.

Only SHA-256 digests of tokens are configured. A presented token is hashed and compared with
every configured digest in constant time. With no tokens configured the service is anonymous,
and then only loopback clients are accepted. A team granted named banks sees, matches against
and writes those banks only; `admin` sees everything.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import secrets
import threading
import time
from dataclasses import dataclass

from .errors import Forbidden, RateLimited, Unauthorized
from .settings import TeamToken

ROLES = ("match", "bank_write", "admin")


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


class RateLimiter:
    """A token bucket per team: `rate_per_second` sustained, `burst` at once (default 2 s worth)."""

    def __init__(self):
        self._buckets: dict[str, tuple[float, float]] = {}  # team -> (tokens, at)
        self._lock = threading.Lock()

    def check(self, who: Principal) -> None:
        if not who.rate_per_second:
            return
        rate = who.rate_per_second
        burst = who.burst or max(1, math.ceil(2 * rate))
        with self._lock:
            now = time.monotonic()
            tokens, at = self._buckets.get(who.team, (burst, now))
            tokens = min(burst, tokens + (now - at) * rate)
            if tokens < 1:
                self._buckets[who.team] = (tokens, now)
                retry = max(1, math.ceil((1 - tokens) / rate))
                raise RateLimited(f"team {who.team!r} is over its rate limit of {rate:g} requests per second", retry)
            self._buckets[who.team] = (tokens - 1, now)
