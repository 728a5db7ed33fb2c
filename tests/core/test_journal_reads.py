"""Journal encoding and narrow reads: values, digests and old rows stay the same."""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from pathlib import Path

import pytest

from agent import certificate, ledger
from agent import plan as plan_module
from agent.journal import (
    ItemRow,
    Journal,
    display_text,
    dumps,
    encode_digests,
    info_to_json,
    key_bytes,
    loads,
    residual_from_json,
    residual_to_json,
)
from plugins.base import Target, TargetInfo

JOB = "job-1"

# Rows as a journal written by an older version, or changed by SQLite's JSON
# functions, may hold them: white space, keys out of order, escapes.
_STORED_ROWS = [
    # target, key, kind, size, identity, refusal, method, residual, state, evidence
    (
        0,
        b"/data/a",
        "file",
        10,
        '{"ino": 7, "mtime_ns": 1700000000000000000}',
        None,
        "overwrite",
        '["journal keeps the name"]',
        "verified",
        '{"checks": [{"name": "gone", "passed": true, "detail": "no entry"}]}',
    ),
    (
        0,
        b"/data/b\xff",
        "file",
        0,
        '{"path":"/data/b\\udcff","ratio":0.1,"tags":{"z":1,"a":[1,2.5e+100]}}',
        '{"reason":"hold","detail":"kept","blocked_until":"2031-01-01T00:00:00+00:00"}',
        None,
        "[]",
        "refused",
        None,
    ),
    (
        1,
        b"orders:[3]",
        "row",
        42,
        '{"table":"orders","key":[3],"caf\\u00e9":"\\u2603"}',
        None,
        "delete-and-compact",
        '[ "copies in backups" ]',
        "failed",
        '{"checks":[{"detail":"row still selects",'
        '"name":"row-absent","passed":false}]}',
    ),
    (
        1,
        b"orders:[4]",
        "row",
        42,
        "{}",
        '{"reason": "not-supported", "detail": ""}',
        None,
        '["copies in backups"]',
        "blocked",
        "{}",
    ),
    (1, b"orders:[5]", "row", 1, '{"key":[5]}', "null", None, "[]", "planned", "null"),
]

# Both were computed from whole item rows (Journal.items), as the digests
# were before they read only their own columns.
GOLDEN_PLAN_HASH = (
    "ed48f59244187a8327bff5ccf4a65c2ee751a40eefa5afa895cd322aa6e26d47"
)
GOLDEN_EVIDENCE_DIGEST = (
    "47d7286e2074d0622cef20d42e20c62ad1201029f06bf966aa09ea29ac41ceb3"
)


def stored_journal(state_dir: Path) -> Journal:
    """A journal whose item rows were inserted as raw text, not by Journal."""
    journal = Journal.open(state_dir)
    journal.create_job(JOB, dry_run=False, settings={"passes": 1}, config_digest=None)
    journal.add_target(
        JOB, 0, Target("/data"), "files", TargetInfo(media={"type": "file"})
    )
    journal.add_target(
        JOB,
        1,
        Target("sqlite:///shop.db?table=orders", {"params": [3]}),
        "sqlite",
        TargetInfo(notes=("compacted",), residual=("backups",)),
    )
    for values in _STORED_ROWS:
        journal._db.execute(
            "INSERT INTO items (job_id, target, key, kind, size, label, identity,"
            " attributes, classification, method, params, refusal, residual, state,"
            " detail, evidence, fingerprints, updated) VALUES"
            " (?, ?, ?, ?, ?, '', ?, '{\"columns\": [\"id\"]}', 'unclassified', ?,"
            " '{\"passes\": 1}', ?, ?, ?, '', ?, '[]', 'then')",
            (JOB, *values[:4], values[4], values[6], values[5], *values[7:]),
        )
    return journal


def hash_by_full_rows(journal: Journal) -> str:
    """The plan hash as computed from whole item rows."""
    job = journal.job(JOB)
    targets = (
        (row.target.url, row.target.options, info_to_json(row.info))
        for row in journal.targets(JOB)
    )
    items = []
    for row in journal.items(JOB, by_key=True):
        refusal = None
        if row.refusal:
            refusal = {
                "reason": row.refusal["reason"],
                "blocked_until": row.refusal.get("blocked_until"),
            }
        items.append(
            {
                "target": row.target,
                "key": row.key,
                "kind": row.kind,
                "size": row.size,
                "identity": row.identity,
                "method": row.method,
                "refusal": refusal,
            }
        )
    return plan_module._hash_lines(job.settings, targets, items)


def digest_by_full_rows(journal: Journal) -> str:
    """The evidence digest as computed from whole item rows."""
    digest = hashlib.sha256()
    for row in journal.items(JOB, by_key=True):
        line = {
            "target": row.target,
            "key": row.key,
            "state": row.state,
            "evidence": row.evidence,
        }
        digest.update((dumps(line) + "\n").encode())
    return digest.hexdigest()


