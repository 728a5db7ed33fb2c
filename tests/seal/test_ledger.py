"""The erasure ledger: recording, tamper evidence, and replay on a restored backup."""

from __future__ import annotations

import json
import shutil
import sqlite3
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import keyfile, ledger
from agent.audit import AuditChainBroken
from tests.conftest import require_root, require_tool
from tests.helpers.loopfs import loop_filesystem

CUSTOMERS = [
    (1, "Ada Lovelace", "ada@example.com", "active"),
    (2, "Alan Turing", "alan@example.com", "active"),
    (3, "Grace Hopper", "grace@example.com", "closed"),
    (4, "Edsger Dijkstra", "edsger@example.com", "active"),
    (5, "Barbara Liskov", "barbara@example.com", "closed"),
    (6, "Donald Knuth", "donald@example.com", "active"),
    (7, "Frances Allen", "frances@example.com", "closed"),
    (8, "Ken Thompson", "ken@example.com", "active"),
]


def _make_database(path: Path) -> None:
    with sqlite3.connect(path) as connection:
        connection.execute(
            "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT, email TEXT, status TEXT)"
        )
        connection.executemany("INSERT INTO customers VALUES (?, ?, ?, ?)", CUSTOMERS)
    connection.close()


def _make_exports(root: Path) -> None:
    for customer_id, name, email, _status in CUSTOMERS:
        directory = root / f"cust-{customer_id}"
        directory.mkdir(parents=True)
        # Unique names: the files plugin scans the device for purged names too.
        (directory / f"invoice-{customer_id}.csv").write_text(f"{name},{email}\n")


def _query(path: Path, sql: str) -> list[tuple]:
    connection = sqlite3.connect(path)
    try:
        return connection.execute(sql).fetchall()
    finally:
        connection.close()


def _sqlite_target(path: Path, table: str, where: str, *params: str) -> str:
    query = [
        ("table", table),
        ("where", where),
        *(("param", value) for value in params),
    ]
    return f"sqlite://{path}?{urllib.parse.urlencode(query)}"


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """Return the mount point of a fresh ext4 loop filesystem, where files are purged."""
    require_root()
    require_tool("mkfs.ext4")
    with loop_filesystem(tmp_path, "ext4", size_mib=32) as filesystem:
        yield filesystem.mountpoint


@pytest.fixture
def live(disk: Path, tmp_path: Path) -> Path:
    """A live system (database and exports), with a backup taken of it.

    The backup sits outside the loop filesystem, as on a backup medium,
    so the purge's device scan does not find the backup's copies.
    """
    root = disk / "live"
    root.mkdir()
    _make_database(root / "app.db")
    _make_exports(root / "exports")
    shutil.copytree(root, tmp_path / "backup")
    return root


def _purge_closed(lethe, live: Path) -> None:
    """Purge closed customers, after customer 7 reopened since the backup."""
    with sqlite3.connect(live / "app.db") as connection:
        connection.execute("UPDATE customers SET status = 'active' WHERE id = 7")
        connection.execute("CREATE TABLE leads (id INTEGER PRIMARY KEY, email TEXT)")
        connection.executemany(
            "INSERT INTO leads VALUES (?, ?)",
            [(1, "lead1@example.com"), (2, "lead2@example.com")],
        )
    connection.close()
    result = lethe(
        "purge",
        "--yes",
        _sqlite_target(live / "app.db", "customers", "status = ?", "closed"),
        _sqlite_target(live / "app.db", "leads", "id = ?", "1"),
        str(live / "exports" / "cust-3"),
        str(live / "exports" / "cust-5"),
    )
    assert result.returncode == 0, result.stderr


def test_purge_appends_ledger_entry(lethe, live: Path, state_dir: Path) -> None:
    _purge_closed(lethe, live)
    entries = list(ledger.entries(state_dir))
    assert len(entries) == 1
    targets = entries[0]["targets"]
    assert [record["count"] for record in targets] == [2, 1, 2, 2]
    assert targets[0]["selector"] == {
        "table": "customers",
        "where": "status = ?",
        "param": ["closed"],
    }
    text = (state_dir / ledger.FILE_NAME).read_text()
    assert "Grace Hopper" not in text
    assert "invoice-3.csv" not in text
    assert "customers:[3]" not in text


def test_ledger_verify_detects_edit(lethe, live: Path, state_dir: Path) -> None:
    _purge_closed(lethe, live)
    second_purge = lethe("purge", "--yes", str(live / "exports" / "cust-1"))
    assert second_purge.returncode == 0
    assert lethe("ledger", "verify").returncode == 0
    path = state_dir / ledger.FILE_NAME
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[0].replace('"count":2', '"count":1') + lines[1])
    result = lethe("ledger", "verify")
    assert result.returncode == 2
    assert "line 2" in result.stderr or ":2:" in result.stderr


