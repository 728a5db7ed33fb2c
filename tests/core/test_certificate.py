"""Certificates: content, signature and the audit-log entry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent import certificate, keys
from agent.audit import AuditLog
from agent.config import Config, Operator, Organization
from agent.engine import Engine
from agent.registry import Registry
from plugins.base import Target
from tests.core.dirplugin import DirPlugin

OPERATOR = Operator(
    "Jane Doe",
    "Administrator",
    Organization("Example Ltd", "1 Example Street", "sec@example.com"),
)


def issued(state_dir: Path, tree: Path, **options) -> tuple[dict, Engine]:
    registry = Registry()
    registry.add(DirPlugin)
    engine = Engine(Config(operator=OPERATOR), state_dir, registry=registry)
    job_id = engine.plan(
        [Target(f"testdir://{tree}", options)], {"passes": 1}, dry_run=False
    )
    outcome = engine.purge(job_id)
    return json.loads(outcome.certificate.read_text()), engine


def check(state_dir: Path, document: dict) -> certificate.VerificationReport:
    return certificate.verify(
        document, AuditLog.open(state_dir), keys.existing_public_key(state_dir)
    )


def test_fields_of_appendix_g(state_dir: Path, tree: Path) -> None:
    document, _ = issued(state_dir, tree)
    assert document["person"] == {"name": "Jane Doe", "title": "Administrator"}
    assert document["organization"]["name"] == "Example Ltd"
    assert document["media"][0]["media_type"] == "directory"
    assert document["sanitization"]["method_type"] == "Clear"
    assert document["sanitization"]["tool"]["name"] == "lethe"
    assert document["verification"]["result"] == "passed"
    assert "journal" in document["notes"][0]
    assert (
        "residual risk: the test plugin does not scan raw storage"
        in document["notes"][1]
    )


def test_counts_only_verified(state_dir: Path, tree: Path) -> None:
    document, _ = issued(state_dir, tree)
    assert document["counts"]["destroyed_and_verified"] == 4
    assert document["counts"]["refused"] == 2
    assert document["refused"] == {"hold": 1, "symlink": 1}
    assert document["fingerprint_digests"] == 4


def test_valid_certificate_verifies(state_dir: Path, tree: Path) -> None:
    document, _ = issued(state_dir, tree)
    report = check(state_dir, document)
    assert report.valid, report.checks


def test_edited_field_fails(state_dir: Path, tree: Path) -> None:
    document, _ = issued(state_dir, tree)
    document["counts"]["destroyed_and_verified"] = 5
    report = check(state_dir, document)
    assert not report.valid
    assert report.checks[0][0] == "signature"


def test_resigned_with_other_key_fails(
    state_dir: Path, tree: Path, tmp_path: Path
) -> None:
    document, _ = issued(state_dir, tree)
    document["counts"]["destroyed_and_verified"] = 5
    forged = certificate.sign(document, keys.load_or_create(tmp_path / "other"))
    failed = {name for name, passed, _ in check(state_dir, forged).checks if not passed}
    assert failed == {"signing key", "audit entry"}


def test_edited_audit_log_fails(state_dir: Path, tree: Path) -> None:
    document, _ = issued(state_dir, tree)
    log = AuditLog.open(state_dir)
    log.path.write_text(log.path.read_text().replace('"plan"', '"plam"'))
    failed = {
        name for name, passed, _ in check(state_dir, document).checks if not passed
    }
    assert failed == {"audit chain"}


def test_certificate_records_audit_hash(state_dir: Path, tree: Path) -> None:
    document, _ = issued(state_dir, tree)
    found = AuditLog.open(state_dir).find(document["audit"]["seq"])
    assert found is not None
    entry, line_hash = found
    assert entry["kind"] == "certificate"
    assert document["audit"]["hash"] == line_hash
    assert entry["content_digest"] == certificate.content_digest(document)


def test_rewritten_audit_entry_fails(state_dir: Path, tree: Path) -> None:
    document, _ = issued(state_dir, tree)
    log = AuditLog.open(state_dir)
    # Rewrite the certificate's entry with a valid MAC and chain, as someone
    # holding the audit key could: only the hash in the certificate differs.
    lines = log.path.read_text().splitlines(keepends=True)
    seq = document["audit"]["seq"]
    log.path.write_text("".join(lines[:seq]))
    with log.writer() as writer:
        writer.append(
            "certificate",
            job_id=document["job_id"],
            certificate_id=document["certificate_id"],
            content_digest=certificate.content_digest(document),
            signing_key=document["signature"]["public_key_fingerprint"],
            note="rewritten",
        )
    failed = {
        name for name, passed, _ in check(state_dir, document).checks if not passed
    }
    assert failed == {"audit entry"}


def test_certificate_without_audit_hash_verifies(state_dir: Path, tree: Path) -> None:
    """A certificate in the earlier form (no audit.hash) still verifies."""
    first, engine = issued(state_dir, tree)
    key = keys.load_or_create(state_dir)
    with engine.audit.writer() as writer:
        document = certificate.build(
            engine.journal, first["job_id"], OPERATOR, writer.next_seq
        )
        signed = certificate.sign(document, key)
        writer.append(
            "certificate",
            job_id=signed["job_id"],
            certificate_id=signed["certificate_id"],
            certificate_digest=certificate.document_digest(signed),
        )
    report = check(state_dir, signed)
    assert report.valid, report.checks
    signed["counts"]["refused"] = 0
    assert not check(state_dir, certificate.sign(signed, key)).valid


def test_signing_key_mode(state_dir: Path, tree: Path) -> None:
    issued(state_dir, tree)
    assert (state_dir / keys.KEY_FILE).stat().st_mode & 0o777 == 0o600


def test_html_rendering(state_dir: Path, tree: Path) -> None:
    document, _ = issued(state_dir, tree)
    html = certificate.render_html(document)
    assert "Certificate of sanitization" in html
    assert document["plan_hash"] in html
    assert "built-in method" not in html
    first = document["sanitization"]["methods"][0]
    assert f"{first['items']} items" in html
    assert document["audit"]["hash"] in html


def test_html_has_no_python_reprs(state_dir: Path, tree: Path) -> None:
    document, _ = issued(state_dir, tree)
    document["media"][0].update(
        rotational=False,
        serial=None,
        backing={"device": "/dev/vda", "rotational": True},
        devices=["/dev/loop0", "/dev/loop1"],
    )
    document["copies"] = [
        {
            "target": 0,
            "key": "/srv/backup/customers.csv.bak",
            "copy": "backup",
            "label": "customers.csv.bak",
            "created": None,
            "size": 2048,
            "state": "refused",
            "method": None,
            "reason": "outside-target",
            "detail": "kept",
        }
    ]
    html = certificate.render_html(document)
    for repr_text in ("{'", "['", "None", "True", "False"):
        assert repr_text not in html
    assert "passes: 1" in html
    assert "rotational: no" in html
    assert "serial: unknown" in html
    assert "backing: device: /dev/vda; rotational: yes" in html
    assert "devices: /dev/loop0, /dev/loop1" in html
    assert "customers.csv.bak" in html


def test_broken_signing_key_stops_before_purge(state_dir: Path, tree: Path) -> None:
    key_path = state_dir / keys.KEY_FILE
    key_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key_path.write_bytes(b"not a key\n")
    key_path.chmod(0o600)
    before = sorted(path.relative_to(tree) for path in tree.rglob("*"))
    registry = Registry()
    registry.add(DirPlugin)
    engine = Engine(Config(operator=OPERATOR), state_dir, registry=registry)
    job_id = engine.plan([Target(f"testdir://{tree}", {})], {"passes": 1}, dry_run=False)
    with pytest.raises(keys.SigningKeyError):
        engine.purge(job_id)
    assert sorted(path.relative_to(tree) for path in tree.rglob("*")) == before
