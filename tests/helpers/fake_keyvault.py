"""A recording Azure Key Vault transport for contract tests at the SDK boundary.

No emulator of Key Vault exists, so these tests stop at the SDK boundary:
azure-keyvault-keys builds real requests and ``FakeKeyVaultTransport``
replaces its HTTP transport. It records each request and responds with the
JSON documented for the Key Vault keys REST API (key bundles, deleted key
bundles, wrapkey and unwrapkey results, and ``{"error": {"code", "message"}}``
errors). It models the rules the tests rely on:

* the first request of a client gets 401 with a bearer challenge, as the
  service sends, so the SDK's challenge authentication runs;
* keys are real RSA keys, and unwrapkey decrypts RSA-OAEP-256;
* with soft delete, a deleted key is listed under ``deletedkeys`` with its
  scheduled purge date; purging it is refused with 403 when the recovery
  level has no ``Purgeable`` (purge protection);
* a deleted or purged key returns 404 ``KeyNotFound`` to get and unwrapkey.

Passing these tests shows that Lethe sends the documented requests and reads
the documented responses, not that the real service accepts them. The vault
host ends in ``.invalid``, a name that never resolves, and no request leaves
the process.
"""

from __future__ import annotations

import base64
import io
import json
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from typing import Any

import requests
from azure.core.credentials import AccessToken
from azure.core.pipeline.transport import RequestsTransport
from azure.core.rest._requests_basic import RestRequestsTransportResponse
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

VAULT_URL = "https://lethe-test.vault.invalid"
_OAEP_256 = padding.OAEP(
    mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None
)