def test_ledger_verify_detects_removed_line(lethe, live: Path, state_dir: Path) -> None:
    _purge_closed(lethe, live)
    assert lethe("purge", "--yes", str(live / "exports" / "cust-1")).returncode == 0
    path = state_dir / ledger.FILE_NAME
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[1])
    with pytest.raises(AuditChainBroken):
        ledger.verify(state_dir)


def test_replay_purges_exactly_resurfaced(
    lethe, live: Path, disk: Path, tmp_path: Path
) -> None:
    _purge_closed(lethe, live)
    assert _query(live / "app.db", "SELECT id FROM customers WHERE id IN (3, 5)") == []
    restored = disk / "restored"
    shutil.copytree(tmp_path / "backup", restored)
    assert _query(
        restored / "app.db",
        "SELECT id FROM customers WHERE status = 'closed' ORDER BY id",
    ) == [(3,), (5,), (7,)]

    planned = lethe(
        "ledger",
        "replay",
        "--dry-run",
        "--json",
        f"sqlite://{restored}/app.db",
        str(restored / "exports"),
    )
    report = json.loads(planned.stdout)
    assert report["resurfaced"] == 6  # 2 rows, 2 directories, 2 files
    assert _query(restored / "app.db", "SELECT COUNT(*) FROM customers") == [(8,)]

    result = lethe(
        "ledger",
        "replay",
        "--yes",
        "--json",
        f"sqlite://{restored}/app.db",
        str(restored / "exports"),
    )
    report = json.loads(result.stdout)
    assert result.returncode == 1, result.stderr
    assert report["resurfaced"] == 6  # 2 rows, 2 directories, 2 files
    assert report["job"]["state"] == "done"
    assert report["job"]["certificate"]
    assert [problem["target"].split("?")[0] for problem in report["not_applied"]] == [
        f"sqlite://{restored}/app.db"
    ]
    assert "leads" in report["not_applied"][0]["error"]
    remaining = _query(restored / "app.db", "SELECT id FROM customers ORDER BY id")
    assert remaining == [(1,), (2,), (4,), (6,), (7,), (8,)]
    assert not (restored / "exports" / "cust-3").exists()
    assert not (restored / "exports" / "cust-5").exists()
    assert (restored / "exports" / "cust-7" / "invoice-7.csv").exists()
    assert (restored / "exports" / "cust-1" / "invoice-1.csv").exists()


def test_ledger_digests_are_keyed(lethe, live: Path, state_dir: Path) -> None:
    _purge_closed(lethe, live)
    key = (state_dir / ledger.KEY_FILE).read_bytes()
    entry = next(ledger.entries(state_dir))
    assert entry["digest"] == "hmac-sha256"
    assert entry["key_id"] == ledger.key_id(key)
    cust_3 = entry["targets"][2]
    assert cust_3["base"] == str(live / "exports" / "cust-3")
    expected = sorted(ledger.item_digest(name, key) for name in ("", "invoice-3.csv"))
    assert cust_3["items"] == expected
    plain = ledger.item_digest("invoice-3.csv", None)
    assert plain not in (state_dir / ledger.FILE_NAME).read_text()


def test_ledger_key_file_mode(lethe, live: Path, state_dir: Path) -> None:
    _purge_closed(lethe, live)
    path = state_dir / ledger.KEY_FILE
    assert path.stat().st_mode & 0o777 == 0o600
    assert len(path.read_bytes()) == keyfile.KEY_SIZE
    assert path.read_bytes().hex() not in (state_dir / ledger.FILE_NAME).read_text()


def _append_plain_entry(state_dir: Path, directory: Path, invoice: str) -> None:
    """Append an entry as written before the ledger key: plain SHA-256, no scheme."""
    ledger.open_ledger(state_dir).append(
        ledger.KIND,
        job_id="before-ledger-key",
        plan_hash="0" * 64,
        certificate=None,
        targets=[
            {
                "scheme": "path",
                "plugin": "files",
                "base": str(directory),
                "name": directory.name,
                "selector": {},
                "count": 2,
                "items": sorted(
                    ledger.item_digest(name, None) for name in ("", invoice)
                ),
            }
        ],
    )


