"""Optional bearer API keys: from REST_API_KEYS and/or a file (a mounted Kubernetes Secret,
re-read when its modification time changes, so a rotated Secret applies without a restart)."""

from __future__ import annotations

import hmac
import os
from typing import Optional, Tuple

from .errors import ApiError, response


class KeyChecker:
    def __init__(self, keys: Tuple[str, ...], keys_file: Optional[str]) -> None:
        self._env_keys = tuple(k.encode() for k in keys)
        self._file = keys_file
        self._file_keys: Tuple[bytes, ...] = ()
        self._mtime: Optional[float] = None
        self._reload()

    @property
    def enabled(self) -> bool:
        return bool(self._env_keys) or self._file is not None

    def _reload(self) -> None:
        if self._file is None:
            return
        mtime = os.stat(self._file).st_mtime  # a missing file is a startup error, not "no auth"
        if mtime != self._mtime:
            with open(self._file, encoding="utf-8") as handle:
                self._file_keys = tuple(
                    line.strip().encode() for line in handle if line.strip() and not line.startswith("#")
                )
            self._mtime = mtime

    def check(self, authorization: Optional[str]) -> None:
        """Raise 401 unless the header is `Bearer <a configured key>`."""
        if not self.enabled:
            return
        try:
            self._reload()
        except OSError:
            pass  # keep the last keys read: a Secret update replaces the file's symlink briefly
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(
                401,
                "missing bearer API key (Authorization: Bearer <key>)",
                "Unauthorized",
                headers={"WWW-Authenticate": "Bearer"},
            )
        given = token.strip().encode()
        # Compare against every key, each in constant time, so timing reveals neither a key
        # nor which key matched.
        matched = False
        for key in self._env_keys + self._file_keys:
            matched |= hmac.compare_digest(given, key)
        if not matched:
            raise ApiError(401, "invalid API key", "Unauthorized", headers={"WWW-Authenticate": "Bearer"})


# Open to anyone who reaches the port: probes, Prometheus, the API docs.
OPEN_PATHS = frozenset({"/health", "/ready", "/metrics", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})


class AuthMiddleware:
    """The key check, from the request's headers, before its body is read: a caller without
    a valid key cannot make the service buffer (up to REST_MAX_BODY_BYTES) or parse anything.
    Placed outside BodyLimitMiddleware, which reads the body."""

    def __init__(self, app, keys: KeyChecker) -> None:
        self.app, self.keys = app, keys

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] not in OPEN_PATHS and self.keys.enabled:
            headers = dict(scope.get("headers", ()))
            authorization = headers.get(b"authorization")
            try:
                self.keys.check(authorization.decode("latin-1") if authorization is not None else None)
            except ApiError as err:
                # Connection: close - the unread body must not be parsed as a next request.
                err.headers["Connection"] = "close"
                return await response(scope, err)(scope, receive, send)
        return await self.app(scope, receive, send)
