"""A fake Cloud KMS REST endpoint on 127.0.0.1 for contract tests.

No emulator of Cloud KMS exists, so these tests stop at the SDK boundary:
google-cloud-kms builds real REST requests (``transport="rest"``) and sends
them over HTTP to this server, which records each one and responds with the
JSON documented for Cloud KMS v1 (resources ``CryptoKey`` and
``CryptoKeyVersion``, methods create, get, list, encrypt, decrypt and
destroy). It models the rules the tests rely on:

* encrypt uses the key's primary version and decrypt finds the version from
  the ciphertext, with real AES-256-GCM and the additional authenticated data;
* destroy sets the version to ``DESTROY_SCHEDULED`` with ``destroyTime`` one
  ``destroyScheduledDuration`` away, and only an enabled or disabled version
  can be destroyed (``FAILED_PRECONDITION`` otherwise);
* decrypting with a version that is not enabled returns ``FAILED_PRECONDITION``.

Everything else the service does (IAM, rotation, import, key handles) is
absent. Passing these tests says that Lethe sends the documented requests
and reads the documented responses, not that the real service accepts them.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
import urllib.parse
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_KEY = r"projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/:]+"
_ROUTES = [
    (
        "POST",
        re.compile(rf"^/v1/(?P<name>{_KEY}/cryptoKeyVersions/\d+):destroy$"),
        "destroy",
    ),
    (
        "GET",
        re.compile(rf"^/v1/(?P<name>{_KEY}/cryptoKeyVersions/\d+)$"),
        "get_version",
    ),
    ("GET", re.compile(rf"^/v1/(?P<name>{_KEY})/cryptoKeyVersions$"), "list_versions"),
    ("POST", re.compile(rf"^/v1/(?P<name>{_KEY}):encrypt$"), "encrypt"),
    ("POST", re.compile(rf"^/v1/(?P<name>{_KEY}):decrypt$"), "decrypt"),
    ("GET", re.compile(rf"^/v1/(?P<name>{_KEY})$"), "get_key"),
    (
        "POST",
        re.compile(
            r"^/v1/(?P<name>projects/[^/]+/locations/[^/]+/keyRings/[^/]+)/cryptoKeys$"
        ),
        "create_key",
    ),
]


def _timestamp(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class FakeVersion:
    name: str
    material: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    state: str = "ENABLED"
    destroy_time: datetime | None = None

    def resource(self) -> dict[str, Any]:
        body = {
            "name": self.name,
            "state": self.state,
            "algorithm": "GOOGLE_SYMMETRIC_ENCRYPTION",
            "protectionLevel": "SOFTWARE",
            "createTime": _timestamp(datetime.now(UTC)),
        }
        if self.destroy_time is not None:
            body["destroyTime"] = _timestamp(self.destroy_time)
        return body


@dataclass
class FakeKey:
    name: str
    labels: dict[str, str]
    destroy_seconds: int
    purpose: str = "ENCRYPT_DECRYPT"
    versions: list[FakeVersion] = field(default_factory=list)

    def primary(self) -> FakeVersion | None:
        enabled = [version for version in self.versions if version.state == "ENABLED"]
        return enabled[-1] if enabled else None

    def resource(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": self.name,
            "purpose": self.purpose,
            "labels": self.labels,
            "destroyScheduledDuration": f"{self.destroy_seconds}s",
            "versionTemplate": {"algorithm": "GOOGLE_SYMMETRIC_ENCRYPTION"},
        }
        primary = self.primary()
        if primary is not None:
            body["primary"] = primary.resource()
        return body


class FakeCloudKms:
    """The model behind the server: keys, versions and the requests received."""

    def __init__(self) -> None:
        self.keys: dict[str, FakeKey] = {}
        #: (method, path, parsed JSON body or None) of every request received.
        self.requests: list[tuple[str, str, Any]] = []
        #: Returns an HTTP status for a request that must fail (method, path).
        self.deny: Any = lambda method, path: None
        self.lock = threading.Lock()

    # -- helpers for tests ------------------------------------------------------

    def add_key(
        self, name: str, destroy_seconds: int = 86400, versions: int = 1
    ) -> FakeKey:
        """Create a key directly in the model, as its owner would have."""
        key = FakeKey(name=name, labels={}, destroy_seconds=destroy_seconds)
        for number in range(1, versions + 1):
            key.versions.append(FakeVersion(f"{name}/cryptoKeyVersions/{number}"))
        self.keys[name] = key
        return key

    def version(self, name: str) -> FakeVersion:
        key_name = name.split("/cryptoKeyVersions/")[0]
        for version in self.keys[key_name].versions:
            if version.name == name:
                return version
        raise KeyError(name)

    def sent(self, method: str, fragment: str) -> list[tuple[str, Any]]:
        """Return (path, body) of recorded requests of one method containing ``fragment``."""
        return [
            (path, body)
            for verb, path, body in self.requests
            if verb == method and fragment in path
        ]

    # -- request handling -------------------------------------------------------

    def handle(
        self, method: str, path: str, query: dict[str, str], body: Any
    ) -> tuple[int, Any]:
        with self.lock:
            self.requests.append((method, path, body))
            status = self.deny(method, path)
            if status is not None:
                return _error(status, "PERMISSION_DENIED", "denied by the test")
            for verb, pattern, handler in _ROUTES:
                match = pattern.match(path)
                if verb == method and match:
                    return getattr(self, f"_{handler}")(
                        match["name"], query, body or {}
                    )
            return _error(404, "NOT_FOUND", f"no route for {method} {path}")

    def _create_key(
        self, parent: str, query: dict[str, str], body: dict
    ) -> tuple[int, Any]:
        key_id = query.get("cryptoKeyId", "")
        name = f"{parent}/cryptoKeys/{key_id}"
        if not re.fullmatch(r"[a-zA-Z0-9_-]{1,63}", key_id):
            return _error(400, "INVALID_ARGUMENT", f"invalid cryptoKeyId {key_id!r}")
        if name in self.keys:
            return _error(409, "ALREADY_EXISTS", f"{name} already exists")
        duration = body.get("destroyScheduledDuration", "2592000s")
        key = FakeKey(
            name=name,
            labels=dict(body.get("labels", {})),
            destroy_seconds=int(float(duration.rstrip("s"))),
            purpose=body.get("purpose", "ENCRYPT_DECRYPT"),
        )
        if not query.get("skipInitialVersionCreation") in ("true", "True"):
            key.versions.append(FakeVersion(f"{name}/cryptoKeyVersions/1"))
        self.keys[name] = key
        return 200, key.resource()

    def _get_key(self, name: str, query: dict, body: dict) -> tuple[int, Any]:
        if name not in self.keys:
            return _error(404, "NOT_FOUND", f"{name} not found")
        return 200, self.keys[name].resource()

    def _list_versions(self, name: str, query: dict, body: dict) -> tuple[int, Any]:
        if name not in self.keys:
            return _error(404, "NOT_FOUND", f"{name} not found")
        versions = [version.resource() for version in self.keys[name].versions]
        return 200, {"cryptoKeyVersions": versions, "totalSize": len(versions)}

    def _get_version(self, name: str, query: dict, body: dict) -> tuple[int, Any]:
        try:
            return 200, self.version(name).resource()
        except KeyError:
            return _error(404, "NOT_FOUND", f"{name} not found")

    def _destroy(self, name: str, query: dict, body: dict) -> tuple[int, Any]:
        try:
            version = self.version(name)
        except KeyError:
            return _error(404, "NOT_FOUND", f"{name} not found")
        if version.state not in ("ENABLED", "DISABLED"):
            return _error(
                400, "FAILED_PRECONDITION", f"{name} is in state {version.state}"
            )
        key = self.keys[name.split("/cryptoKeyVersions/")[0]]
        version.state = "DESTROY_SCHEDULED"
        version.destroy_time = datetime.now(UTC) + timedelta(
            seconds=key.destroy_seconds
        )
        return 200, version.resource()

    def _encrypt(self, name: str, query: dict, body: dict) -> tuple[int, Any]:
        key = self.keys.get(name)
        if key is None:
            return _error(404, "NOT_FOUND", f"{name} not found")
        primary = key.primary()
        if primary is None:
            return _error(400, "FAILED_PRECONDITION", f"{name} has no primary version")
        plaintext = base64.b64decode(body.get("plaintext", ""))
        aad = base64.b64decode(body.get("additionalAuthenticatedData", ""))
        nonce = secrets.token_bytes(12)
        number = int(primary.name.rsplit("/", 1)[1])
        sealed = AESGCM(primary.material).encrypt(nonce, plaintext, aad)
        ciphertext = number.to_bytes(4, "big") + nonce + sealed
        return 200, {
            "name": primary.name,
            "ciphertext": base64.b64encode(ciphertext).decode(),
            "protectionLevel": "SOFTWARE",
        }

    def _decrypt(self, name: str, query: dict, body: dict) -> tuple[int, Any]:
        key = self.keys.get(name)
        if key is None:
            return _error(404, "NOT_FOUND", f"{name} not found")
        ciphertext = base64.b64decode(body.get("ciphertext", ""))
        aad = base64.b64decode(body.get("additionalAuthenticatedData", ""))
        number = int.from_bytes(ciphertext[:4], "big")
        try:
            version = self.version(f"{name}/cryptoKeyVersions/{number}")
        except KeyError:
            return _error(
                400, "INVALID_ARGUMENT", "Decryption failed: the ciphertext is invalid."
            )
        if version.state != "ENABLED":
            return _error(
                400,
                "FAILED_PRECONDITION",
                f"{version.name} is not enabled, current state is: {version.state}.",
            )
        try:
            plaintext = AESGCM(version.material).decrypt(
                ciphertext[4:16], ciphertext[16:], aad
            )
        except InvalidTag:
            return _error(
                400, "INVALID_ARGUMENT", "Decryption failed: the ciphertext is invalid."
            )
        return 200, {
            "plaintext": base64.b64encode(plaintext).decode(),
            "usedPrimary": True,
        }


def _error(code: int, status: str, message: str) -> tuple[int, Any]:
    return code, {"error": {"code": code, "message": message, "status": status}}


class _Handler(BaseHTTPRequestHandler):
    model: FakeCloudKms

    def _serve(self) -> None:
        parts = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(parts.query))
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw.strip() else None
        status, payload = self.model.handle(
            self.command, urllib.parse.unquote(parts.path), query, body
        )
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PATCH = _serve

    def log_message(self, format: str, *args: Any) -> None:
        return


class FakeCloudKmsServer:
    """Serve a FakeCloudKms model over HTTP on 127.0.0.1 (port chosen by the OS)."""

    def __init__(self) -> None:
        self.model = FakeCloudKms()
        handler = type("Handler", (_Handler,), {"model": self.model})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeCloudKmsServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def client(endpoint: str) -> Any:
    """Return a Cloud KMS client for the fake: REST transport, anonymous credentials."""
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import kms

    return kms.KeyManagementServiceClient(
        credentials=AnonymousCredentials(),
        transport="rest",
        client_options=ClientOptions(api_endpoint=endpoint),
    )
