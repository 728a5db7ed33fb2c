"""Firmware erase: capability detection and the fallback chain.

No ATA or NVMe drive exists on the test machine, so these tests replay the
recorded tool output formats in tests/block/fixtures. Those files were
written for the tests in the tools' formats, not captured from live devices. The fallback
tests still erase a real loop device when the chain reaches the overwrite.
"""

from __future__ import annotations

from collections.abc import Sequence

from plugins import _firmware
from plugins.base import Decision, JobContext, Method, PlannedItem, Target
from plugins.block import BlockPlugin
from tests.block.conftest import FIXTURES, raw_count


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


class Replay:
    """A tool runner that returns recorded outputs and logs each call.

    ``answers`` maps the argv, with the device path written as DEV, to one
    output or a list of outputs returned in turn. Any other call fails the
    way a missing tool does.
    """

    def __init__(self, device: str, answers: dict[tuple[str, ...], object]) -> None:
        self.device = device
        self.answers = {
            key: list(value) if isinstance(value, list) else [value]
            for key, value in answers.items()
        }
        self.calls: list[tuple[str, ...]] = []

    def __call__(self, argv: Sequence[str]) -> _firmware.ToolOutput:
        key = tuple("DEV" if part == self.device else part for part in argv)
        self.calls.append(key)
        queue = self.answers.get(key)
        if not queue:
            return _firmware.ToolOutput(127, "", f"{argv[0]}: no recorded output")
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        return answer


def ok(text: str = "") -> _firmware.ToolOutput:
    return _firmware.ToolOutput(0, text, "")


def test_hdparm_frozen_ssd_parsed():
    caps = _firmware.parse_hdparm_identify(fixture("hdparm-I-ssd-frozen.txt"))

    assert caps.model == "Samsung SSD 870 EVO 500GB"
    assert caps.security is not None
    assert caps.security.supported
    assert caps.security.frozen
    assert not caps.security.enabled
    assert not caps.security.locked
    assert caps.security.enhanced_erase
    assert caps.sanitize == {"crypto", "block"}
    assert caps.max_sectors == 976773168


def test_hdparm_hdd_parsed():
    caps = _firmware.parse_hdparm_identify(fixture("hdparm-I-hdd.txt"))

    assert caps.security is not None
    assert not caps.security.frozen
    assert caps.sanitize == frozenset()
    assert caps.hpa_feature
    assert caps.dco_feature


def test_hidden_areas_found_and_absent():
    assert _firmware.parse_hdparm_hpa(fixture("hdparm-N-hpa.txt"))[0] == "found"
    assert _firmware.parse_hdparm_hpa(fixture("hdparm-N-none.txt"))[0] == "absent"
    assert (
        _firmware.parse_hdparm_dco(fixture("hdparm-dco.txt"), 1953523055)[0] == "found"
    )
    assert (
        _firmware.parse_hdparm_dco(fixture("hdparm-dco.txt"), 1953525168)[0] == "absent"
    )


def test_hidden_areas_undetermined_when_unreadable():
    runner = Replay(
        "/dev/sdb",
        {
            ("hdparm", "-N", "DEV"): _firmware.ToolOutput(
                5, "", "SG_IO: bad/missing sense data"
            )
        },
    )

    hidden = _firmware.ata_hidden_areas("/dev/sdb", runner)

    assert hidden.hpa == "undetermined"
    assert hidden.dco == "undetermined"
    assert "SG_IO" in hidden.detail


def test_nvme_id_ctrl_parsed():
    caps = _firmware.parse_nvme_id_ctrl(fixture("nvme-id-ctrl.json"))

    assert caps.model == "Samsung SSD 980 PRO 1TB"
    assert caps.sanitize == {"crypto", "block"}
    assert caps.format_supported
    assert caps.format_crypto


def test_sanitize_log_both_formats():
    assert _firmware.parse_sanitize_log(fixture("nvme-sanitize-log-v2.json")).succeeded
    assert _firmware.parse_sanitize_log(fixture("nvme-sanitize-log-v1.json")).succeeded
    failed = _firmware.parse_sanitize_log(fixture("nvme-sanitize-log-v1-failed.json"))
    assert not failed.succeeded
    assert failed.text == "failed"
    running = _firmware.parse_sanitize_log(fixture("nvme-sanitize-log-v2-running.json"))
    assert running.status == 2
    assert running.progress == 0.5


def test_ata_sanitize_status_states():
    assert (
        _firmware.parse_ata_sanitize_status(
            "State:    SD2 Sanitize operation In Process\n"
        )
        == "in progress"
    )
    assert (
        _firmware.parse_ata_sanitize_status(
            "State:    SD4 Sanitize Operation succeeded\n"
        )
        == "succeeded"
    )
    assert (
        _firmware.parse_ata_sanitize_status("State:    SD1 Sanitize Frozen\n")
        == "frozen"
    )


def test_frozen_ssd_chain_skips_security_erase():
    runner = Replay(
        "/dev/sda",
        {
            ("hdparm", "-I", "DEV"): ok(fixture("hdparm-I-ssd-frozen.txt")),
            ("hdparm", "-N", "DEV"): ok(fixture("hdparm-N-none.txt")),
        },
    )

    caps = _firmware.detect("/dev/sda", "scsi", runner)
    steps, notes = _firmware.chain(caps)

    assert [step.name for step in steps] == [
        "ata-sanitize-crypto",
        "ata-sanitize-block",
        "overwrite",
    ]
    assert any("frozen" in note and "suspend" in note for note in notes)
    assert caps.hidden.hpa == "absent"
    assert caps.hidden.dco == "undetermined"