def _b64url(number: int) -> str:
    raw = number.to_bytes((number.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class FixedTokenCredential:
    """A credential that returns a made-up token and contacts nothing."""

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("fake-token", int(time.time()) + 3600)


@dataclass
class FakeKey:
    name: str
    version: str
    private: rsa.RSAPrivateKey = field(repr=False)
    tags: dict[str, str]
    key_ops: list[str]
    created: int = field(default_factory=lambda: int(time.time()))
    deleted_date: int | None = None
    scheduled_purge_date: int | None = None


@dataclass
class FakeKeyVaultTransport(RequestsTransport):
    #: The vault's recovery level; without "Purgeable", purge protection is on.
    recovery_level: str = "Recoverable+Purgeable"
    recoverable_days: int = 90
    keys: dict[str, FakeKey] = field(default_factory=dict)
    deleted: dict[str, FakeKey] = field(default_factory=dict)
    #: (method, path) of every request, with the API version query left out.
    requests_sent: list[tuple[str, str]] = field(default_factory=list)
    bodies: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__()

    # -- helpers for tests ------------------------------------------------------

    def add_key(self, name: str) -> FakeKey:
        """Create a key directly in the model, as its owner would have."""
        key = FakeKey(
            name=name,
            version=uuid.uuid4().hex,
            private=rsa.generate_private_key(public_exponent=65537, key_size=2048),
            tags={},
            key_ops=["wrapKey", "unwrapKey"],
        )
        self.keys[name] = key
        return key

    def key_url(self, key: FakeKey) -> str:
        return f"{VAULT_URL}/keys/{key.name}/{key.version}"

    def sent(self, method: str, fragment: str) -> list[str]:
        return [
            path
            for verb, path in self.requests_sent
            if verb == method and fragment in path
        ]

    # -- transport ------------------------------------------------------------

    def send(self, request, **kwargs):
        parts = urllib.parse.urlsplit(request.url)
        if f"{parts.scheme}://{parts.netloc}" != VAULT_URL:
            raise AssertionError(f"request to an unexpected host: {request.url}")
        path = urllib.parse.unquote(parts.path)
        body = json.loads(request.body) if request.body else None
        if "Authorization" not in request.headers:
            status, headers, payload = self._challenge()
        else:
            self.requests_sent.append((request.method, path))
            self.bodies.append(body)
            status, payload = self._dispatch(request.method, path, body or {})
            headers = {"Content-Type": "application/json; charset=utf-8"}
        response = requests.Response()
        response.status_code = status
        response.headers.update({"x-ms-request-id": str(uuid.uuid4()), **headers})
        content = json.dumps(payload).encode() if payload is not None else b""
        response.raw = io.BytesIO(content)
        response.url = request.url
        response.reason = "OK" if status < 400 else "Error"
        # azure-keyvault-keys sends azure.core.rest requests, which expect the
        # response type azure-core's own RequestsTransport returns for them.
        result = RestRequestsTransportResponse(
            request=request, internal_response=response
        )
        result.read()
        return result

    def _challenge(self) -> tuple[int, dict, Any]:
        header = (
            'Bearer authorization="https://login.invalid/00000000-0000-0000-0000-'
            '000000000000", resource="https://vault.invalid"'
        )
        return 401, {"WWW-Authenticate": header}, {"error": {"code": "Unauthorized"}}

    # -- routing --------------------------------------------------------------

    def _dispatch(self, method: str, path: str, body: dict) -> tuple[int, Any]:
        segments = [segment for segment in path.split("/") if segment]
        if segments[:1] == ["deletedkeys"] and len(segments) == 2:
            return self._deleted_key(method, segments[1])
        if segments[:1] != ["keys"] or len(segments) < 2:
            return _error(400, "BadParameter", f"unsupported path {path}")
        name = segments[1]
        rest = segments[2:]
        if method == "POST" and rest == ["create"]:
            return self._create(name, body)
        if method == "DELETE" and not rest:
            return self._delete(name)
        key = self.keys.get(name)
        if key is None:
            return _error(
                404, "KeyNotFound", f"A key with (name/id) {name} was not found"
            )
        if method == "GET" and len(rest) <= 1:
            return 200, self._bundle(key)
        if method == "POST" and len(rest) == 2 and rest[1] in ("wrapkey", "unwrapkey"):
            return self._wrap(key, rest[1], body)
        return _error(400, "BadParameter", f"unsupported request {method} {path}")

    def _create(self, name: str, body: dict) -> tuple[int, Any]:
        if name in self.deleted:
            return _error(
                409, "Conflict", f"key {name} is in a deleted but recoverable state"
            )
        key = FakeKey(
            name=name,
            version=uuid.uuid4().hex,
            private=rsa.generate_private_key(
                public_exponent=65537, key_size=int(body.get("key_size", 2048))
            ),
            tags=dict(body.get("tags") or {}),
            key_ops=list(body.get("key_ops") or []),
        )
        self.keys[name] = key
        return 200, self._bundle(key)

    def _delete(self, name: str) -> tuple[int, Any]:
        key = self.keys.pop(name, None)
        if key is None:
            return _error(
                404, "KeyNotFound", f"A key with (name/id) {name} was not found"
            )
        key.deleted_date = int(time.time())
        key.scheduled_purge_date = key.deleted_date + self.recoverable_days * 86400
        self.deleted[name] = key
        return 200, self._deleted_bundle(key)

    def _deleted_key(self, method: str, name: str) -> tuple[int, Any]:
        key = self.deleted.get(name)
        if key is None:
            return _error(404, "KeyNotFound", f"Deleted Key not found: {name}")
        if method == "GET":
            return 200, self._deleted_bundle(key)
        if method == "DELETE":
            if "Purgeable" not in self.recovery_level:
                return _error(
                    403,
                    "Forbidden",
                    "Operation 'purge' is not allowed because purge protection is "
                    "enabled for this vault.",
                )
            del self.deleted[name]
            return 204, None
        return _error(400, "BadParameter", f"unsupported request {method}")

    def _wrap(self, key: FakeKey, operation: str, body: dict) -> tuple[int, Any]:
        if body.get("alg") != "RSA-OAEP-256":
            return _error(
                400, "BadParameter", f"unexpected algorithm {body.get('alg')}"
            )
        value = _unb64url(body["value"])
        if operation == "wrapkey":
            result = key.private.public_key().encrypt(value, _OAEP_256)
        else:
            result = key.private.decrypt(value, _OAEP_256)
        encoded = base64.urlsafe_b64encode(result).rstrip(b"=").decode()
        return 200, {"kid": self.key_url(key), "value": encoded}

    def _bundle(self, key: FakeKey) -> dict[str, Any]:
        numbers = key.private.public_key().public_numbers()
        return {
            "key": {
                "kid": self.key_url(key),
                "kty": "RSA",
                "key_ops": key.key_ops,
                "n": _b64url(numbers.n),
                "e": _b64url(numbers.e),
            },
            "attributes": {
                "enabled": True,
                "created": key.created,
                "updated": key.created,
                "recoveryLevel": self.recovery_level,
                "recoverableDays": self.recoverable_days,
            },
            "tags": key.tags,
        }

    def _deleted_bundle(self, key: FakeKey) -> dict[str, Any]:
        return {
            **self._bundle(key),
            "recoveryId": f"{VAULT_URL}/deletedkeys/{key.name}",
            "deletedDate": key.deleted_date,
            "scheduledPurgeDate": key.scheduled_purge_date,
        }


def _error(status: int, code: str, message: str) -> tuple[int, Any]:
    return status, {"error": {"code": code, "message": message}}