def test_replay_plain_sha256_entry(
    lethe, disk: Path, tmp_path: Path, state_dir: Path
) -> None:
    restored = disk / "restored"
    _make_exports(restored / "exports")
    _append_plain_entry(state_dir, restored / "exports" / "cust-2", "invoice-2.csv")
    ledger.load_or_create_key(state_dir)  # as after any later purge
    result = lethe("ledger", "replay", "--yes", "--json", str(restored / "exports"))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["resurfaced"] == 2
    assert report["job"]["state"] == "done"
    assert not (restored / "exports" / "cust-2").exists()
    assert (restored / "exports" / "cust-1" / "invoice-1.csv").exists()


@pytest.mark.parametrize("problem", ["other key", "no key"])
def test_replay_reports_ledger_key_problem(
    lethe, live: Path, disk: Path, tmp_path: Path, state_dir: Path, problem: str
) -> None:
    _purge_closed(lethe, live)
    restored = disk / "restored"
    shutil.copytree(tmp_path / "backup", restored)
    # A customer purged before the ledger key existed. Its data exists only
    # in the restored copy, so the device scan after the replay finds none.
    (restored / "exports" / "cust-9").mkdir()
    (restored / "exports" / "cust-9" / "invoice-9.csv").write_text("Old Customer\n")
    _append_plain_entry(state_dir, live / "exports" / "cust-9", "invoice-9.csv")
    key_path = state_dir / ledger.KEY_FILE
    key_path.unlink()
    if problem == "other key":
        key_path.write_bytes(bytes(keyfile.KEY_SIZE))
        key_path.chmod(0o600)

    result = lethe("ledger", "replay", "--yes", "--json", str(restored / "exports"))
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    errors = [problem["error"] for problem in report["not_applied"]]
    assert len(errors) == 2  # cust-3 and cust-5
    for error in errors:
        assert f"ledger key {key_path}" in error
        assert "restore" in error
    assert report["resurfaced"] == 2  # the plain SHA-256 entry still applies
    assert not (restored / "exports" / "cust-9").exists()
    assert (restored / "exports" / "cust-3" / "invoice-3.csv").exists()


def test_replay_twice_finds_nothing(
    lethe, live: Path, disk: Path, tmp_path: Path
) -> None:
    _purge_closed(lethe, live)
    restored = disk / "restored"
    shutil.copytree(tmp_path / "backup", restored)
    targets = (f"sqlite://{restored}/app.db", str(restored / "exports"))
    assert lethe("ledger", "replay", "--yes", *targets).returncode == 1
    again = json.loads(lethe("ledger", "replay", "--yes", "--json", *targets).stdout)
    assert again["resurfaced"] == 0
    assert again["job"] is None


def test_replay_without_yes_on_pipe(lethe, tmp_path: Path) -> None:
    result = lethe("ledger", "replay", f"sqlite://{tmp_path}/backup/app.db")
    assert result.returncode == 3
    assert "--yes" in result.stderr


def test_seal_purge_unseal_through_cli(lethe, tmp_path: Path, state_dir: Path) -> None:
    source = tmp_path / "export.csv"
    source.write_text("Ada Lovelace,ada@example.com\n" * 100)
    assert lethe("seal", str(source), "--subject", "cust-1").returncode == 0
    sealed = tmp_path / "export.csv.lethe"
    restored = lethe("unseal", str(sealed), "-o", str(tmp_path / "restored.csv"))
    assert restored.returncode == 0, restored.stderr
    assert (tmp_path / "restored.csv").read_text() == source.read_text()
    purged = lethe("purge", "--yes", "key://cust-1")
    assert purged.returncode == 0, purged.stderr
    failed = lethe("unseal", str(sealed), "-o", str(tmp_path / "again.csv"))
    assert failed.returncode == 2
    assert "the data key for subject cust-1 was destroyed on" in failed.stderr
    assert not (tmp_path / "again.csv").exists()
    assert len(list(ledger.entries(state_dir))) == 1


def test_unseal_with_wrong_kek_through_cli(lethe, tmp_path: Path) -> None:
    source = tmp_path / "export.csv"
    source.write_text("row\n" * 100)
    assert lethe("seal", str(source), "--subject", "cust-1").returncode == 0
    result = lethe(
        "unseal",
        str(tmp_path / "export.csv.lethe"),
        "-o",
        str(tmp_path / "out"),
        env={"LETHE_KEK": "00" * 32},
    )
    assert result.returncode == 2
    assert "key-encryption key" in result.stderr
    assert not (tmp_path / "out").exists()


