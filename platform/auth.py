"""Bearer tokens of client teams, and the roles they grant.

Only SHA-256 digests of tokens are configured. A presented token is hashed and compared with
every configured digest in constant time. With no tokens configured the service is anonymous,
and then only loopback clients are accepted.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from dataclasses import dataclass

from .errors import Forbidden, Unauthorized
from .settings import TeamToken

ROLES = ("match", "bank_write", "admin")


@dataclass(frozen=True)
class Principal:
    team: str
    roles: frozenset[str]
    banks: frozenset[str] | None = None  # bank_write limited to these

    def allows(self, role: str, bank: str | None = None) -> bool:
        if "admin" in self.roles:
            return True
        if role not in self.roles:
            return False
        return role != "bank_write" or bank is None or self.banks is None or bank in self.banks

    def require(self, role: str, bank: str | None = None) -> None:
        if not self.allows(role, bank):
            where = f" on bank {bank!r}" if bank and role == "bank_write" else ""
            raise Forbidden(f"team {self.team!r} lacks the {role!r} role{where}")


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
        return Principal(found.team, frozenset(found.roles), None if found.banks is None else frozenset(found.banks))
