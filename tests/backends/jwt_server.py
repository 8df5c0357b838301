"""A test authorization server that issues signed JWTs, plus an MCP backend that accepts them (`--port PORT`).

One loopback process, written for these tests:
- RFC 8414 metadata at `/.well-known/oauth-authorization-server`, its RSA and EC keys as a JWKS at `/jwks`;
- `/register` (dynamic client registration), `/authorize` (code + PKCE S256; the person is chosen with `login=NAME`,
  without it a small login form is shown), `/token` (authorization_code, refresh_token, RFC 8693 token exchange,
  client_credentials), `/introspect` (RFC 7662, client-authenticated);
- `/mcp`: an MCP server whose tools answer only to this AS's tokens with `aud` = its own URL (`whoami` says who);
- test knobs under `/admin/`: `mint` (a token with any claims, ES256 or RS256, or a broken one: expired, wrong
  key, `alg: none`, HS256 keyed with the public key, unknown kid; or opaque), `jwks` (take the JWKS endpoint
  down / up, read how often it was fetched and how many introspections were answered), `exchanges` (the
  token-exchange requests seen), `clients` (register a confidential client).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import secrets
import time
from typing import Any
from urllib.parse import urlencode

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
ARGS = parser.parse_args()
BASE = f"http://127.0.0.1:{ARGS.port}"
RESOURCE = f"{BASE}/mcp"
KID = "test-key-1"
EC_KID = "test-ec-key-1"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"

SIGNING_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
STRANGER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)  # in no JWKS
EC_KEY = ec.generate_private_key(ec.SECP256R1())
PUBLIC_PEM = SIGNING_KEY.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _public_jwks() -> list[dict[str, Any]]:
    rsa_jwk: dict[str, Any] = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(SIGNING_KEY.public_key()))
    ec_jwk: dict[str, Any] = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(EC_KEY.public_key()))
    return [{**rsa_jwk, "kid": KID, "alg": "RS256", "use": "sig"}, {**ec_jwk, "kid": EC_KID, "use": "sig"}]


class State:
    def __init__(self) -> None:
        self.clients: dict[str, dict[str, Any]] = {}
        self.codes: dict[str, dict[str, Any]] = {}
        self.refresh: dict[str, dict[str, Any]] = {}
        self.opaque: dict[str, dict[str, Any]] = {}
        self.jwks_up = True
        self.jwks_fetches = 0
        self.introspections = 0
        self.exchanges: list[dict[str, Any]] = []


STATE = State()


def claims_for(subject: str, *, audience: str | list[str], scope: str, lifetime: int = 3600) -> dict[str, Any]:
    now = int(time.time())
    return {
        "iss": BASE,
        "sub": subject,
        "aud": audience,
        "iat": now,
        "nbf": now,
        "exp": now + lifetime,
        "scope": scope,
        "jti": secrets.token_urlsafe(8),
    }


def sign(claims: dict[str, Any], *, kid: str = KID) -> str:
    return jwt.encode(claims, SIGNING_KEY, algorithm="RS256", headers={"kid": kid})


def forge(claims: dict[str, Any], kind: str) -> str:
    """The broken tokens of the bad-input tests; each is what an attacker or a misconfigured AS would send."""
    if kind == "bad_signature":  # right kid, wrong key
        return jwt.encode(claims, STRANGER_KEY, algorithm="RS256", headers={"kid": KID})
    if kind == "unknown_kid":
        return jwt.encode(claims, STRANGER_KEY, algorithm="RS256", headers={"kid": f"kid-{secrets.token_hex(4)}"})
    if kind == "es256":  # a good token, signed with the EC key
        return jwt.encode(claims, EC_KEY, algorithm="ES256", headers={"kid": EC_KID})
    if kind == "es256_with_rsa_kid":  # names the RSA key, whose JWK pins RS256
        return jwt.encode(claims, EC_KEY, algorithm="ES256", headers={"kid": KID})
    if kind == "alg_none":
        header = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": KID}).encode())
        return f"{header}.{_b64(json.dumps(claims).encode())}."
    if kind == "hs256_public_key":  # the classic key-confusion attack: HMAC keyed with the published public key
        header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": KID}).encode())
        signing_input = f"{header}.{_b64(json.dumps(claims).encode())}"
        mac = hmac.new(PUBLIC_PEM, signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{_b64(mac)}"
    raise ValueError(kind)


def issue(subject: str, *, audience: str | list[str], scope: str, client_id: str) -> dict[str, Any]:
    claims = claims_for(subject, audience=audience, scope=scope) | {"client_id": client_id}
    refresh = f"rt-{secrets.token_urlsafe(16)}"
    STATE.refresh[refresh] = {"sub": subject, "aud": audience, "scope": scope, "client_id": client_id}
    return {
        "access_token": sign(claims),
        "token_type": "Bearer",
        "expires_in": 3600,
        "scope": scope,
        "refresh_token": refresh,
    }


def verify(token: str, audience: str | None = None) -> dict[str, Any] | None:
    """Our own JWTs (any audience unless given), or an opaque token minted by /admin/mint."""
    if token in STATE.opaque:
        claims = STATE.opaque[token]
        return claims if claims["exp"] > time.time() else None
    try:
        options = {"verify_aud": audience is not None}
        return jwt.decode(
            token, SIGNING_KEY.public_key(), algorithms=["RS256"], audience=audience, issuer=BASE, options=options
        )
    except jwt.PyJWTError:
        return None


def error(code: str, description: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": code, "error_description": description}, status_code=status)


async def client_of(request: Request, form: Any) -> dict[str, Any] | None:
    """client_secret_post, client_secret_basic or a public client (none); None when authentication fails."""
    client_id, secret = form.get("client_id"), form.get("client_secret")
    header = request.headers.get("authorization", "")
    if header.lower().startswith("basic "):
        client_id, _, secret = base64.b64decode(header[6:]).decode().partition(":")
    client = STATE.clients.get(str(client_id))
    if client is None:
        return None
    if client.get("client_secret") and not hmac.compare_digest(str(secret or ""), client["client_secret"]):
        return None
    return client


# ---- authorization server ---------------------------------------------------------------------------------------


async def metadata(request: Request) -> Response:
    return JSONResponse(
        {
            "issuer": BASE,
            "authorization_endpoint": f"{BASE}/authorize",
            "token_endpoint": f"{BASE}/token",
            "jwks_uri": f"{BASE}/jwks",
            "introspection_endpoint": f"{BASE}/introspect",
            "registration_endpoint": f"{BASE}/register",
            "scopes_supported": ["mcp", "read", "write", "admin"],
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code", "refresh_token", TOKEN_EXCHANGE, "client_credentials"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic", "none"],
        }
    )


async def jwks(request: Request) -> Response:
    STATE.jwks_fetches += 1
    if not STATE.jwks_up:
        return JSONResponse({"error": "down"}, status_code=503)
    return JSONResponse({"keys": _public_jwks()})


async def register(request: Request) -> Response:
    body = await request.json()
    uris = body.get("redirect_uris") or []
    if not uris:
        return error("invalid_redirect_uri", "redirect_uris is required")
    client_id = f"dyn-{secrets.token_urlsafe(8)}"
    method = body.get("token_endpoint_auth_method") or "client_secret_post"
    client = {
        **body,
        "client_id": client_id,
        "client_id_issued_at": int(time.time()),
        "token_endpoint_auth_method": method,
    }
    if method != "none":
        client["client_secret"] = secrets.token_urlsafe(24)
    STATE.clients[client_id] = client
    return JSONResponse(client, status_code=201)


def _login_form(params: dict[str, str]) -> HTMLResponse:
    hidden = "".join(f"<input type='hidden' name='{k}' value='{v}'>" for k, v in params.items() if k != "login")
    return HTMLResponse(f"<form method='get'>{hidden}<input name='login'><button>Log in</button></form>")


async def authorize(request: Request) -> Response:
    params = dict(request.query_params)
    client = STATE.clients.get(params.get("client_id", ""))
    if client is None:
        return error("invalid_client", "unknown client_id")
    redirect_uri = params.get("redirect_uri", "")
    if redirect_uri not in client.get("redirect_uris", []):
        return error("invalid_request", "redirect_uri is not registered for this client")
    if params.get("response_type") != "code" or params.get("code_challenge_method") != "S256":
        return error("invalid_request", "response_type=code with PKCE S256 only")
    if not params.get("code_challenge"):
        return error("invalid_request", "code_challenge is required")
    login = params.get("login")
    if not login:
        return _login_form(params)
    code = secrets.token_urlsafe(16)
    STATE.codes[code] = {
        "client_id": client["client_id"],
        "redirect_uri": redirect_uri,
        "challenge": params["code_challenge"],
        "sub": login,
        "scope": params.get("scope", ""),
        "resource": params.get("resource"),
        "expires": time.time() + 300,
    }
    answer = {"code": code, "iss": BASE} | ({"state": params["state"]} if "state" in params else {})
    return RedirectResponse(f"{redirect_uri}?{urlencode(answer)}", status_code=302)


async def token(request: Request) -> Response:
    form = await request.form()
    client = await client_of(request, form)
    if client is None:
        return error("invalid_client", "client authentication failed", 401)
    grant = form.get("grant_type")
    if grant == "authorization_code":
        record = STATE.codes.pop(str(form.get("code")), None)
        if record is None or record["expires"] < time.time() or record["client_id"] != client["client_id"]:
            return error("invalid_grant", "unknown or expired code")
        if form.get("redirect_uri") != record["redirect_uri"]:
            return error("invalid_grant", "redirect_uri differs from the authorization request")
        digest = _b64(hashlib.sha256(str(form.get("code_verifier", "")).encode()).digest())
        if digest != record["challenge"]:
            return error("invalid_grant", "PKCE verification failed")
        audience = str(form.get("resource") or record["resource"] or client["client_id"])
        return JSONResponse(
            issue(record["sub"], audience=audience, scope=record["scope"], client_id=client["client_id"])
        )
    if grant == "refresh_token":
        record = STATE.refresh.pop(str(form.get("refresh_token")), None)
        if record is None or record["client_id"] != client["client_id"]:
            return error("invalid_grant", "unknown refresh token")
        return JSONResponse(
            issue(record["sub"], audience=record["aud"], scope=record["scope"], client_id=client["client_id"])
        )
    if grant == TOKEN_EXCHANGE:
        return exchange(form, client)
    if grant == "client_credentials":
        audience = str(form.get("resource") or form.get("audience") or client["client_id"])
        claims = claims_for(client["client_id"], audience=audience, scope=str(form.get("scope") or ""))
        return JSONResponse({"access_token": sign(claims), "token_type": "Bearer", "expires_in": 3600})
    return error("unsupported_grant_type", f"grant {grant!r} is not supported")


def exchange(form: Any, client: dict[str, Any]) -> Response:
    """RFC 8693: the subject token must be ours and current; the new token is for the requested audience only."""
    seen = {k: v for k, v in form.items() if k not in ("subject_token", "client_secret")}
    STATE.exchanges.append(seen)
    if form.get("subject_token_type") != ACCESS_TOKEN_TYPE:
        return error("invalid_request", "subject_token_type must be the access token type")
    subject = verify(str(form.get("subject_token", "")))
    if subject is None:
        return error("invalid_grant", "subject_token is invalid or expired")
    audience = form.get("audience") or form.get("resource")
    if not audience:
        return error("invalid_target", "audience or resource is required")
    if audience not in client.get("allowed_audiences", []):
        return error("invalid_target", f"client may not exchange for {audience}")
    scope = str(form.get("scope") or subject.get("scope") or "")
    lifetime = int(client.get("exchange_lifetime", 3600))
    claims = claims_for(subject["sub"], audience=str(audience), scope=scope, lifetime=lifetime)
    claims["act"] = {"sub": client["client_id"]}
    return JSONResponse(
        {
            "access_token": sign(claims),
            "issued_token_type": ACCESS_TOKEN_TYPE,
            "token_type": "Bearer",
            "expires_in": lifetime,
            "scope": scope,
        }
    )


async def introspect(request: Request) -> Response:
    form = await request.form()
    client = await client_of(request, form)
    if client is None or not client.get("client_secret"):
        return error("invalid_client", "client authentication failed", 401)
    STATE.introspections += 1
    claims = verify(str(form.get("token", "")))
    if claims is None:
        return JSONResponse({"active": False})
    return JSONResponse({"active": True, "token_type": "Bearer", **claims})


# ---- test knobs -------------------------------------------------------------------------------------------------


async def admin_mint(request: Request) -> Response:
    """A token for `sub` with the given claims; `kind` makes it broken on purpose; `opaque` makes it a reference."""
    body = await request.json()
    now = int(time.time())
    claims = claims_for(body.get("sub", "alice"), audience=body.get("aud", RESOURCE), scope=body.get("scope", "mcp"))
    claims["exp"] = now + int(body.get("exp_in", 3600))
    claims["nbf"] = now + int(body.get("nbf_in", 0))
    for key in ("iss", "scp", "client_id"):
        if key in body:
            claims[key] = body[key]
    for key in body.get("drop", []):
        claims.pop(key, None)
    if body.get("opaque"):
        value = f"opaque-{secrets.token_urlsafe(24)}"
        STATE.opaque[value] = claims
        return JSONResponse({"token": value})
    kind = body.get("kind")
    return JSONResponse({"token": forge(claims, kind) if kind else sign(claims)})


async def admin_jwks(request: Request) -> Response:
    if request.method == "POST":
        STATE.jwks_up = bool((await request.json())["up"])
    return JSONResponse({"up": STATE.jwks_up, "fetches": STATE.jwks_fetches, "introspections": STATE.introspections})


async def admin_clients(request: Request) -> Response:
    """A confidential client with a known secret, its redirect URIs and the audiences it may exchange for."""
    body = await request.json()
    STATE.clients[body["client_id"]] = {
        "client_id": body["client_id"],
        "client_secret": body["client_secret"],
        "redirect_uris": body.get("redirect_uris", []),
        "allowed_audiences": body.get("allowed_audiences", []),
        "exchange_lifetime": body.get("exchange_lifetime", 3600),
        "token_endpoint_auth_method": "client_secret_post",
    }
    return JSONResponse({"ok": True})


async def admin_exchanges(request: Request) -> Response:
    return JSONResponse(STATE.exchanges)


# ---- the protected MCP backend ----------------------------------------------------------------------------------


class OwnTokens:
    """The backend's verifier: this AS's JWTs whose audience is the backend itself."""

    async def verify_token(self, token: str) -> AccessToken | None:
        claims = verify(token, audience=RESOURCE)
        if claims is None:
            return None
        return AccessToken(
            token=token,
            client_id=str(claims.get("client_id", "?")),
            scopes=claims["scope"].split(),
            expires_at=claims["exp"],
            subject=claims["sub"],
            claims={"iss": claims["iss"]},
        )


mcp = MCPServer(
    "jwt-protected",
    log_level="WARNING",
    token_verifier=OwnTokens(),
    auth=AuthSettings(issuer_url=BASE, resource_server_url=RESOURCE, validate_token_resource=False),
)


@mcp.tool(description="Who the bearer token belongs to.")
def whoami() -> str:
    token = get_access_token()
    return json.dumps({"subject": token.subject if token else None})


ROUTES = [
    ("/.well-known/oauth-authorization-server", metadata, ["GET"]),
    ("/jwks", jwks, ["GET"]),
    ("/register", register, ["POST"]),
    ("/authorize", authorize, ["GET"]),
    ("/token", token, ["POST"]),
    ("/introspect", introspect, ["POST"]),
    ("/admin/mint", admin_mint, ["POST"]),
    ("/admin/jwks", admin_jwks, ["GET", "POST"]),
    ("/admin/clients", admin_clients, ["POST"]),
    ("/admin/exchanges", admin_exchanges, ["GET"]),
]
for path, handler, methods in ROUTES:
    mcp.custom_route(path, methods=methods)(handler)


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(mcp.streamable_http_app(), host="127.0.0.1", port=ARGS.port, log_level="warning")