# loads and dumps


@pytest.mark.parametrize(
    "text",
    [
        "{}",
        "[]",
        "null",
        "true",
        "0",
        "-1.5e-7",
        '"caf\\u00e9 \\udcff"',
        '{"b":[1,{"c":null}],"a":"x"}',
        ' {"a": 1} ',
        '{"a": 1}\n',
        "[1, 2]",
        "NaN",
    ],
)
def test_loads_equals_json_loads(text: str) -> None:
    expected = json.loads(text)
    got = loads(text)
    if isinstance(expected, float) and math.isnan(expected):
        assert math.isnan(got)
    else:
        assert got == expected


@pytest.mark.parametrize("text", ['{"a":1} x', "{", "", '{"a":1}{"b":2}'])
def test_loads_rejects_what_json_loads_rejects(text: str) -> None:
    with pytest.raises(json.JSONDecodeError):
        loads(text)


def test_loads_returns_new_objects() -> None:
    first = loads("{}")
    first["changed"] = True
    assert loads("{}") == {}
    listed = loads("[]")
    listed.append(1)
    assert loads("[]") == []


@pytest.mark.parametrize(
    "value",
    [
        {},
        [],
        (),
        None,
        {"b": 1, "a": [1, 2]},
        ["é", "\udcff"],
        {2: "x", 10: "y"},
        {"when": Path("/x")},
        1.5,
        "text",
    ],
)
def test_dumps_is_canonical_json(value: object) -> None:
    expected = json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str
    )
    assert dumps(value) == expected


def test_residual_cache_keeps_true_and_one_apart() -> None:
    assert residual_to_json(("a", 1)) == '["a",1]'  # type: ignore[arg-type]
    assert residual_to_json(("a", True)) == '["a",true]'  # type: ignore[arg-type]


def test_residual_of_list_encoded() -> None:
    assert residual_to_json(["x", "y"]) == '["x","y"]'


def test_residual_read_is_immutable_tuple() -> None:
    first = residual_from_json('["one","two"]')
    assert first == ("one", "two")
    assert isinstance(first, tuple)


# Rows read back


def test_rows_sharing_text_get_separate_mappings(state_dir: Path) -> None:
    journal = Journal.open(state_dir)
    journal.create_job(JOB, dry_run=False, settings={}, config_digest=None)
    shared = {"table": "people", "columns": ["id"]}
    journal.add_items(
        JOB,
        [
            ItemRow(0, key, "row", 1, attributes=shared, params={}, residual=("r",))
            for key in ("a", "b")
        ],
    )
    first, second = journal.items(JOB, by_key=True)
    first.attributes["columns"].append("email")  # type: ignore[index]
    first.params["resumed"] = True  # type: ignore[index]
    assert second.attributes == {"table": "people", "columns": ["id"]}
    assert second.params == {}
    again = next(journal.items(JOB, by_key=True))
    assert again.attributes == {"table": "people", "columns": ["id"]}


def test_row_written_and_read_back_unchanged(state_dir: Path) -> None:
    journal = Journal.open(state_dir)
    journal.create_job(JOB, dry_run=False, settings={}, config_digest=None)
    row = ItemRow(
        0,
        "/data/\udcff",
        "file",
        5,
        label="/data/x",
        identity={"ino": 1, "nested": {"b": [1.25, None]}},
        attributes={},
        method="overwrite",
        params={"passes": 2},
        residual=("one", "two"),
        fingerprints=("ab", "cd"),
    )
    journal.add_items(JOB, [row])
    read = journal.get_item(JOB, 0, "/data/\udcff")
    assert read is not None
    assert read.key == row.key
    assert read.identity == row.identity
    assert read.params == row.params
    assert read.residual == ("one", "two")
    assert read.fingerprints == ("ab", "cd")
    assert read.refusal is None
    assert read.evidence is None


def test_fingerprint_digests_own_table(state_dir: Path) -> None:
    # New rows keep their digests out of the items' rows, which every state
    # change rewrites. Rows of older journals keep them in the column, and
    # both count.
    journal = Journal.open(state_dir)
    journal.create_job(JOB, dry_run=False, settings={}, config_digest=None)
    journal.add_items(JOB, [ItemRow(0, "/data/new", "file", 1, fingerprints=("ab", "cd"))])
    journal._db.execute(
        "INSERT INTO items (job_id, target, key, kind, size, label, identity, attributes,"
        " classification, params, residual, state, fingerprints, updated) VALUES"
        " (?, 0, ?, 'file', 1, '', '{}', '{}', 'unclassified', '{}', '[]', 'planned',"
        " '[\"ef\"]', 'then')",
        (JOB, key_bytes("/data/old")),
    )

    stored = journal._db.execute(
        "SELECT fingerprints FROM items WHERE key = ?", (key_bytes("/data/new"),)
    ).fetchone()[0]

    assert stored == "[]"
    assert journal.get_item(JOB, 0, "/data/new").fingerprints == ("ab", "cd")
    assert journal.get_item(JOB, 0, "/data/old").fingerprints == ("ef",)
    assert [row.fingerprints for row in journal.items(JOB, fingerprints=False)] == [(), ()]
    assert journal.fingerprint_count(JOB, "planned") == 3


