"""The data-key store behind sealed files, and the plugin that shreds its keys.

Lethe seals files with one AES-256 data key per subject (or per dataset).
Each data key is stored wrapped: by a local key-encryption key (KEK) read
from a file or an environment variable, or by a per-subject key in AWS KMS,
Google Cloud KMS (``plugins._gcpkms``) or Azure Key Vault
(``plugins._keyvault``).
Destroying a subject's data key makes every sealed copy of that subject's
data unreadable, wherever the copies are (other servers, tapes, buckets).

The store is one file with mode 0600: a 64-byte header followed by
fixed-size slots, one JSON record per slot, padded with spaces. Fixed slots
let a destroyed key be overwritten in place, at the bytes that held it, and
new keys are appended in place, so no earlier version of the file is ever
left in freed blocks. After a destruction the file is compacted: the
remaining records are written to a new file (fsync, rename), and the old
inode is overwritten in place before its last reference is dropped.

A destroyed key leaves a tombstone with its key id, the SHA-256 of its
subject, the date and the job, so ``lethe unseal`` can report when and by
which job the key was destroyed.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import stat
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from plugins.base import (
    Check,
    Decision,
    Evidence,
    Item,
    JobContext,
    Method,
    PlannedItem,
    Plugin,
    PurgeResult,
    Refusal,
    Target,
    TargetInfo,
)
from plugins.errors import (
    AccessDenied,
    InvalidTarget,
    ItemChanged,
    MissingDependency,
    PluginError,
    PurgeFailed,
    TargetNotFound,
    TargetUnreachable,
)
from plugins.scan import FingerprintScanner

log = structlog.get_logger(__name__)

MAGIC = b"LETHE KEYSTORE v1"
HEADER_SIZE = 64
SLOT_SIZE = 1024
KEY_SIZE = 32
#: Maximum length of a subject id in UTF-8 bytes, so any record fits in one slot.
MAX_SUBJECT = 200
ACTIVE = "active"
DESTROYED = "destroyed"


class KeyStoreError(PluginError):
    """The key store file is unreadable, malformed or has unsafe permissions."""


class KeyNotFound(TargetNotFound):
    """The key store contains no data key with this id or for this subject."""


class KeyDestroyed(TargetNotFound):
    """The data key was destroyed, so data sealed with it cannot be unsealed."""

    def __init__(self, message: str, record: Mapping[str, Any]) -> None:
        super().__init__(message)
        self.record = dict(record)


class KekMissing(MissingDependency):
    """No key-encryption key is configured, or its file or variable is empty."""


class KekMismatch(AccessDenied):
    """The key-encryption key is not the one that wrapped the data key."""


def now_iso() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def subject_digest(subject: str) -> str:
    """Return the SHA-256 hex digest that stands for a subject in tombstones."""
    return hashlib.sha256(subject.encode("utf-8")).hexdigest()


# --- key-encryption keys ---------------------------------------------------


@dataclass(frozen=True)
class LocalKek:
    """A 256-bit key-encryption key held in memory; ``kek_id`` names it."""

    key: bytes = field(repr=False)

    @property
    def kek_id(self) -> str:
        digest = hashlib.sha256(b"lethe kek id\0" + self.key).hexdigest()
        return f"kek-{digest[:16]}"

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> LocalKek:
        """Read the KEK from ``kek_file`` or the variable named by ``kek_env``."""
        path = options.get("kek_file")
        variable = options.get("kek_env")
        if path:
            try:
                raw = Path(path).read_bytes()
            except FileNotFoundError:
                raise KekMissing(
                    f"key-encryption key file {path} not found; create it with "
                    f"'head -c 32 /dev/urandom > {path}; chmod 600 {path}'"
                ) from None
            except OSError as error:
                raise AccessDenied(
                    f"cannot read key-encryption key file {path}: {error.strerror}"
                ) from None
            return cls(_decode_kek(raw, f"file {path}"))
        if variable:
            value = os.environ.get(str(variable), "")
            if not value:
                raise KekMissing(
                    f"environment variable {variable} is empty or not set; "
                    "set it to 64 hex digits or base64 of 32 random bytes"
                )
            return cls(_decode_kek(value.encode(), f"variable {variable}"))
        raise KekMissing(
            "no key-encryption key configured; set keystore.kek_file or keystore.kek_env"
        )

    def wrap(self, data_key: bytes, key_id: str) -> bytes:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        nonce = secrets.token_bytes(12)
        return nonce + AESGCM(self.key).encrypt(nonce, data_key, _wrap_aad(key_id))

    def unwrap(self, wrapped: bytes, key_id: str, record_kek: str) -> bytes:
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        if record_kek != self.kek_id:
            raise KekMismatch(
                f"data key {key_id} was wrapped by key-encryption key {record_kek}, "
                f"but the configured one is {self.kek_id}; configure the key it was "
                "sealed with"
            )
        try:
            return AESGCM(self.key).decrypt(
                wrapped[:12], wrapped[12:], _wrap_aad(key_id)
            )
        except InvalidTag:
            raise KekMismatch(
                f"data key {key_id} does not authenticate under key-encryption key "
                f"{self.kek_id}; the store record was altered or the key is wrong"
            ) from None


def _wrap_aad(key_id: str) -> bytes:
    return b"lethe data key\0" + key_id.encode("ascii")


def _decode_kek(raw: bytes, source: str) -> bytes:
    """Accept 32 raw bytes, 64 hex digits or base64 of 32 bytes."""
    if len(raw) == KEY_SIZE:
        return raw
    text = raw.strip()
    with contextlib.suppress(ValueError):
        decoded = bytes.fromhex(text.decode("ascii"))
        if len(decoded) == KEY_SIZE:
            return decoded
    with contextlib.suppress(binascii.Error, ValueError):
        decoded = base64.b64decode(text, validate=True)
        if len(decoded) == KEY_SIZE:
            return decoded
    raise KekMissing(
        f"key-encryption key in {source} is not 32 bytes (raw, 64 hex digits or base64)"
    )


# --- the store -------------------------------------------------------------


@dataclass(frozen=True)
class DataKey:
    """An unwrapped data key and the id sealed files refer to it by."""

    key_id: str
    subject: str
    key: bytes = field(repr=False)


class KeyStore:
    """The slot file of wrapped data keys, as the module docstring describes.

    ``kms`` is an optional cloud backend (``AwsKmsBackend``, ``GcpKmsBackend``
    or ``AzureKeyVaultBackend``), named by its ``name`` in each record's
    ``backend`` field. Without it, keys are wrapped by the local KEK. The KEK
    is loaded only when a key is created or unwrapped, so destroying keys
    works without it.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        options: Mapping[str, Any] | None = None,
        kms: Any = None,
    ) -> None:
        self.path = Path(path)
        self.options = dict(options or {})
        self.kms = kms
        self._kek: LocalKek | None = None

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> KeyStore:
        """Build a store from the ``keystore`` settings (path, KEK, backend)."""
        path = options.get("path") or options.get("store")
        if not path:
            raise InvalidTarget("no key store path given; set keystore.path")
        backend = options.get("backend", "local")
        kms: Any = None
        if backend == "aws-kms":
            kms = AwsKmsBackend(options.get("aws_kms") or {})
        elif backend == "gcp-kms":
            from plugins._gcpkms import GcpKmsBackend

            kms = GcpKmsBackend(options.get("gcp_kms") or {})
        elif backend == "azure-keyvault":
            from plugins._keyvault import AzureKeyVaultBackend

            kms = AzureKeyVaultBackend(options.get("azure_keyvault") or {})
        elif backend != "local":
            raise InvalidTarget(
                f"unknown key store backend {backend!r}; expected local, aws-kms, "
                "gcp-kms or azure-keyvault"
            )
        return cls(path, options, kms)

    @property
    def backend(self) -> str:
        return self.kms.name if self.kms is not None else "local"

    @property
    def kek(self) -> LocalKek:
        if self._kek is None:
            self._kek = LocalKek.from_options(self.options)
        return self._kek

    # reading

    def records(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """Yield (slot number, record) for every readable slot."""
        try:
            with open(self.path, "rb") as stream:
                header = stream.read(HEADER_SIZE)
                if not header:
                    return  # created, but the first append did not finish
                self._check_header(header)
                slot = 0
                while block := stream.read(SLOT_SIZE):
                    record = _parse_slot(block)
                    if record is not None:
                        yield slot, record
                    slot += 1
        except FileNotFoundError:
            return
        except PermissionError:
            raise AccessDenied(
                f"cannot read key store {self.path}: permission denied"
            ) from None

    def _check_header(self, header: bytes) -> None:
        if not header.startswith(MAGIC):
            raise KeyStoreError(f"{self.path} is not a Lethe key store (bad header)")

    def find(self, key_id: str) -> tuple[int, dict[str, Any]]:
        for slot, record in self.records():
            if record.get("id") == key_id:
                return slot, record
        raise KeyNotFound(f"data key {key_id} not found in key store {self.path}")

    def active_for(self, subject: str) -> dict[str, Any] | None:
        for _slot, record in self.records():
            if record.get("state") == ACTIVE and record.get("subject") == subject:
                return record
        return None

    def data_key(self, key_id: str) -> DataKey:
        """Unwrap a data key; raises KeyDestroyed, KeyNotFound or KekMismatch."""
        _slot, record = self.find(key_id)
        if record.get("state") == DESTROYED:
            raise KeyDestroyed(destroyed_message(record), record)
        return DataKey(key_id, record["subject"], self._unwrap(record))

    def data_key_for(self, subject: str) -> DataKey:
        """Return the subject's active data key, creating one when there is none."""
        _check_subject(subject)
        with self._locked():
            record = self.active_for(subject)
            if record is not None:
                return DataKey(record["id"], subject, self._unwrap(record))
            return self._create(subject)

    def _unwrap(self, record: Mapping[str, Any]) -> bytes:
        wrapped = base64.b64decode(record["wrapped"])
        backend = record.get("backend", "local")
        if backend != "local":
            if self.kms is None or self.kms.name != backend:
                raise InvalidTarget(
                    f"data key {record['id']} is wrapped by the {backend} backend; "
                    f"set keystore.backend: {backend}"
                )
            return self.kms.unwrap(wrapped, record)
        return self.kek.unwrap(wrapped, record["id"], record.get("kek", ""))

    # writing

    def _create(self, subject: str) -> DataKey:
        key_id = f"dk-{secrets.token_hex(12)}"
        record: dict[str, Any] = {
            "id": key_id,
            "state": ACTIVE,
            "subject": subject,
            "created": now_iso(),
        }
        if self.kms is not None:
            data_key, wrapped, facts = self.kms.new_data_key(subject, key_id)
            record.update(backend=self.kms.name, **facts)
        else:
            data_key = secrets.token_bytes(KEY_SIZE)
            wrapped = self.kek.wrap(data_key, key_id)
            record.update(backend="local", kek=self.kek.kek_id)
        record["wrapped"] = base64.b64encode(wrapped).decode("ascii")
        self._append(_encode_slot(record))
        log.info("data key created", key_id=key_id, backend=record["backend"])
        return DataKey(key_id, subject, data_key)

    def _append(self, slot: bytes) -> None:
        """Append one slot in place; a new store gets its header first."""
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            _check_private(descriptor, self.path)
            size = os.fstat(descriptor).st_size
            if size == 0:
                os.write(descriptor, MAGIC.ljust(HEADER_SIZE - 1, b" ") + b"\n")
                size = HEADER_SIZE
            # A partial slot from an interrupted append is overwritten here.
            whole = HEADER_SIZE + (size - HEADER_SIZE) // SLOT_SIZE * SLOT_SIZE
            os.pwrite(descriptor, slot, whole)
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        _fsync_directory(self.path.parent)

    def destroy(self, key_id: str, job: str) -> dict[str, Any]:
        """Destroy a data key in place, compact the store, and return its tombstone.

        The slot is overwritten with random bytes and synced, then with the
        tombstone and synced, so the wrapped key never survives in this file
        even if the compaction is interrupted.
        """
        with self._locked():
            slot, record = self.find(key_id)
            if record.get("state") == DESTROYED:
                return record
            facts: dict[str, Any] = {}
            if self.kms is not None and record.get("backend") == self.kms.name:
                facts = self.kms.schedule_deletion(record)
            tombstone = {
                "id": key_id,
                "state": DESTROYED,
                "subject_sha256": subject_digest(record.get("subject", "")),
                "backend": record.get("backend", "local"),
                "created": record.get("created"),
                "destroyed": now_iso(),
                "job": job,
                **{k: v for k, v in record.items() if k.startswith("kms_")},
                **facts,
            }
            self._overwrite_slot(slot, _encode_slot(tombstone))
            self._compact()
            log.info("data key destroyed", key_id=key_id, job=job)
            return tombstone

    def _overwrite_slot(self, slot: int, replacement: bytes) -> None:
        offset = HEADER_SIZE + slot * SLOT_SIZE
        descriptor = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        try:
            os.pwrite(descriptor, secrets.token_bytes(SLOT_SIZE), offset)
            os.fsync(descriptor)
            os.pwrite(descriptor, replacement, offset)
            os.fsync(descriptor)
        finally:
            os.close(descriptor)

    def _compact(self) -> None:
        """Rewrite the store without free slots, then overwrite the old inode."""
        slots = [_encode_slot(record) for _slot, record in self.records()]
        temporary = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}")
        descriptor = os.open(
            temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600
        )
        try:
            os.write(
                descriptor, MAGIC.ljust(HEADER_SIZE - 1, b" ") + b"\n" + b"".join(slots)
            )
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        old = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        try:
            os.rename(temporary, self.path)
            _fsync_directory(self.path.parent)
            # The old inode has no name now; this descriptor is its last
            # reference, so overwrite its blocks before letting it go.
            size = os.fstat(old).st_size
            for offset in range(0, size, 1 << 20):
                os.pwrite(old, secrets.token_bytes(min(1 << 20, size - offset)), offset)
            os.fsync(old)
        finally:
            os.close(old)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold an exclusive lock on ``<store>.lock`` (the store itself is renamed)."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            os.close(descriptor)

    # sealed copies

    @property
    def copies_path(self) -> Path:
        return self.path.with_name(self.path.name + ".copies")

    def record_copy(self, key_id: str, location: str) -> None:
        """Note where a file sealed with ``key_id`` was written."""
        line = (
            json.dumps({"key_id": key_id, "location": location, "time": now_iso()})
            + "\n"
        )
        descriptor = os.open(
            self.copies_path,
            os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
            0o600,
        )
        try:
            os.write(descriptor, line.encode("utf-8"))
        finally:
            os.close(descriptor)

    def copies(self, key_id: str) -> list[str]:
        """Return the known locations of files sealed with ``key_id``."""
        try:
            lines = self.copies_path.read_text("utf-8").splitlines()
        except FileNotFoundError:
            return []
        found = []
        for line in lines:
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if entry.get("key_id") == key_id and entry["location"] not in found:
                    found.append(entry["location"])
        return found


