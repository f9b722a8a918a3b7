"""The optional API key, the short-lived one-use session tokens it buys, and the browser Origin
allowlist (docs/operations.md: Security).

Browsers cannot set headers on a WebSocket, so the page trades the key (a bearer header on
`POST /api/tokens`) for a token it passes as `?token=` to `/ws` or `POST /api/offer`. A token
is `<expiry ms>.<nonce>.<HMAC-SHA256>` under a secret drawn at startup: nothing to store until
it is spent, and a restart voids every outstanding token.
"""

import hashlib
import hmac
import logging
import re
import secrets
import time
from urllib.parse import urlsplit

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from loguru import logger

from bot.request_guards import LOOPBACK_HOSTS
from bot.settings import Settings

_TOKEN_IN_URL = re.compile(r"([?&]token=)[^&\s\"]++")


def _redacted(value):
    if isinstance(value, str) and "token=" in value:
        return _TOKEN_IN_URL.sub(r"\1[redacted]", value)
    return value


class RedactTokensInLog(logging.Filter):
    """Uvicorn logs each request's path with its query string, so a `/ws?token=...` line
    would put a live session token in the server log: the value is replaced there, in the
    message and in each of its arguments (uvicorn's access formatter reads the arguments one
    by one, so they must stay as many as they were)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = _redacted(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redacted(arg) for arg in record.args)
        elif isinstance(record.args, dict):
            record.args = {key: _redacted(arg) for key, arg in record.args.items()}
        return True


def redact_tokens_in_server_log() -> None:
    for name in ("uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).addFilter(RedactTokensInLog())


_bearer = HTTPBearer(auto_error=False, description="The AGENT_API_KEY value.")


class TokenIssuer:
    def __init__(self, ttl_secs: float):
        self.ttl_secs = ttl_secs
        self._secret = secrets.token_bytes(32)
        self._spent: dict[str, float] = {}  # nonce -> expiry (s), kept until it expires

    def _sign(self, payload: str) -> str:
        return hmac.new(self._secret, payload.encode(), hashlib.sha256).hexdigest()

    def issue(self) -> str:
        expires_ms = int((time.time() + self.ttl_secs) * 1000)
        payload = f"{expires_ms}.{secrets.token_urlsafe(16)}"
        return f"{payload}.{self._sign(payload)}"

    def spend(self, token: str | None) -> str | None:
        """Consume `token`; returns what is wrong with it, or None when it was good."""
        if not token:
            return "a session token is required (POST /api/tokens with the API key)"
        payload, _, signature = token.rpartition(".")
        expires_ms, _, nonce = payload.partition(".")
        well_formed = token.isascii() and nonce and expires_ms.isdigit() and len(expires_ms) < 16
        # Bytes: compare_digest refuses a str with anything but ASCII in it.
        if not well_formed or not hmac.compare_digest(self._sign(payload).encode(), signature.encode()):
            return "invalid session token"
        now = time.time()
        if int(expires_ms) / 1000 <= now:
            return "expired session token"
        # Forget spent nonces once they would have expired anyway: the map stays small.
        self._spent = {n: exp for n, exp in self._spent.items() if exp > now}
        if nonce in self._spent:
            return "session token already used"
        self._spent[nonce] = int(expires_ms) / 1000
        return None


class Auth:
    """The access rules of one server, built from its settings."""

    def __init__(self, settings: Settings):
        self._key = settings.api_key.get_secret_value().encode() if settings.api_key else None
        self.tokens = TokenIssuer(settings.token_ttl_secs)
        self._origins = {o.lower() for o in settings.allowed_origins}
        self._peers: set[str] = set()  # WebRTC pc_ids opened with a token

    @property
    def required(self) -> bool:
        return self._key is not None

    def key_matches(self, presented: str | None) -> bool:
        # Constant time: how much of a guess matched must not leak through timing.
        key = self._key
        return key is not None and presented is not None and hmac.compare_digest(presented.encode(), key)

    # --- FastAPI dependencies ---

    def require_key(self, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> None:
        presented = credentials.credentials if credentials is not None else None
        if self.required and not self.key_matches(presented):
            raise HTTPException(401, detail="missing or wrong API key", headers={"WWW-Authenticate": "Bearer"})

    def require_origin(self, request: Request) -> None:
        if problem := self.origin_problem(request.headers):
            raise HTTPException(403, detail=problem)

    # --- checks shared by HTTP and WebSocket ---

    def origin_problem(self, headers) -> str | None:
        """Browsers always send Origin on WebSockets and POSTs; a page may connect from the
        server's own origin or an allowed one. Without Origin it is no browser (the key,
        when set, still applies)."""
        origin = headers.get("origin")
        if origin is None:
            return None
        origin = origin.rstrip("/").lower()
        if "*" in self._origins or origin in self._origins:
            return None
        if urlsplit(origin).netloc == (headers.get("host") or "").lower():
            return None
        return f"origin {origin!r} is not allowed (AGENT_ALLOWED_ORIGINS)"

    def token_problem(self, token: str | None) -> str | None:
        return self.tokens.spend(token) if self.required else None

    def allow_peer(self, pc_id: str) -> None:
        self._peers.add(pc_id)

    def forget_peer(self, pc_id: str) -> None:
        self._peers.discard(pc_id)

    def peer_allowed(self, pc_id: str) -> bool:
        return not self.required or pc_id in self._peers


def exposure_warning(settings: Settings) -> str | None:
    """The warning for a server anyone on the network can use, or None."""
    if settings.host in LOOPBACK_HOSTS or settings.api_key is not None:
        return None
    return (
        f"SERVING ON {settings.host} WITHOUT AN API KEY: anyone who can reach port"
        f" {settings.port} can start sessions and read every record. Set AGENT_API_KEY,"
        " or bind to 127.0.0.1."
    )


def warn_if_exposed(settings: Settings) -> None:
    if warning := exposure_warning(settings):
        bar = "!" * 78
        logger.warning(f"\n{bar}\n{warning}\n{bar}")
