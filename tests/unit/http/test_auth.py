"""Who may call what: OIDC JWTs checked against a JWKS served on loopback, API tokens, and the
browser's cookie session with its CSRF check."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from cds.contracts.review import Role
from cds.store import Store
from listeners.http.context import HttpContext
from tests.unit.http.support import audited, auth, client, fill, make_settings, requestor, tokens

AUD = "breast-cds"


class Issuer:
    """An RSA key pair whose public half a loopback HTTP server publishes as a JWKS."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(RSAAlgorithm.to_jwk(self.key.public_key()))
        jwks = json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(jwks)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def token(self, roles: list[str], *, kid: str = "k1", alg: str = "RS256", key: Any = None, **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": self.url, "aud": AUD, "sub": "user-1", "name": "Dr Test", "iat": now, "exp": now + 300,
                "realm_access": {"roles": roles}, **claims}
        return jwt.encode(body, key if key is not None else self.key, algorithm=alg, headers={"kid": kid})


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    iss = Issuer()
    yield iss
    iss.server.shutdown()


@pytest.fixture
def oidc(tmp_path: Path, issuer: Issuer):
    settings = make_settings(tmp_path, http_oidc_issuer=issuer.url, http_oidc_audience=AUD,
                             http_oidc_roles_claim="realm_access.roles", audit_enabled=True)
    store = Store(settings.store_url)
    ids = fill(store, tmp_path)
    with client(HttpContext(settings, store, peer_probes={})) as c:
        yield c, ids, settings
    store.close()


# role -> (may read the API, may requeue, may STOW)
EXPECTED = {"viewer": (True, False, False), "clinician": (True, False, False), "operator": (True, True, True),
            "sender": (False, False, True), "admin": (True, True, True)}


@pytest.mark.parametrize("role", sorted(EXPECTED))
def test_oidc_roles_decide_routes(oidc, issuer: Issuer, role: str) -> None:
    c, ids, _ = oidc
    h = auth(issuer.token([role]))
    read, act, stow = EXPECTED[role]
    assert c.get("/api/v1/jobs", headers=h).status_code == (200 if read else 403)
    r = c.post(f"/api/v1/jobs/{ids['done_job']}/requeue", headers=h)
    assert r.status_code == (409 if act else 403), r.text  # the done job is not dead: 409 once allowed
    s = c.post("/dicomweb/studies", headers={**h, "Content-Type": "text/plain"}, content=b"x")
    assert s.status_code == (415 if stow else 403), s.text  # allowed callers reach the media-type check


@pytest.mark.parametrize("case", ["expired", "wrong_issuer", "wrong_audience", "unknown_kid", "alg_none",
                                  "hs256_public_key", "other_key", "not_yet_valid"])
def test_bad_jwt_is_401(oidc, issuer: Issuer, case: str) -> None:
    c, _, _ = oidc
    now = int(time.time())
    public_pem = issuer.key.public_key().public_bytes(serialization.Encoding.PEM,
                                                       serialization.PublicFormat.SubjectPublicKeyInfo)
    token = {
        "expired": lambda: issuer.token(["admin"], exp=now - 120),
        "not_yet_valid": lambda: issuer.token(["admin"], nbf=now + 600),
        "wrong_issuer": lambda: issuer.token(["admin"], iss="http://127.0.0.1:1/other"),
        "wrong_audience": lambda: issuer.token(["admin"], aud="someone-else"),
        "unknown_kid": lambda: issuer.token(["admin"], kid="nope"),
        "alg_none": lambda: jwt.encode({"iss": issuer.url, "aud": AUD, "sub": "x", "exp": now + 300,
                                        "realm_access": {"roles": ["admin"]}}, None, algorithm="none",
                                       headers={"kid": "k1"}),
        "hs256_public_key": lambda: _hs256(issuer, public_pem),
        "other_key": lambda: issuer.token(["admin"], key=rsa.generate_private_key(public_exponent=65537, key_size=2048)),
    }[case]()
    r = c.get("/api/v1/jobs", headers=auth(token))
    assert r.status_code == 401, (case, r.text)
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert r.json()["detail"]


def _hs256(issuer: Issuer, secret: bytes) -> str:
    """HS256 'signed' with the issuer's public key: the classic algorithm-confusion forgery."""
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "k1"}).encode())
    body = b64(json.dumps({"iss": issuer.url, "aud": AUD, "sub": "x", "exp": int(time.time()) + 300,
                           "realm_access": {"roles": ["admin"]}}).encode())
    sig = hmac.new(secret, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{b64(sig)}"


def test_good_jwt_names_the_user_in_the_audit(oidc, issuer: Issuer) -> None:
    c, _, settings = oidc
    assert c.get("/api/v1/results", headers=auth(issuer.token(["viewer"]))).status_code == 200
    (read,) = audited(settings, "api:results")
    assert requestor(read) == "user-1"


def test_api_tokens_and_missing_credentials(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, audit_enabled=False)
    store = Store(settings.store_url)
    fill(store, tmp_path)
    toks = tokens(settings)
    assert oct(settings.http_api_tokens_file.stat().st_mode & 0o777) == "0o600"  # type: ignore[union-attr]
    assert toks[Role.viewer] not in settings.http_api_tokens_file.read_text()  # type: ignore[union-attr]
    with client(HttpContext(settings, store, peer_probes={})) as c:
        r = c.get("/api/v1/jobs")
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        bad = c.get("/api/v1/jobs", headers=auth("not-a-token"))
        assert bad.status_code == 401 and "invalid_token" in bad.headers["www-authenticate"]
        assert c.get("/api/v1/jobs", headers=auth(toks[Role.viewer])).status_code == 200
        denied = c.post("/api/v1/jobs/1/requeue", headers=auth(toks[Role.viewer]))
        assert denied.status_code == 403 and "operator" in denied.json()["detail"]
    store.close()


def test_cookie_login_and_csrf(env) -> None:
    c = env.client
    assert c.post("/login", data={"token": "wrong"}, follow_redirects=False).status_code == 401
    r = c.post("/login", data={"token": env.tokens[Role.operator], "next": "//evil.example"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/"
    cookies = r.headers.get_list("set-cookie")
    session = next(x for x in cookies if x.startswith("cds_session="))
    assert "httponly" in session.lower() and "samesite=strict" in session.lower()
    csrf = c.cookies["cds_csrf"]
    assert c.get("/api/v1/jobs").status_code == 200  # reads need no CSRF token
    job = env.ids["dead_job"]
    no_csrf = c.post(f"/api/v1/jobs/{job}/requeue")
    assert no_csrf.status_code == 403 and "X-CSRF-Token" in no_csrf.json()["detail"]
    assert c.post(f"/api/v1/jobs/{job}/requeue", headers={"X-CSRF-Token": "guess"}).status_code == 403
    ok = c.post(f"/api/v1/jobs/{job}/requeue", headers={"X-CSRF-Token": csrf})
    assert ok.status_code == 200 and ok.json()["state"] == "queued"
    out = env.ids["dead_output"]
    form = c.post(f"/api/v1/outbox/{out}/requeue", data={"csrf_token": csrf})
    assert form.status_code == 200 and form.json()["state"] == "pending"
    c.post("/logout", headers={"X-CSRF-Token": csrf}, follow_redirects=False)
    c.cookies.clear()
    assert c.get("/api/v1/jobs").status_code == 401