def destroyed_message(record: Mapping[str, Any], subject: str | None = None) -> str:
    """Return the plain-words message for a destroyed key's tombstone."""
    owner = f"subject {subject}" if subject else f"key {record.get('id')}"
    message = (
        f"the data key for {owner} was destroyed on {record.get('destroyed', 'an unknown date')} "
        f"by job {record.get('job') or 'unknown'}; data sealed with it cannot be recovered"
    )
    return message


def _encode_slot(record: Mapping[str, Any]) -> bytes:
    text = json.dumps(record, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    if len(text) > SLOT_SIZE - 1:
        raise KeyStoreError(
            f"key record {record.get('id')} does not fit in a {SLOT_SIZE}-byte slot"
        )
    return text.ljust(SLOT_SIZE - 1, b" ") + b"\n"


def _parse_slot(block: bytes) -> dict[str, Any] | None:
    """Parse one slot; a torn or overwritten slot (random bytes) is skipped."""
    try:
        record = json.loads(block.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None
    return record if isinstance(record, dict) and "id" in record else None


def _check_subject(subject: str) -> None:
    if not subject or len(subject.encode("utf-8")) > MAX_SUBJECT:
        raise InvalidTarget(
            f"subject id must be 1 to {MAX_SUBJECT} bytes of UTF-8, not {subject!r}"
        )


def _check_private(descriptor: int, path: Path) -> None:
    mode = os.fstat(descriptor).st_mode
    if stat.S_IMODE(mode) & 0o077:
        raise KeyStoreError(
            f"key store {path} has mode {stat.S_IMODE(mode):o}; run 'chmod 600 {path}'"
        )


def _fsync_directory(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def block_device_of(path: Path) -> str | None:
    """Return the block device node holding ``path``, when sysfs names one."""
    device = os.stat(path).st_dev
    sysfs = Path(f"/sys/dev/block/{os.major(device)}:{os.minor(device)}")
    try:
        name = sysfs.resolve().name
    except OSError:
        return None
    node = Path("/dev") / name
    return str(node) if sysfs.exists() and node.exists() else None


# --- AWS KMS ---------------------------------------------------------------


class AwsKmsBackend:
    """Data keys wrapped by one AWS KMS key per subject.

    Destroying a subject's key schedules deletion of its KMS key. KMS keeps
    the key for the pending window (7 to 30 days) before deleting it, and
    the deletion can be cancelled until then. The plan and certificate
    state this as a residual risk.
    Options: ``region``, ``endpoint_url``, ``pending_window_days`` (default 7).
    """

    name = "aws-kms"

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.options = dict(options)
        window = int(self.options.get("pending_window_days", 7))
        if not 7 <= window <= 30:
            raise InvalidTarget(f"pending_window_days must be 7 to 30, not {window}")
        self.pending_window_days = window
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            try:
                import boto3
            except ImportError:
                raise MissingDependency(
                    "the AWS KMS backend needs boto3; install lethe[s3]"
                ) from None
            self._client = boto3.client(
                "kms",
                region_name=self.options.get("region"),
                endpoint_url=self.options.get("endpoint_url"),
            )
        return self._client

    def new_data_key(
        self, subject: str, key_id: str
    ) -> tuple[bytes, bytes, dict[str, Any]]:
        digest = subject_digest(subject)
        with _kms_errors("create a KMS key"):
            created = self.client.create_key(
                Description=f"Lethe data-key wrapper for subject sha256:{digest[:16]}",
                KeyUsage="ENCRYPT_DECRYPT",
                Tags=[{"TagKey": "lethe-subject-sha256", "TagValue": digest}],
            )
            metadata = created["KeyMetadata"]
            generated = self.client.generate_data_key(
                KeyId=metadata["KeyId"],
                KeySpec="AES_256",
                EncryptionContext={"lethe-key-id": key_id},
            )
        facts = {"kms_key": metadata["Arn"], "kms_key_id": metadata["KeyId"]}
        return generated["Plaintext"], generated["CiphertextBlob"], facts

    def unwrap(self, wrapped: bytes, record: Mapping[str, Any]) -> bytes:
        with _kms_errors(f"decrypt data key {record['id']}"):
            reply = self.client.decrypt(
                CiphertextBlob=wrapped,
                KeyId=record["kms_key_id"],
                EncryptionContext={"lethe-key-id": record["id"]},
            )
        return reply["Plaintext"]

    def schedule_deletion(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Schedule deletion of the subject's KMS key and return its date.

        KMS rejects the request with KMSInvalidStateException when the key
        is already pending deletion, as after a destroy that was interrupted
        before the store was written. That key's own date is returned.
        """
        try:
            with _kms_errors(f"schedule deletion of KMS key {record.get('kms_key')}"):
                reply = self.client.schedule_key_deletion(
                    KeyId=record["kms_key_id"],
                    PendingWindowInDays=self.pending_window_days,
                )
        except KeyDestroyed:
            state, date = self.key_state(record["kms_key_id"])
            if state != "PendingDeletion" or date is None:
                raise
            return {"kms_deletion_date": date}
        return {
            "kms_deletion_date": reply["DeletionDate"].astimezone(UTC).isoformat(),
            "kms_pending_window_days": self.pending_window_days,
        }

    def residual(self) -> str:
        return (
            f"AWS KMS deletes the wrapping key only after a pending window of "
            f"{self.pending_window_days} days; until then an administrator can cancel "
            "the deletion"
        )

    def plan_params(self) -> dict[str, Any]:
        return {"kms_pending_window_days": self.pending_window_days}

    def item_residual(self, record: Mapping[str, Any]) -> tuple[str, ...]:
        return ()

    def checks(
        self, tombstone: Mapping[str, Any], wrapped: bytes | None
    ) -> Iterator[Check]:
        """Check that the KMS key is pending deletion with a date."""
        try:
            state, date = self.key_state(tombstone["kms_key_id"])
        except PluginError as error:
            yield Check("kms-deletion", False, str(error))
            return
        passed = state == "PendingDeletion" and date is not None
        yield Check(
            "kms-deletion", passed, f"KMS key state {state}, deletion on {date}"
        )

    def key_state(self, kms_key_id: str) -> tuple[str, str | None]:
        """Return the KMS key's state and its deletion date, if scheduled."""
        with _kms_errors(f"describe KMS key {kms_key_id}"):
            metadata = self.client.describe_key(KeyId=kms_key_id)["KeyMetadata"]
        date = metadata.get("DeletionDate")
        return metadata["KeyState"], date.astimezone(UTC).isoformat() if date else None


@contextlib.contextmanager
def _kms_errors(action: str) -> Iterator[None]:
    """Translate botocore errors into plugin errors; the original goes to debug."""
    try:
        import botocore.exceptions as aws
    except ImportError:
        raise MissingDependency(
            "the AWS KMS backend needs boto3; install lethe[s3]"
        ) from None
    try:
        yield
    except aws.ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        log.debug("kms call failed", action=action, code=code, exc_info=True)
        message = f"could not {action}: {code}"
        if code in ("AccessDeniedException", "UnauthorizedOperation"):
            raise AccessDenied(
                f"{message}; grant the KMS permission to these credentials"
            ) from None
        if code == "NotFoundException":
            raise KeyNotFound(message) from None
        if code in ("KMSInvalidStateException", "DisabledException"):
            raise KeyDestroyed(
                f"{message}; the KMS key is pending deletion or disabled", {}
            ) from None
        raise PurgeFailed(message) from None
    except aws.BotoCoreError as error:
        log.debug("kms call failed", action=action, exc_info=True)
        raise TargetUnreachable(f"could not {action}: {type(error).__name__}") from None


# --- the plugin ------------------------------------------------------------


class KeysPlugin(Plugin):
    """Destroy data keys in Lethe's key store (``key://SUBJECT``, ``key://*``).

    Target options are the ``keystore`` settings (``path``, ``kek_file`` or
    ``kek_env``, ``backend``, ``aws_kms``, ``gcp_kms``, ``azure_keyvault``);
    ``key://*`` also needs
    ``all_keys: true`` or ``subject_prefix``. Verification checks that the
    key is gone, scans the store file and, when readable, its block device
    for the key's bytes, and checks that a sample sealed before the purge no
    longer decrypts.
    """

    name = "keys"
    schemes = ("key",)
    methods = (Method.PURGE_CRYPTO,)
    batch_size = 50

    OPTION_KEYS = frozenset(
        {
            "path",
            "store",
            "kek_file",
            "kek_env",
            "backend",
            "aws_kms",
            "gcp_kms",
            "azure_keyvault",
            "all_keys",
            "subject_prefix",
            "scan_device",
        }
    )

    def __init__(self, target: Target, context: JobContext) -> None:
        super().__init__(target, context)
        unknown = set(target.options) - self.OPTION_KEYS
        if unknown:
            raise InvalidTarget(
                f"unknown option(s) {', '.join(sorted(unknown))} for {target.url!r}"
            )
        self.subject = (
            urllib.parse.unquote(target.url.split("://", 1)[1])
            if "://" in target.url
            else ""
        )
        if not self.subject:
            raise InvalidTarget(
                f"target {target.url!r} names no subject; use key://SUBJECT or key://*"
            )
        if self.subject == "*" and not (
            target.options.get("all_keys") or target.options.get("subject_prefix")
        ):
            raise InvalidTarget(
                "key://* selects every data key; set all_keys: true or subject_prefix to say which"
            )
        self.store = KeyStore.from_options(target.options)
        self.log = log.bind(
            plugin=self.name, target=f"key://{subject_digest(self.subject)[:12]}"
        )
        self._samples: dict[str, tuple[bytes, bytes]] = {}
        self._wrapped: dict[str, bytes] = {}

    def describe(self) -> TargetInfo:
        if not self.store.path.exists():
            raise TargetNotFound(f"key store {self.store.path} does not exist")
        media = {
            "media_type": "key store file",
            "store": str(self.store.path),
            "backend": self.store.backend,
            "device": block_device_of(self.store.path) or "unknown",
        }
        residual = [
            (
                "backups or snapshots of the key store taken before this purge still "
                "contain the wrapped key; it stays protected by the key-encryption key, "
                "so destroy those copies or rotate the key-encryption key"
            ),
        ]
        if self.store.kms is not None:
            residual.append(self.store.kms.residual())
        return TargetInfo(
            media=media, notes=tuple(self._copy_notes()), residual=tuple(residual)
        )

    def _copy_notes(self) -> Iterator[str]:
        """Say where files sealed with each selected key were written."""
        for item in self.discover():
            copies = item.attributes.get("sealed_copies") or ()
            if copies:
                yield f"files sealed with data key {item.key}: {', '.join(copies)}"
            else:
                yield f"no sealed copies of data key {item.key} are recorded in this store"

    def discover(self) -> Iterator[Item]:
        prefix = self.target.options.get("subject_prefix")
        for slot, record in self.store.records():
            if record.get("state") != ACTIVE:
                continue
            subject = record["subject"]
            if self.subject != "*" and subject != self.subject:
                continue
            if prefix and not subject.startswith(str(prefix)):
                continue
            yield Item(
                key=record["id"],
                kind="data-key",
                size=KEY_SIZE,
                identity={
                    "key_id": record["id"],
                    "created": record.get("created"),
                    "slot": slot,
                },
                attributes={
                    "backend": record.get("backend", "local"),
                    "subject_sha256": subject_digest(subject),
                    "kms_key": record.get("kms_key"),
                    "sealed_copies": self.store.copies(record["id"])[:100],
                },
                label=f"data key {record['id']} of subject {subject}",
            )

    def plan_item(self, item: Item) -> Decision:
        try:
            _slot, record = self.store.find(item.key)
        except KeyNotFound as error:
            raise ItemChanged(str(error)) from None
        backend = record.get("backend", "local")
        if backend != "local" and self.store.backend != backend:
            detail = (
                f"data key {item.key} is wrapped by {backend} key {record.get('kms_key')}, "
                f"which would survive; set keystore.backend: {backend} to destroy it"
            )
            return Decision(refusal=Refusal("not-supported", detail))
        fingerprints = [
            record["wrapped"].encode("ascii"),
            base64.b64decode(record["wrapped"]),
        ]
        with contextlib.suppress(PluginError):
            # Without the KEK the raw key cannot be fingerprinted. The store
            # file contains the wrapped form, so the scan still covers it.
            fingerprints.append(self.store.data_key(item.key).key)
        residual: tuple[str, ...] = ()
        if item.attributes.get("sealed_copies"):
            residual = (
                "sealed copies stay on their media as ciphertext; without the key they cannot be decrypted",
            )
        if self.store.kms is not None:
            residual += self.store.kms.item_residual(record)
        return Decision(
            method=Method.PURGE_CRYPTO,
            fingerprints=tuple(fingerprints),
            residual=residual,
            params=_plan_params(record, self.store),
        )

    def purge(self, batch: Sequence[PlannedItem]) -> Iterator[PurgeResult]:
        for planned in batch:
            if self.context.should_stop():
                return
            yield self._purge_one(planned)

    def _purge_one(self, planned: PlannedItem) -> PurgeResult:
        key_id = planned.item.key
        try:
            _slot, record = self.store.find(key_id)
            if record.get("state") != ACTIVE or record.get(
                "created"
            ) != planned.item.identity.get("created"):
                raise ItemChanged(
                    f"data key {key_id} changed since planning; it was not touched"
                )
            with contextlib.suppress(PluginError):
                self._samples[key_id] = _seal_sample(self.store.data_key(key_id))
            # Kept in memory only, so verification can ask the cloud backend
            # to decrypt it and see the attempt fail.
            self._wrapped[key_id] = base64.b64decode(record["wrapped"])
            tombstone = self.store.destroy(key_id, self.context.job_id)
        except PluginError as error:
            self.log.error("data key purge failed", key_id=key_id, error=str(error))
            return PurgeResult(
                key_id, "failed", detail=str(error), method=Method.PURGE_CRYPTO
            )
        self.log.info("data key purged", key_id=key_id)
        facts = {
            "key_id": key_id,
            "destroyed": tombstone["destroyed"],
            "sealed_copies": list(planned.item.attributes.get("sealed_copies", ())),
        }
        facts.update(
            {
                name: value
                for name, value in tombstone.items()
                if name.startswith("kms_")
            }
        )
        return PurgeResult(
            key_id,
            "purged",
            detail=tombstone.get("kms_purge_blocked", ""),
            bytes=KEY_SIZE,
            method=Method.PURGE_CRYPTO,
            facts=facts,
        )

    def verify(self, batch: Sequence[PlannedItem]) -> Iterator[Evidence]:
        scanner = FingerprintScanner()
        for planned in batch:
            scanner.add_all(planned.item.key, planned.decision.fingerprints)
        store_hits = (
            _owners(scanner.scan_file(self.store.path)) if len(scanner) else None
        )
        device = block_device_of(self.store.path) if self._scan_device() else None
        device_hits = None
        if device and len(scanner):
            os.sync()
            try:
                device_hits = _owners(scanner.scan_file(device, direct=True))
            except OSError as error:
                self.log.warning(
                    "device scan not run", device=device, error=error.strerror
                )
                device = None
        for planned in batch:
            yield Evidence(
                planned.item.key,
                tuple(self._checks(planned, store_hits, device, device_hits)),
            )

    def _scan_device(self) -> bool:
        """Tell whether to scan the store's block device (option, else job setting).

        Off unless asked, because the device may be a whole system disk.
        """
        option = self.target.options.get("scan_device")
        if option is not None:
            return bool(option)
        return bool(self.context.settings.get("scan_device", False))

    def _checks(
        self,
        planned: PlannedItem,
        store_hits: set[str] | None,
        device: str | None,
        device_hits: set[str] | None,
    ) -> Iterator[Check]:
        key_id = planned.item.key
        try:
            self.store.data_key(key_id)
            yield Check(
                "key-destroyed",
                False,
                f"data key {key_id} still unwraps from the store",
            )
        except KeyDestroyed as error:
            if error.record.get("state") == DESTROYED:
                yield Check(
                    "key-destroyed", True, f"store holds only the tombstone of {key_id}"
                )
            else:
                # A destroy interrupted after the cloud key went and before the
                # slot was overwritten leaves the wrapped key in the store.
                yield Check(
                    "key-destroyed",
                    False,
                    f"the store still contains data key {key_id} wrapped, although "
                    f"its cloud key no longer unwraps it ({error}); purge it again",
                )
        except PluginError as error:
            yield Check("key-destroyed", False, f"store lookup failed: {error}")
        if store_hits is not None:
            found = key_id in store_hits
            yield Check(
                "store-scan",
                not found,
                f"raw scan of {self.store.path}: {'key bytes found' if found else 'no key bytes'}",
            )
        if device_hits is not None:
            found = key_id in device_hits
            yield Check(
                "device-scan",
                not found,
                f"raw scan of {device}: {'key bytes found' if found else 'no key bytes'}",
            )
        sample = self._samples.get(key_id)
        if sample is not None:
            yield Check(
                "sample-unseal",
                not _sample_opens(self.store, key_id, sample),
                "a sample sealed before the purge no longer decrypts",
            )
        else:
            yield Check(
                "sample-unseal",
                True,
                "not run: no sample was sealed with the key in this process before "
                "its destroy (a resumed job, or the key could not be read)",
            )
        if (
            self.store.kms is not None
            and planned.decision.params.get("backend") == self.store.kms.name
        ):
            _slot, tombstone = self.store.find(key_id)
            yield from self.store.kms.checks(tombstone, self._wrapped.get(key_id))


def _plan_params(record: Mapping[str, Any], store: KeyStore) -> dict[str, Any]:
    params = {"key_id": record["id"], "backend": record.get("backend", "local")}
    if record.get("kms_key"):
        params["kms_key"] = record["kms_key"]
    if store.kms is not None:
        params.update(store.kms.plan_params())
    return params


def _owners(hits: Iterator[Any]) -> set[str]:
    return {hit.owner for hit in hits}


def _seal_sample(data_key: DataKey) -> tuple[bytes, bytes]:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = secrets.token_bytes(12)
    return nonce, AESGCM(data_key.key).encrypt(
        nonce, secrets.token_bytes(64), b"lethe sample"
    )


def _sample_opens(store: KeyStore, key_id: str, sample: tuple[bytes, bytes]) -> bool:
    """Tell whether the store still yields a key that opens the sample."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    try:
        key = store.data_key(key_id).key
    except PluginError:
        return False
    nonce, ciphertext = sample
    try:
        AESGCM(key).decrypt(nonce, ciphertext, b"lethe sample")
    except InvalidTag:
        return False
    return True
