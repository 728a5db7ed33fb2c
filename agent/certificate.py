"""Certificates of sanitization: built from the journal, signed, verified.

A certificate carries the fields of NIST SP 800-88 Rev. 1 Appendix G (person
and organization, media information, method type and method used, tool and
version, verification method and result, notes, date) plus the job id, plan
hash, counts and bytes, an evidence digest and its own audit-log position.
It counts as destroyed only the items whose verification passed.

The signature is Ed25519 over the canonical JSON of the whole document with
``signature.value`` left out. The audit entry at ``audit.seq`` records the
SHA-256 of the document's content and the signing key's fingerprint, and the
certificate records the SHA-256 of that entry's line in ``audit.hash``. An
edited certificate, one re-signed with another key, or an audit log rewritten
up to that entry therefore fails verification.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

import agent
from agent import keys
from agent.audit import AuditChainBroken, AuditLog
from agent.config import Operator
from agent.errors import UsageError
from agent.journal import Journal, dumps, key_text, loads, now, residual_note
from agent.plan import copies as copies_of
from agent.render import human_bytes, plural, readable
from plugins.base import Method

CERTIFICATE_FORMAT = "lethe-certificate/1"
DIRECTORY = "certificates"

_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("agent", "templates"),
    autoescape=jinja2.select_autoescape(["html"]),
    undefined=jinja2.StrictUndefined,
)
_TEMPLATES.filters.update(bytes=human_bytes, plural=plural, readable=readable)


def build(
    journal: Journal, job_id: str, operator: Operator, audit_seq: int
) -> dict[str, Any]:
    """Assemble the unsigned certificate of a finished job from its journal."""
    job = journal.job(job_id)
    counts = journal.count_states(job_id)
    methods = _methods(journal, job_id)
    categories = sorted({entry["category"] for entry in methods})
    return {
        "format": CERTIFICATE_FORMAT,
        "certificate_id": str(uuid.uuid4()),
        "date": now(),
        "job_id": job_id,
        "plan_hash": job.plan_hash,
        "person": {"name": operator.name, "title": operator.title},
        "organization": {
            "name": operator.organization.name,
            "address": operator.organization.address,
            "contact": operator.organization.contact,
        },
        "media": [
            {"target": row.target.url, "plugin": row.plugin, **dict(row.info.media)}
            for row in journal.targets(job_id)
        ],
        "confidentiality_categorization": _classifications(journal, job_id),
        "sanitization": {
            "method_type": " and ".join(categories) if categories else "none",
            "methods": methods,
            "tool": {"name": "lethe", "version": agent.__version__},
        },
        "verification": _verification(journal, job_id),
        "counts": {
            "destroyed_and_verified": counts.get("verified", 0),
            "refused": counts.get("refused", 0),
            "blocked": counts.get("blocked", 0),
            "failed": counts.get("failed", 0),
            "not_completed": sum(
                counts.get(state, 0) for state in ("planned", "purging", "purged")
            ),
        },
        "bytes": {"destroyed_and_verified": _bytes(journal, job_id, "verified")},
        "refused": _refused(journal, job_id),
        # Snapshots and backups of the selected data, and what became of each.
        "copies": copies_of(journal, job_id),
        "notes": _notes(journal, job_id),
        "evidence_digest": evidence_digest(journal, job_id),
        "fingerprint_digests": _fingerprint_count(journal, job_id),
        "audit": {"seq": audit_seq},
    }


#: How the files and block plugins word a purge stopped between passes.
# NOTE: the journal keeps a result's detail, not its facts, so the pass count
# actually done is read back from this wording.
_SHORT_OF_PLAN = re.compile(r"with (\d+) pass\(es\) of (\d+) planned")


def _methods(journal: Journal, job_id: str) -> list[dict[str, Any]]:
    rows = journal.query(
        "SELECT method, params, COUNT(*) AS n, COALESCE(SUM(size), 0) AS total FROM items"
        " WHERE job_id = ? AND state = 'verified' GROUP BY method, params ORDER BY method, params",
        (job_id,),
    )
    short = _passes_short_of_plan(journal, job_id)
    methods = []
    for row in rows:
        entry = {
            "method": row["method"],
            "category": Method(row["method"]).sp800_88_category,
            "details": json.loads(row["params"]),
            "items": row["n"],
            "bytes": row["total"],
        }
        done = short.get((row["method"], row["params"]))
        if done:
            # A stop request ended these items' overwrite early: certify the
            # passes that ran, not the passes the plan asked for.
            entry["items_with_fewer_passes"] = len(done)
            entry["fewest_passes_done"] = min(done)
        methods.append(entry)
    return methods


def _passes_short_of_plan(
    journal: Journal, job_id: str
) -> dict[tuple[str, str], list[int]]:
    rows = journal.query(
        "SELECT method, params, detail FROM items WHERE job_id = ? AND state = 'verified'"
        " AND detail LIKE '%planned%'",
        (job_id,),
    )
    short: dict[tuple[str, str], list[int]] = {}
    for row in rows:
        match = _SHORT_OF_PLAN.search(row["detail"] or "")
        if match and int(match.group(1)) < int(match.group(2)):
            short.setdefault((row["method"], row["params"]), []).append(
                int(match.group(1))
            )
    return short


def _verification(journal: Journal, job_id: str) -> dict[str, Any]:
    # A check that did not run (a resumed job, a device that cannot be read,
    # or a setting that turns it off) passes without evidence, so it is
    # counted apart from the checks that ran.
    rows = journal.query(
        "SELECT json_extract(checks.value, '$.name') AS name,"
        " SUM(json_extract(checks.value, '$.passed')) AS passed, COUNT(*) AS n,"
        " SUM(CASE WHEN json_extract(checks.value, '$.passed')"
        " AND (json_extract(checks.value, '$.detail') LIKE 'not run%'"
        " OR json_extract(checks.value, '$.detail') LIKE 'off:%') THEN 1 ELSE 0 END)"
        " AS not_run"
        " FROM items, json_each(items.evidence, '$.checks') AS checks"
        " WHERE items.job_id = ? AND items.evidence IS NOT NULL GROUP BY name ORDER BY name",
        (job_id,),
    )
    checks = [
        {
            "check": row["name"],
            "passed": row["passed"] - row["not_run"],
            "not_run": row["not_run"],
            "items": row["n"],
        }
        for row in rows
    ]
    failed = sum(
        check["items"] - check["passed"] - check["not_run"] for check in checks
    )
    if not checks:
        return {"method": "none", "result": "not run", "checks": []}
    # The method names only the checks that ran for at least one item, so
    # a skipped device scan is never listed as a method used.
    ran = ", ".join(c["check"] for c in checks if c["items"] > c["not_run"]) or "none"
    method = f"independent rescan after purge: {ran}"
    skipped = [c for c in checks if c["not_run"]]
    if skipped:
        reasons = _not_run_reasons(journal, job_id)
        parts = ", ".join(
            f"{c['check']} for {c['not_run']} of {plural(c['items'], 'item')}"
            + (f" ({reasons[c['check']]})" if c["check"] in reasons else "")
            for c in skipped
        )
        method += f"; not run: {parts}"
    return {
        "method": method,
        "result": "failed" if failed else "passed",
        "checks": checks,
    }


def _not_run_reasons(journal: Journal, job_id: str) -> dict[str, str]:
    """Map each check that did not run for some items to its most common reason.

    A reader of the certificate must tell a check skipped for lack of
    evidence (a resumed job) from one with nothing to do (a row of numbers
    only, which gives no fingerprints).
    """
    rows = journal.query(
        "SELECT json_extract(checks.value, '$.name') AS name,"
        " json_extract(checks.value, '$.detail') AS detail, COUNT(*) AS n"
        " FROM items, json_each(items.evidence, '$.checks') AS checks"
        " WHERE items.job_id = ? AND items.evidence IS NOT NULL"
        " AND json_extract(checks.value, '$.passed')"
        " AND json_extract(checks.value, '$.detail') LIKE 'not run:%'"
        " GROUP BY name, detail ORDER BY name, n DESC, detail",
        (job_id,),
    )
    reasons: dict[str, str] = {}
    for row in rows:
        reason = row["detail"][len("not run:") :].strip()
        if row["name"] not in reasons and reason:
            reasons[row["name"]] = f"{reason}: {plural(row['n'], 'item')}"
    return reasons


def _bytes(journal: Journal, job_id: str, state: str) -> int:
    row = journal.query(
        "SELECT COALESCE(SUM(size), 0) AS total FROM items WHERE job_id = ? AND state = ?",
        (job_id, state),
    )[0]
    return row["total"]


def _classifications(journal: Journal, job_id: str) -> dict[str, int]:
    rows = journal.query(
        "SELECT classification, COUNT(*) AS n FROM items WHERE job_id = ? GROUP BY classification",
        (job_id,),
    )
    return {row["classification"]: row["n"] for row in rows}


def _refused(journal: Journal, job_id: str) -> dict[str, int]:
    rows = journal.query(
        "SELECT json_extract(refusal, '$.reason') AS reason, COUNT(*) AS n FROM items"
        " WHERE job_id = ? AND state IN ('refused', 'blocked') GROUP BY reason ORDER BY reason",
        (job_id,),
    )
    return {row["reason"]: row["n"] for row in rows}


def _notes(journal: Journal, job_id: str) -> list[str]:
    notes: list[str] = [f"residual risk: {residual_note(journal.path)}"]
    for row in journal.targets(job_id):
        notes.extend(
            f"{row.target.url}: residual risk: {risk}" for risk in row.info.residual
        )
        notes.extend(f"{row.target.url}: {note}" for note in row.info.notes)
    for row in journal.query(
        "SELECT residual.value AS risk, COUNT(*) AS n FROM items, json_each(items.residual) AS residual"
        " WHERE items.job_id = ? AND items.state = 'verified' GROUP BY residual.value ORDER BY residual.value",
        (job_id,),
    ):
        notes.append(
            f"residual risk for {plural(row['n'], 'destroyed item')}: {row['risk']}"
        )
    return notes


def evidence_digest(journal: Journal, job_id: str) -> str:
    """SHA-256 over each item's final state and evidence, ordered by target and key."""
    digest = hashlib.sha256()
    for row in journal.columns(job_id, ("state", "evidence"), by_key=True):
        evidence = row["evidence"]
        line = {
            "target": row["target"],
            "key": key_text(row["key"]),
            "state": row["state"],
            "evidence": loads(evidence) if evidence else None,
        }
        digest.update((dumps(line) + "\n").encode())
    return digest.hexdigest()


