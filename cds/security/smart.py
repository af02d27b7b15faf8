"""SMART Backend Services: the ``private_key_jwt`` client assertion (RFC 7523).

The assertion is a JWT signed with the site's private key (RS384 or ES384, as SMART requires):
``iss`` = ``sub`` = client id, ``aud`` = token URL, a unique ``jti``, a 5-minute ``exp``; ``kid``
in the header names the public key the authorization server holds in its JWKS.
"""

from __future__ import annotations

import time
import uuid

import jwt

from cds.contracts.errors import PermanentError
from cds.contracts.settings import Settings

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def client_assertion(settings: Settings, token_url: str, now: float | None = None) -> str:
    path = settings.fhir_client_assertion_key_file
    if path is None:
        raise PermanentError("SMART Backend Services needs CDS_FHIR_CLIENT_ASSERTION_KEY_FILE")
    try:
        key = path.read_bytes()
    except OSError as exc:
        raise PermanentError(f"client assertion key {path} cannot be read: {exc.strerror}") from exc
    t = int(now if now is not None else time.time())
    claims = {"iss": settings.fhir_client_id, "sub": settings.fhir_client_id, "aud": token_url,
              "jti": uuid.uuid4().hex, "iat": t, "exp": t + 300}
    headers = {"typ": "JWT"} | ({"kid": settings.fhir_client_assertion_kid}
                                if settings.fhir_client_assertion_kid else {})
    try:
        return jwt.encode(claims, key, algorithm=settings.fhir_client_assertion_alg, headers=headers)
    except (ValueError, TypeError, jwt.PyJWTError) as exc:
        raise PermanentError(f"client assertion key {path} cannot sign "
                             f"{settings.fhir_client_assertion_alg}: {exc.__class__.__name__}") from exc


def token_form(settings: Settings, token_url: str, client_secret: str) -> dict[str, str]:
    """The client-credentials form: a signed assertion when a key is set, else the secret."""
    data = {"grant_type": "client_credentials"}
    if settings.fhir_client_assertion_key_file is not None:
        data |= {"client_assertion_type": ASSERTION_TYPE,
                 "client_assertion": client_assertion(settings, token_url)}
    else:
        data |= {"client_id": settings.fhir_client_id, "client_secret": client_secret}
    if settings.fhir_scope:
        data["scope"] = settings.fhir_scope
    return data
