"""OIDC bearer tokens: a JWT signed by the configured issuer, checked against its JWKS.

Only the configured asymmetric algorithms are accepted (never ``none``, never an HMAC algorithm:
an HS256 token "signed" with the issuer's public key must not pass). The JWKS is fetched with
PyJWT's :class:`jwt.PyJWKClient`, which caches the keys and refetches once for an unknown key id
(the issuer rotated its keys). One verifier per application, kept on ``app.state``.
"""

from __future__ import annotations

import logging
from typing import Any

import jwt

from cds.contracts.review import Principal, Role
from cds.contracts.settings import Settings

log = logging.getLogger(__name__)

_ASYMMETRIC = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}


class TokenRejected(Exception):
    """The bearer token is not one this site accepts; the message says why (no token content)."""


def _claim(claims: dict[str, Any], path: str) -> Any:
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def roles_from(claims: dict[str, Any], path: str) -> frozenset[Role]:
    """Roles named in the claim at ``path`` (a list, or a space-separated string); others ignored."""
    raw = _claim(claims, path)
    names = raw.split() if isinstance(raw, str) else raw if isinstance(raw, list) else []
    return frozenset(Role(n) for n in names if isinstance(n, str) and n in Role.__members__)


class OidcVerifier:
    """Verifies JWTs of ``settings.http_oidc_issuer``; ``enabled`` is False when none is configured."""

    def __init__(self, settings: Settings) -> None:
        self.issuer = settings.http_oidc_issuer.rstrip("/")
        self.audience = settings.http_oidc_audience or None
        self.roles_claim = settings.http_oidc_roles_claim
        self.algorithms = [a.strip() for a in settings.http_oidc_algorithms.split(",") if a.strip() in _ASYMMETRIC]
        url = settings.http_oidc_jwks_url or (self.issuer + "/.well-known/jwks.json" if self.issuer else "")
        self._jwks = jwt.PyJWKClient(url, cache_keys=True, lifespan=300, timeout=5) if url else None

    @property
    def enabled(self) -> bool:
        return bool(self.issuer and self._jwks is not None and self.algorithms)

    def verify(self, token: str) -> Principal:
        """The principal of a valid token, else :class:`TokenRejected` naming the check that failed."""
        if not self.enabled or self._jwks is None:
            raise TokenRejected("OIDC is not configured (CDS_HTTP_OIDC_ISSUER)")
        try:
            alg = jwt.get_unverified_header(token).get("alg")
        except jwt.DecodeError as exc:
            raise TokenRejected("the bearer token is not a well-formed JWT") from exc
        if alg not in self.algorithms:
            raise TokenRejected(f"JWT algorithm {alg!r} is not accepted (expected one of {', '.join(self.algorithms)})")
        try:
            key = self._jwks.get_signing_key_from_jwt(token)
        except jwt.PyJWKClientConnectionError as exc:
            log.warning("JWKS of the OIDC issuer could not be fetched: %s", type(exc).__name__)
            raise TokenRejected("the issuer's signing keys (JWKS) could not be fetched") from exc
        except jwt.PyJWKClientError as exc:
            raise TokenRejected("the JWT's key id is not in the issuer's JWKS") from exc
        try:
            claims = jwt.decode(
                token, key.key, algorithms=self.algorithms, audience=self.audience, issuer=self.issuer,
                leeway=30, options={"require": ["exp", "iss", "sub"], "verify_aud": self.audience is not None})
        except jwt.ExpiredSignatureError as exc:
            raise TokenRejected("the JWT has expired") from exc
        except jwt.ImmatureSignatureError as exc:
            raise TokenRejected("the JWT is not valid yet (nbf/iat)") from exc
        except jwt.InvalidIssuerError as exc:
            raise TokenRejected("the JWT was issued by another issuer") from exc
        except jwt.InvalidAudienceError as exc:
            raise TokenRejected("the JWT is for another audience") from exc
        except jwt.InvalidTokenError as exc:
            raise TokenRejected(f"the JWT is not valid ({type(exc).__name__})") from exc
        return Principal(name=str(claims["sub"]), roles=roles_from(claims, self.roles_claim), method="oidc",
                         display_name=str(claims.get("name") or ""))