def test_stored_rows_read_back(state_dir: Path) -> None:
    journal = stored_journal(state_dir)
    rows = {row.key: row for row in journal.items(JOB)}
    assert rows["/data/a"].identity == {"ino": 7, "mtime_ns": 1700000000000000000}
    assert rows["/data/b\udcff"].refusal["blocked_until"] == (  # type: ignore[index]
        "2031-01-01T00:00:00+00:00"
    )
    assert rows["orders:[3]"].residual == ("copies in backups",)
    assert rows["orders:[4]"].evidence == {}
    assert rows["/data/a"].params == {"passes": 1}


def test_columns_selects_only_named_fields(state_dir: Path) -> None:
    journal = stored_journal(state_dir)
    row = next(journal.columns(JOB, ("state",), by_key=True))
    assert row.keys() == ["id", "target", "key", "state"]


def test_columns_rejects_unknown_names(state_dir: Path) -> None:
    journal = stored_journal(state_dir)
    with pytest.raises(ValueError, match="unknown item columns"):
        next(journal.columns(JOB, ("state; DROP TABLE items",)))


def test_columns_filter_by_target_and_state(state_dir: Path) -> None:
    journal = stored_journal(state_dir)
    rows = journal.columns(JOB, (), target=1, states=("failed", "refused"))
    assert [row["key"] for row in rows] == [b"orders:[3]"]


# Digests of stored rows


def test_plan_hash_matches_full_rows(state_dir: Path) -> None:
    journal = stored_journal(state_dir)
    assert plan_module.plan_hash(journal, JOB) == hash_by_full_rows(journal)


def test_plan_hash_of_stored_rows_unchanged(state_dir: Path) -> None:
    journal = stored_journal(state_dir)
    assert plan_module.plan_hash(journal, JOB) == GOLDEN_PLAN_HASH


def test_evidence_digest_matches_full_rows(state_dir: Path) -> None:
    journal = stored_journal(state_dir)
    assert certificate.evidence_digest(journal, JOB) == digest_by_full_rows(journal)


def test_evidence_digest_of_stored_rows_unchanged(state_dir: Path) -> None:
    journal = stored_journal(state_dir)
    assert certificate.evidence_digest(journal, JOB) == GOLDEN_EVIDENCE_DIGEST


def test_ledger_records_verified_keys_only(state_dir: Path) -> None:
    journal = stored_journal(state_dir)
    key = b"k" * 32
    records = list(ledger._target_records(journal, JOB, key))
    assert [record["count"] for record in records] == [1]
    expected = hmac.new(key, b"lethe ledger item\0a", hashlib.sha256).hexdigest()
    assert records[0]["items"] == [expected]


def test_plan_file_of_stored_rows_round_trips(state_dir: Path, tmp_path: Path) -> None:
    journal = stored_journal(state_dir)
    journal.set_plan_hash(JOB, plan_module.plan_hash(journal, JOB))
    path = tmp_path / "plan.json"
    plan_module.write_plan_file(path, journal, JOB, summary={})
    saved = plan_module.read_plan_file(str(path))
    assert saved.plan_hash == GOLDEN_PLAN_HASH
    assert saved.items[(0, "/data/b\udcff")]["refusal"] == {
        "reason": "hold",
        "blocked_until": "2031-01-01T00:00:00+00:00",
    }
    assert saved.items[(1, "orders:[3]")]["classification"] == "unclassified"
    assert list(plan_module.compare(saved, journal, JOB)) == []


@pytest.mark.parametrize(
    ("text", "stored"),
    [("plain", "plain"), ("café", "café"), ("bad \udcff", "bad \\udcff"), ("", "")],
)
def test_display_text_escapes_only_undecodable(text: str, stored: str) -> None:
    assert display_text(text) == stored


def test_digests_added_after_planning(state_dir: Path) -> None:
    journal = Journal.open(state_dir)
    journal.create_job(JOB, dry_run=False, settings={}, config_digest=None)
    journal.add_items(JOB, [ItemRow(0, "/data/a", "file", 1), ItemRow(0, "/data/b", "file", 1)])
    digests = ["0" * 64, "f" * 64]

    journal.add_fingerprint_digests(JOB, [(0, "/data/a", encode_digests(digests))])

    assert encode_digests(digests) == dumps(digests)
    assert encode_digests([]) == dumps([])
    assert journal.get_item(JOB, 0, "/data/a").fingerprints == tuple(digests)
    assert journal.get_item(JOB, 0, "/data/b").fingerprints == ()
    assert journal.fingerprint_count(JOB, "planned") == 2
