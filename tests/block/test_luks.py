"""LUKS crypto-erase of a LUKS2 image with cryptsetup."""

from __future__ import annotations

import subprocess

from plugins.base import Method
from plugins.block import BlockPlugin
from tests.conftest import require_tool
from tests.helpers.driver import run_plugin


def luks_format(device: str, key_file) -> None:
    key_file.write_bytes(b"correct horse battery staple for lethe tests")
    subprocess.run(
        [
            "cryptsetup",
            "luksFormat",
            "--batch-mode",
            "--type",
            "luks2",
            "--pbkdf",
            "pbkdf2",
            "--pbkdf-force-iterations",
            "1000",
            "--key-file",
            str(key_file),
            device,
        ],
        check=True,
        capture_output=True,
    )


def test_luks_erase_destroys_key_slots(loop_device, tmp_path):
    require_tool("cryptsetup")
    device = loop_device(32, canaries=False)
    key_file = tmp_path / "key"
    luks_format(device, key_file)
    opens = subprocess.run(
        [
            "cryptsetup",
            "open",
            "--test-passphrase",
            "--key-file",
            str(key_file),
            device,
        ],
        capture_output=True,
        check=False,
    )
    assert opens.returncode == 0  # control: the key opens the volume before the erase

    run = run_plugin(BlockPlugin, f"block://{device}")

    decision = run.planned[0].decision
    assert decision.method is Method.PURGE_CRYPTO
    assert any("luksHeaderBackup" in line for line in decision.residual)
    assert run.results[0].facts["method_used"] == "luks-erase"
    assert run.results[0].method is Method.PURGE_CRYPTO
    assert run.unverified() == []
    dump = subprocess.run(
        ["cryptsetup", "luksDump", device], capture_output=True, text=True, check=False
    )
    keyslots = dump.stdout.split("Keyslots:", 1)[1].split("Tokens:", 1)[0]
    assert keyslots.strip() == ""
    opens = subprocess.run(
        [
            "cryptsetup",
            "open",
            "--test-passphrase",
            "--key-file",
            str(key_file),
            device,
        ],
        capture_output=True,
        check=False,
    )
    assert opens.returncode != 0


def test_luks_verification_checks_keyslot_area(loop_device, tmp_path):
    device = loop_device(32, canaries=False)
    luks_format(device, tmp_path / "key")

    run = run_plugin(BlockPlugin, f"block://{device}")

    names = {check.name: check for check in run.evidence[0].checks}
    assert names["luks-key-slots"].passed
    assert names["keyslot-areas"].passed
    assert "none of" in names["keyslot-areas"].detail
    assert len(run.planned[0].decision.fingerprints) > 0