def _fingerprint_count(journal: Journal, job_id: str) -> int:
    return journal.fingerprint_count(job_id, "verified")


# Signing and verification


def _payload(document: Mapping[str, Any]) -> bytes:
    unsigned = dict(document)
    signature = dict(unsigned.get("signature", {}))
    signature.pop("value", None)
    unsigned["signature"] = signature
    return dumps(unsigned).encode()


def sign(document: Mapping[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
    public = key.public_key()
    signed = dict(document)
    signed["signature"] = {
        "algorithm": "Ed25519",
        "public_key": keys.encode_public(public),
        "public_key_fingerprint": keys.fingerprint(public),
    }
    signed["signature"]["value"] = base64.b64encode(key.sign(_payload(signed))).decode()
    return signed


def document_digest(document: Mapping[str, Any]) -> str:
    """SHA-256 of the whole signed document, which older audit entries record."""
    return hashlib.sha256(dumps(document).encode()).hexdigest()


def content_digest(document: Mapping[str, Any]) -> str:
    """SHA-256 of the document without its audit position and signature.

    The certificate's audit entry records this digest. The certificate then
    records the hash of that entry's line in ``audit.hash``, and the
    signature covers that hash too.
    """
    content = {
        name: value
        for name, value in document.items()
        if name not in ("audit", "signature")
    }
    return hashlib.sha256(dumps(content).encode()).hexdigest()


@dataclass
class VerificationReport:
    """The outcome of ``lethe certificate verify``, one line per check."""

    checks: list[tuple[str, bool, str]] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return bool(self.checks) and all(passed for _, passed, _ in self.checks)

    def add(self, name: str, passed: bool, detail: str) -> None:
        self.checks.append((name, passed, detail))


def verify(
    document: Mapping[str, Any], audit: AuditLog, trusted: Ed25519PublicKey | None
) -> VerificationReport:
    """Check the signature, the signing key and the audit-log entry."""
    report = VerificationReport()
    signature = document.get("signature") or {}
    try:
        public = keys.decode_public(signature["public_key"])
        public.verify(
            base64.b64decode(signature["value"], validate=True), _payload(document)
        )
        report.add(
            "signature", True, f"valid Ed25519 signature by {keys.fingerprint(public)}"
        )
    except (KeyError, ValueError, TypeError, InvalidSignature):
        report.add(
            "signature",
            False,
            "the signature does not match the content; the certificate was edited",
        )
        return report
    if trusted is None:
        report.add(
            "signing key",
            False,
            f"the state directory {audit.path.parent} has no signing key to compare "
            "with; give the directory the certificate was issued with (--state-dir)",
        )
    elif keys.fingerprint(trusted) != keys.fingerprint(public):
        report.add(
            "signing key",
            False,
            f"signed by {keys.fingerprint(public)}, not by the key of the state "
            f"directory {audit.path.parent} ({keys.fingerprint(trusted)})",
        )
    else:
        report.add("signing key", True, "signed by this agent's key")
    _verify_audit(document, audit, report)
    return report


def _verify_audit(
    document: Mapping[str, Any], audit: AuditLog, report: VerificationReport
) -> None:
    position = document.get("audit") or {}
    seq = position.get("seq")
    if not isinstance(seq, int):
        report.add("audit log", False, "the certificate names no audit-log position")
        return
    job_id = document.get("job_id")
    if not audit.has_job(job_id):
        report.add(
            "audit log",
            False,
            f"the audit log {audit.path} has no entry for job {job_id}; the "
            "certificate was issued with another state directory, so give that "
            "directory with --state-dir or -c",
        )
        return
    try:
        audit.verify(up_to=seq)
    except AuditChainBroken as error:
        report.add("audit chain", False, str(error))
        return
    report.add("audit chain", True, f"entries 0 to {seq} chain correctly")
    entry, line_hash = audit.find(seq) or ({}, "")
    recorded_hash = position.get("hash")
    if recorded_hash is None:
        # Certificates issued before the entry hash was recorded: their entry
        # contains the digest of the whole signed document instead.
        matches = entry.get("certificate_digest") == document_digest(document)
    else:
        signer = (document.get("signature") or {}).get("public_key_fingerprint")
        matches = (
            line_hash == recorded_hash
            and entry.get("content_digest") == content_digest(document)
            and entry.get("signing_key") == signer
        )
    if entry.get("kind") != "certificate" or not matches:
        report.add(
            "audit entry", False, f"audit entry {seq} does not record this certificate"
        )
        return
    report.add("audit entry", True, f"audit entry {seq} records this certificate")


# Files


def write(document: Mapping[str, Any], state_dir: Path) -> Path:
    """Write the certificate as JSON and HTML; return the JSON path."""
    directory = state_dir / DIRECTORY
    directory.mkdir(mode=0o700, exist_ok=True)
    path = directory / f"{document['job_id']}.json"
    path.write_text(
        json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n",
        encoding="utf-8",
    )
    path.with_suffix(".html").write_text(render_html(document), encoding="utf-8")
    return path


def read(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as stream:
            document = json.load(stream)
    except OSError as error:
        raise UsageError(f"cannot read certificate {path}: {error.strerror}") from error
    except json.JSONDecodeError as error:
        raise UsageError(f"certificate {path} is not valid JSON: {error}") from error
    if not isinstance(document, dict) or document.get("format") != CERTIFICATE_FORMAT:
        raise UsageError(
            f"{path} is not a Lethe certificate (expected format {CERTIFICATE_FORMAT!r})"
        )
    return document


def render_html(document: Mapping[str, Any]) -> str:
    return _TEMPLATES.get_template("certificate.html").render(cert=document)