def test_replay_destroys_restored_key(lethe, tmp_path: Path, state_dir: Path) -> None:
    source = tmp_path / "export.csv"
    source.write_text("Ada Lovelace,ada@example.com\n" * 100)
    assert lethe("seal", str(source), "--subject", "cust-1").returncode == 0
    assert (
        lethe(
            "seal",
            str(source),
            "--subject",
            "cust-2",
            "-o",
            str(tmp_path / "other.lethe"),
        ).returncode
        == 0
    )
    store = state_dir / "keys" / "data-keys.store"
    backup = tmp_path / "data-keys.store.backup"
    shutil.copy2(store, backup)
    assert lethe("purge", "--yes", "key://cust-1").returncode == 0

    shutil.copy2(backup, store)
    resurrected = lethe(
        "unseal", str(tmp_path / "export.csv.lethe"), "-o", str(tmp_path / "leak.csv")
    )
    assert resurrected.returncode == 0
    (tmp_path / "leak.csv").unlink()

    result = lethe("ledger", "replay", "--yes", "--json", "key://*")
    report = json.loads(result.stdout)
    assert result.returncode == 0, result.stderr
    assert report["resurfaced"] == 1
    assert report["job"]["state"] == "done"
    again = lethe(
        "unseal", str(tmp_path / "export.csv.lethe"), "-o", str(tmp_path / "again.csv")
    )
    assert again.returncode == 2
    assert "was destroyed" in again.stderr
    kept = lethe(
        "unseal", str(tmp_path / "other.lethe"), "-o", str(tmp_path / "other.csv")
    )
    assert kept.returncode == 0


def test_keystore_config_errors(lethe, tmp_path: Path) -> None:
    source = tmp_path / "export.csv"
    source.write_text("row\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("keystore:\n  backend: gcp\n")
    result = lethe("seal", "-c", str(bad), str(source), "--subject", "cust-1")
    assert result.returncode == 3
    assert (
        "bad.yaml:2: keystore.backend: expected one of local, aws-kms" in result.stderr
    )
    missing = tmp_path / "missing.yaml"
    missing.write_text(f"keystore:\n  kek_file: {tmp_path}/absent\n")
    result = lethe("seal", "-c", str(missing), str(source), "--subject", "cust-1")
    assert result.returncode == 3
    assert "key-encryption key file" in result.stderr
    assert not (tmp_path / "export.csv.lethe").exists()


def test_engine_job_writes_ledger_without_cli(tmp_path: Path) -> None:
    """A job run through the engine alone (as the daemon does) is recorded too."""
    import subprocess
    import sys

    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("x" * 100)
    state = tmp_path / "state"
    state.mkdir()
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from agent.config import Config\n"
        "from agent.engine import Engine\n"
        "from agent.registry import Registry\n"
        "from plugins.base import Target\n"
        "from tests.core.dirplugin import DirPlugin\n"
        "registry = Registry.from_entry_points()\n"
        "registry.add(DirPlugin)\n"
        "engine = Engine(Config(), Path(sys.argv[1]), registry=registry)\n"
        "job = engine.plan([Target('testdir://' + sys.argv[2])], {}, dry_run=False)\n"
        "engine.purge(job)\n"
        "engine.close()\n"
        "assert 'agent.commands.ledger' not in sys.modules\n"
    )
    subprocess.run(
        [sys.executable, "-c", script, str(state), str(data)],
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert len(list(ledger.entries(state))) == 1


def test_dataset_seal_and_default_names(lethe, tmp_path: Path, state_dir: Path) -> None:
    source = tmp_path / "orders.csv"
    source.write_text("order,total\n1,10\n")
    sealed = lethe("seal", str(source), "--dataset", "orders-2024")
    assert sealed.returncode == 0, sealed.stderr
    source.rename(tmp_path / "orders.original")
    restored = lethe("unseal", str(tmp_path / "orders.csv.lethe"))
    assert restored.returncode == 0, restored.stderr
    assert source.read_text() == "order,total\n1,10\n"
    assert lethe("purge", "--yes", "key://dataset:orders-2024").returncode == 0
    shown = lethe("ledger", "show")
    assert shown.returncode == 0
    assert "key://hmac-sha256:" in shown.stdout
    assert "orders-2024" not in shown.stdout


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "postgresql://app:s3cret@db.example:5432/shop?table=t",
            "postgresql://db.example:5432/shop",
        ),
        ("key://dataset:orders-2024", "key://dataset:orders-2024"),
        ("/srv/exports", "/srv/exports"),
    ],
)
def test_base_url_drops_credentials(url: str, expected: str) -> None:
    from plugins.base import Target

    assert ledger.base_url(Target(url)) == expected