def test_hdd_chain_uses_security_erase_with_password_note():
    runner = Replay(
        "/dev/sdb", {("hdparm", "-I", "DEV"): ok(fixture("hdparm-I-hdd.txt"))}
    )

    steps, _notes = _firmware.chain(_firmware.detect("/dev/sdb", "scsi", runner))

    assert [step.name for step in steps] == [
        "ata-security-erase-enhanced",
        "ata-security-erase",
        "overwrite",
    ]
    assert "temporary user password" in steps[0].notes[0]


def test_nvme_chain_order():
    runner = Replay(
        "/dev/nvme0n1",
        {("nvme", "id-ctrl", "DEV", "-o", "json"): ok(fixture("nvme-id-ctrl.json"))},
    )

    caps = _firmware.detect("/dev/nvme0n1", "nvme", runner)
    steps, _notes = _firmware.chain(caps)

    assert [step.name for step in steps] == [
        "nvme-sanitize-crypto",
        "nvme-sanitize-block",
        "nvme-format-crypto",
        "nvme-format-erase",
        "overwrite",
    ]
    assert all(step.method is Method.PURGE_FIRMWARE for step in steps[:-1])


def test_nvme_without_sanitize_falls_to_format():
    runner = Replay(
        "/dev/nvme0n1",
        {
            ("nvme", "id-ctrl", "DEV", "-o", "json"): ok(
                fixture("nvme-id-ctrl-format-only.json")
            )
        },
    )

    steps, _notes = _firmware.chain(_firmware.detect("/dev/nvme0n1", "nvme", runner))

    assert [step.name for step in steps] == ["nvme-format-erase", "overwrite"]


def test_discard_only_on_request():
    caps = _firmware.Capabilities("loop")

    assert [step.name for step in _firmware.chain(caps)[0]] == ["overwrite"]
    discard = _firmware.chain(caps, "discard")[0]
    assert [step.name for step in discard] == ["blkdiscard"]
    assert "may keep the data" in discard[0].notes[0]


def _planned(plugin: BlockPlugin, chain: list[str]) -> list[PlannedItem]:
    item = next(plugin.discover())
    planned = plugin.plan_item(item)
    decision = Decision(
        method=Method.PURGE_FIRMWARE,
        fingerprints=planned.fingerprints or (b"LETHE-BLOCK-CANARY customer=Ada",),
        params=dict(planned.params, chain=chain),
    )
    return [PlannedItem(item, decision)]


def test_failed_firmware_falls_back_to_overwrite(loop_device, monkeypatch):
    device = loop_device(8)
    runner = Replay(
        device,
        {
            ("nvme", "sanitize", "DEV", "--sanact=4"): _firmware.ToolOutput(
                1,
                "",
                "NVMe status: SANITIZE_PROHIBITED: Sanitize is prohibited while persistent memory region is enabled(0x823)",
            ),
            ("nvme", "format", "DEV", "--ses=2", "--force"): _firmware.ToolOutput(
                1,
                "",
                "NVMe status: INVALID_FORMAT: The LBA Format specified is not supported(0x10a)",
            ),
        },
    )
    monkeypatch.setattr(BlockPlugin, "runner", staticmethod(runner))
    plugin = BlockPlugin(
        Target(f"block://{device}"), JobContext(job_id="test", dry_run=False)
    )
    planned = _planned(
        plugin, ["nvme-sanitize-crypto", "nvme-format-crypto", "overwrite"]
    )

    result = next(iter(plugin.purge(planned)))
    evidence = next(iter(plugin.verify(planned)))
    plugin.close()

    assert result.status == "purged"
    assert result.facts["method_used"] == "overwrite"
    assert result.method is Method.CLEAR_OVERWRITE
    assert [attempt["step"] for attempt in result.facts["attempts"]] == [
        "nvme-sanitize-crypto",
        "nvme-format-crypto",
    ]
    assert "SANITIZE_PROHIBITED" in result.facts["attempts"][0]["error"]
    assert evidence.verified
    assert raw_count(device) == 0


def test_replayed_sanitize_is_not_trusted(loop_device, monkeypatch):
    # The recorded sanitize reports success, but nothing erased the loop
    # device, so the raw scan must still find the canaries and fail.
    device = loop_device(8)
    runner = Replay(
        device,
        {
            ("nvme", "sanitize", "DEV", "--sanact=4"): ok(""),
            ("nvme", "sanitize-log", "DEV", "-o", "json"): [
                ok(fixture("nvme-sanitize-log-v2-running.json")),
                ok(fixture("nvme-sanitize-log-v2.json")),
            ],
        },
    )
    monkeypatch.setattr(BlockPlugin, "runner", staticmethod(runner))
    monkeypatch.setattr(_firmware.time, "sleep", lambda seconds: None)
    plugin = BlockPlugin(
        Target(f"block://{device}"), JobContext(job_id="test", dry_run=False)
    )
    item = next(plugin.discover())
    fingerprints = (b"LETHE-BLOCK-CANARY customer=Ada Lovelace",)
    planned = [
        PlannedItem(
            item,
            Decision(
                method=Method.PURGE_FIRMWARE,
                fingerprints=fingerprints,
                params={"chain": ["nvme-sanitize-crypto", "overwrite"]},
            ),
        )
    ]

    result = next(iter(plugin.purge(planned)))
    evidence = next(iter(plugin.verify(planned)))
    plugin.close()

    checks = {check.name: check for check in evidence.checks}
    assert result.facts["method_used"] == "nvme-sanitize-crypto"
    assert runner.calls.count(("nvme", "sanitize-log", "DEV", "-o", "json")) >= 2
    assert checks["sanitize-log"].passed
    assert not checks["raw-scan"].passed
    assert not evidence.verified
    assert raw_count(device) == 16
