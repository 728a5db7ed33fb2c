"""Drive firmware erase commands through nvme-cli, hdparm and cryptsetup.

Capability detection parses the text these tools print, so it is tested
against recorded outputs. Every tool call goes through a :data:`Runner`, which
the plugin replaces in tests with a replay of recorded outputs.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from plugins.base import Method


@dataclass(frozen=True)
class ToolOutput:
    """Exit status and output of one tool call; 127 means the tool is missing."""

    returncode: int
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def message(self) -> str:
        text = (self.stderr or self.stdout).strip().splitlines()
        return text[-1] if text else f"exit status {self.returncode}"


Runner = Callable[[Sequence[str]], ToolOutput]


def run_tool(argv: Sequence[str], timeout: float = 24 * 3600) -> ToolOutput:
    """Run a system tool without a shell and capture its output."""
    try:
        completed = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, check=False
        )
    except FileNotFoundError:
        return ToolOutput(127, "", f"{argv[0]}: command not found")
    except subprocess.TimeoutExpired:
        return ToolOutput(124, "", f"{argv[0]} timed out after {timeout:.0f} s")
    return ToolOutput(completed.returncode, completed.stdout, completed.stderr)


# ---------------------------------------------------------------- ATA (hdparm)


@dataclass(frozen=True)
class AtaSecurity:
    """The "Security:" block of ``hdparm -I``."""

    supported: bool = False
    enabled: bool = False
    locked: bool = False
    frozen: bool = False
    expired: bool = False
    enhanced_erase: bool = False
    erase_time: str = ""


@dataclass(frozen=True)
class AtaCapabilities:
    """Erase support and hidden-area features from ``hdparm -I``."""

    model: str = ""
    serial: str = ""
    firmware: str = ""
    security: AtaSecurity | None = None
    sanitize: frozenset[str] = frozenset()
    hpa_feature: bool = False
    dco_feature: bool = False
    max_sectors: int = 0


def _field(text: str, label: str) -> str:
    match = re.search(rf"^\s*{re.escape(label)}:\s*(.*?)\s*$", text, re.MULTILINE)
    return match.group(1) if match else ""


def parse_hdparm_identify(text: str) -> AtaCapabilities:
    """Parse ``hdparm -I DEV`` output."""
    security = None
    block = re.search(r"^Security:\s*\n((?:[ \t]+.*\n?)*)", text, re.MULTILINE)
    if block:
        lines = [line.strip() for line in block.group(1).splitlines()]

        def flag(word: str) -> bool:
            return any(re.fullmatch(rf"{word}", line) for line in lines)

        def negated(word: str) -> bool:
            return any(re.fullmatch(rf"not\s+{word}(:.*)?", line) for line in lines)

        erase_time = next((line for line in lines if "SECURITY ERASE UNIT" in line), "")
        security = AtaSecurity(
            supported=flag("supported") and not negated("supported"),
            enabled=flag("enabled"),
            locked=flag("locked"),
            frozen=flag("frozen"),
            expired=any(re.fullmatch(r"expired(:.*)?", line) for line in lines),
            enhanced_erase=any(line == "supported: enhanced erase" for line in lines),
            erase_time=erase_time,
        )
    sanitize = set()
    if re.search(r"SANITIZE feature set", text):
        for command, name in (
            ("CRYPTO_SCRAMBLE_EXT", "crypto"),
            ("BLOCK_ERASE_EXT", "block"),
            ("OVERWRITE_EXT", "overwrite"),
        ):
            if re.search(rf"^\s*\*?\s*{command} command", text, re.MULTILINE):
                sanitize.add(name)
    sectors = re.search(
        r"LBA48\s+user addressable sectors:\s*(\d+)", text
    ) or re.search(r"LBA\s+user addressable sectors:\s*(\d+)", text)
    return AtaCapabilities(
        model=_field(text, "Model Number"),
        serial=_field(text, "Serial Number"),
        firmware=_field(text, "Firmware Revision"),
        security=security,
        sanitize=frozenset(sanitize),
        hpa_feature="Host Protected Area feature set" in text,
        dco_feature="Device Configuration Overlay feature set" in text,
        max_sectors=int(sectors.group(1)) if sectors else 0,
    )


@dataclass(frozen=True)
class HiddenAreas:
    """Whether a device hides sectors from the host (HPA, DCO).

    Each status is "found", "absent" or "undetermined"; "undetermined" comes
    with the reason, and is never reported as "absent".
    """

    hpa: str = "undetermined"
    dco: str = "undetermined"
    detail: str = ""

    def as_facts(self) -> dict[str, str]:
        return {"hpa": self.hpa, "dco": self.dco, "detail": self.detail}


def parse_hdparm_hpa(text: str) -> tuple[str, str]:
    """Parse ``hdparm -N DEV``: return (status, detail)."""
    match = re.search(
        r"max sectors\s*=\s*(\d+)/(\d+),\s*HPA is (enabled|disabled)", text
    )
    if not match:
        return "undetermined", "hdparm -N output not recognised"
    current, native, state = int(match.group(1)), int(match.group(2)), match.group(3)
    if state == "enabled" or current < native:
        return (
            "found",
            f"HPA hides {native - current} sectors ({current} of {native} visible)",
        )
    return "absent", f"HPA disabled, {native} sectors visible"


def parse_hdparm_dco(text: str, native_sectors: int) -> tuple[str, str]:
    """Parse ``hdparm --dco-identify DEV`` against the native max sector count."""
    match = re.search(r"Real max sectors:\s*(\d+)", text)
    if not match or native_sectors <= 0:
        return "undetermined", "hdparm --dco-identify output not recognised"
    real = int(match.group(1))
    if real > native_sectors:
        return (
            "found",
            f"DCO hides {real - native_sectors} sectors beyond the native maximum",
        )
    return "absent", f"DCO maximum {real} sectors equals the native maximum"


def ata_hidden_areas(device: str, runner: Runner) -> HiddenAreas:
    """Read HPA and DCO state with hdparm; unreadable states stay undetermined."""
    hpa_output = runner(["hdparm", "-N", device])
    if not hpa_output.ok:
        return HiddenAreas(detail=f"hdparm -N failed: {hpa_output.message()}")
    hpa, hpa_detail = parse_hdparm_hpa(hpa_output.stdout)
    native = re.search(r"max sectors\s*=\s*\d+/(\d+)", hpa_output.stdout)
    dco_output = runner(["hdparm", "--dco-identify", device])
    if dco_output.ok and native:
        dco, dco_detail = parse_hdparm_dco(dco_output.stdout, int(native.group(1)))
    else:
        dco, dco_detail = (
            "undetermined",
            f"hdparm --dco-identify failed: {dco_output.message()}",
        )
    return HiddenAreas(hpa, dco, f"{hpa_detail}; {dco_detail}")


# ---------------------------------------------------------------- NVMe (nvme-cli)


@dataclass(frozen=True)
class NvmeCapabilities:
    """Erase support from ``nvme id-ctrl -o json``."""

    model: str = ""
    serial: str = ""
    firmware: str = ""
    sanitize: frozenset[str] = frozenset()
    format_supported: bool = False
    format_crypto: bool = False
    format_all_namespaces: bool = False
    unallocated_capacity: int | None = None


def parse_nvme_id_ctrl(text: str) -> NvmeCapabilities:
    """Parse ``nvme id-ctrl DEV -o json`` (SANICAP, OACS and FNA fields)."""
    data = json.loads(text)
    sanicap = int(data.get("sanicap", 0))
    oacs = int(data.get("oacs", 0))
    fna = int(data.get("fna", 0))
    sanitize = {
        name
        for bit, name in ((0, "crypto"), (1, "block"), (2, "overwrite"))
        if sanicap >> bit & 1
    }
    unallocated = data.get("unvmcap")
    return NvmeCapabilities(
        model=str(data.get("mn", "")).strip(),
        serial=str(data.get("sn", "")).strip(),
        firmware=str(data.get("fr", "")).strip(),
        sanitize=frozenset(sanitize),
        format_supported=bool(oacs >> 1 & 1),
        format_crypto=bool(fna >> 2 & 1),
        format_all_namespaces=bool(fna & 1),
        unallocated_capacity=int(unallocated) if unallocated is not None else None,
    )


#: Sanitize status (SSTAT bits 2:0) in the sanitize log page.
SANITIZE_STATUS = {
    0: "never sanitized",
    1: "completed successfully",
    2: "in progress",
    3: "failed",
    4: "completed successfully without deallocation",
}


@dataclass(frozen=True)
class SanitizeState:
    """The sanitize log page: status code and progress fraction."""

    status: int
    progress: float

    @property
    def text(self) -> str:
        return SANITIZE_STATUS.get(self.status, f"unknown status {self.status}")

    @property
    def succeeded(self) -> bool:
        return self.status in (1, 4)


def parse_sanitize_log(text: str) -> SanitizeState:
    """Parse ``nvme sanitize-log DEV -o json`` from nvme-cli 1.x or 2.x.

    nvme-cli 1.x prints SSTAT as an integer at the top level; 2.x nests the
    log under the device name and prints SSTAT as an object with ``status``.
    """
    data = json.loads(text)
    if "sstat" not in data and len(data) == 1:
        data = next(iter(data.values()))
    sstat = data["sstat"]
    status = int(sstat["status"]) if isinstance(sstat, dict) else int(sstat) & 0x7
    sprog = int(data.get("sprog", 0))
    return SanitizeState(status, 1.0 if status in (1, 4) else sprog / 65536)


# ---------------------------------------------------------------- method chain


@dataclass(frozen=True)
class Step:
    """One link of the method chain: a named erase with its SP 800-88 method."""

    name: str
    method: Method
    description: str
    notes: tuple[str, ...] = ()


OVERWRITE = Step(
    "overwrite",
    Method.CLEAR_OVERWRITE,
    "overwrite with O_DIRECT writes, fdatasync per pass",
)
LUKS_ERASE = Step(
    "luks-erase",
    Method.PURGE_CRYPTO,
    "cryptsetup erase: destroy every LUKS key slot",
    (
        "any copy of the LUKS header (a luksHeaderBackup file, an old image) restores access",
    ),
)
DISCARD = Step(
    "blkdiscard",
    Method.CLEAR_OVERWRITE,
    "blkdiscard of the whole device",
    ("discard is a hint: the device may keep the data; the read-back decides",),
)


@dataclass
class Capabilities:
    """Erase capabilities of one device as the tools report them."""

    kind: str
    ata: AtaCapabilities | None = None
    nvme: NvmeCapabilities | None = None
    luks: bool = False
    hidden: HiddenAreas = field(default_factory=HiddenAreas)
    notes: list[str] = field(default_factory=list)


def detect(device: str, kind: str, runner: Runner) -> Capabilities:
    """Ask the tools what the device supports; failures become plan notes."""
    capabilities = Capabilities(kind)
    if kind == "nvme":
        output = runner(["nvme", "id-ctrl", device, "-o", "json"])
        if output.ok:
            try:
                capabilities.nvme = parse_nvme_id_ctrl(output.stdout)
            except (ValueError, KeyError, TypeError) as error:
                capabilities.notes.append(
                    f"nvme id-ctrl output not recognised: {error}"
                )
        else:
            capabilities.notes.append(f"nvme id-ctrl failed: {output.message()}")
        capabilities.hidden = HiddenAreas(
            "absent",
            "absent",
            "NVMe has no HPA or DCO; namespaces and unallocated capacity are reported separately",
        )
        if capabilities.nvme and capabilities.nvme.unallocated_capacity:
            capabilities.hidden = HiddenAreas(
                "found",
                "absent",
                f"{capabilities.nvme.unallocated_capacity} bytes of NVM capacity are not in any "
                "namespace; sanitize reaches them, format and overwrite do not",
            )
    elif kind == "scsi":
        output = runner(["hdparm", "-I", device])
        if output.ok and "ATA device" in output.stdout:
            capabilities.ata = parse_hdparm_identify(output.stdout)
            capabilities.hidden = ata_hidden_areas(device, runner)
        else:
            capabilities.notes.append(
                f"not an ATA device or hdparm failed ({output.message()}); no firmware erase"
            )
            capabilities.hidden = HiddenAreas(detail="hdparm could not read the device")
    else:
        capabilities.hidden = HiddenAreas(
            "undetermined",
            "undetermined",
            f"not applicable to {kind} devices: they have no ATA or NVMe hidden areas",
        )
    luks = runner(["cryptsetup", "isLuks", device])
    capabilities.luks = luks.ok
    return capabilities


def chain(
    capabilities: Capabilities, requested: str = "auto"
) -> tuple[list[Step], list[str]]:
    """Return the steps to try in order, and plan notes that explain the choice.

    ``requested`` is "auto", "firmware", "luks-erase", "overwrite" or "discard".
    blkdiscard is never chosen automatically because a discard may leave data.
    """
    notes = list(capabilities.notes)
    steps: list[Step] = []
    if requested in ("auto", "firmware"):
        steps += _nvme_steps(capabilities.nvme, notes) + _ata_steps(
            capabilities.ata, notes
        )
    if requested in ("auto", "luks-erase") and capabilities.luks:
        steps.append(LUKS_ERASE)
    elif requested == "luks-erase":
        notes.append("the device has no LUKS header, so luks-erase is not possible")
    if requested in ("auto", "firmware", "overwrite", "luks-erase"):
        steps.append(OVERWRITE)
    if requested == "discard":
        steps.append(DISCARD)
    return steps, notes


def _nvme_steps(nvme: NvmeCapabilities | None, notes: list[str]) -> list[Step]:
    if nvme is None:
        return []
    steps = []
    whole = (
        "sanitize acts on the whole NVM subsystem: every namespace of the controller"
    )
    for action, label in (("crypto", "crypto erase"), ("block", "block erase")):
        if action in nvme.sanitize:
            steps.append(
                Step(
                    f"nvme-sanitize-{action}",
                    Method.PURGE_FIRMWARE,
                    f"NVMe sanitize, {label}",
                    (whole,),
                )
            )
    if nvme.format_supported:
        scope = "all namespaces" if nvme.format_all_namespaces else "this namespace"
        if nvme.format_crypto:
            steps.append(
                Step(
                    "nvme-format-crypto",
                    Method.PURGE_FIRMWARE,
                    f"NVMe format, cryptographic erase of {scope}",
                )
            )
        steps.append(
            Step(
                "nvme-format-erase",
                Method.PURGE_FIRMWARE,
                f"NVMe format, user data erase of {scope}",
            )
        )
    if "overwrite" in nvme.sanitize:
        steps.append(
            Step(
                "nvme-sanitize-overwrite",
                Method.PURGE_FIRMWARE,
                "NVMe sanitize, overwrite",
                (whole,),
            )
        )
    if not steps:
        notes.append("the NVMe controller reports neither sanitize nor format support")
    return steps


def _ata_steps(ata: AtaCapabilities | None, notes: list[str]) -> list[Step]:
    if ata is None:
        return []
    steps = []
    for action, label in (("crypto", "crypto scramble"), ("block", "block erase")):
        if action in ata.sanitize:
            steps.append(
                Step(
                    f"ata-sanitize-{action}",
                    Method.PURGE_FIRMWARE,
                    f"ATA sanitize, {label}",
                )
            )
    security = ata.security
    if security and security.supported:
        if security.frozen:
            notes.append(
                "ATA security is frozen (the BIOS froze it at boot), so security erase is "
                "skipped; suspend and resume the machine or hot-plug the drive to unfreeze it"
            )
        elif security.enabled or security.locked:
            notes.append(
                "ATA security is enabled with a password Lethe does not know, so security "
                "erase is skipped; disable the password with hdparm --security-disable first"
            )
        elif security.expired:
            notes.append(
                "the ATA security attempt counter expired; power-cycle the drive"
            )
        else:
            password = (
                "Lethe sets a temporary user password, which the erase itself clears; "
                "if the erase is interrupted, the drive stays locked with the password 'lethe'"
            )
            if security.enhanced_erase:
                steps.append(
                    Step(
                        "ata-security-erase-enhanced",
                        Method.PURGE_FIRMWARE,
                        "ATA enhanced security erase",
                        (password,),
                    )
                )
            steps.append(
                Step(
                    "ata-security-erase",
                    Method.PURGE_FIRMWARE,
                    "ATA security erase",
                    (password,),
                )
            )
    if "overwrite" in ata.sanitize:
        steps.append(
            Step(
                "ata-sanitize-overwrite",
                Method.PURGE_FIRMWARE,
                "ATA sanitize, overwrite",
            )
        )
    if not steps:
        notes.append("the ATA device offers no usable sanitize or security erase")
    return steps


# ---------------------------------------------------------------- execution


class StepFailed(Exception):
    """A firmware step failed; the chain moves on to the next step."""


NVME_SANACT = {"crypto": "4", "block": "2", "overwrite": "3"}
ATA_SANITIZE = {
    "crypto": ["--sanitize-crypto-scramble"],
    "block": ["--sanitize-block-erase"],
    "overwrite": ["--sanitize-overwrite", "hex:00000000"],
}
TEMPORARY_PASSWORD = "lethe"


def run_step(
    step: Step,
    device: str,
    runner: Runner,
    poll_interval: float = 5.0,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Run one firmware or LUKS step to completion; return what the tool reported.

    Raises StepFailed with the tool's message when the step did not complete.
    """
    name = step.name
    if name.startswith("nvme-sanitize-"):
        action = name.rsplit("-", 1)[1]
        _check(
            runner(["nvme", "sanitize", device, f"--sanact={NVME_SANACT[action]}"]),
            name,
        )
        return _wait_nvme_sanitize(device, runner, poll_interval, sleep)
    if name.startswith("nvme-format-"):
        ses = "2" if name.endswith("crypto") else "1"
        return _check(
            runner(["nvme", "format", device, f"--ses={ses}", "--force"]), name
        )
    if name.startswith("ata-sanitize-"):
        action = name.rsplit("-", 1)[1]
        _check(
            runner(
                [
                    "hdparm",
                    "--yes-i-know-what-i-am-doing",
                    *ATA_SANITIZE[action],
                    device,
                ]
            ),
            name,
        )
        return _wait_ata_sanitize(device, runner, poll_interval, sleep)
    if name.startswith("ata-security-erase"):
        erase = (
            "--security-erase-enhanced"
            if name.endswith("enhanced")
            else "--security-erase"
        )
        _check(
            runner(
                [
                    "hdparm",
                    "--user-master",
                    "u",
                    "--security-set-pass",
                    TEMPORARY_PASSWORD,
                    device,
                ]
            ),
            name,
        )
        return _check(
            runner(["hdparm", "--user-master", "u", erase, TEMPORARY_PASSWORD, device]),
            name,
        )
    if name == "luks-erase":
        return _check(runner(["cryptsetup", "erase", "--batch-mode", device]), name)
    if name == "blkdiscard":
        return _check(runner(["blkdiscard", "--force", device]), name)
    raise StepFailed(f"unknown step {name}")


def _check(output: ToolOutput, name: str) -> str:
    if not output.ok:
        raise StepFailed(f"{name} failed: {output.message()}")
    return output.stdout.strip()


def _wait_nvme_sanitize(
    device: str, runner: Runner, interval: float, sleep: Callable[[float], None]
) -> str:
    while True:
        output = runner(["nvme", "sanitize-log", device, "-o", "json"])
        if not output.ok:
            raise StepFailed(f"nvme sanitize-log failed: {output.message()}")
        try:
            state = parse_sanitize_log(output.stdout)
        except (ValueError, KeyError, TypeError) as error:
            raise StepFailed(
                f"nvme sanitize-log output not recognised: {error}"
            ) from error
        if state.status != 2:
            if not state.succeeded:
                raise StepFailed(f"NVMe sanitize {state.text}")
            return f"sanitize log: {state.text}"
        sleep(interval)


def _wait_ata_sanitize(
    device: str, runner: Runner, interval: float, sleep: Callable[[float], None]
) -> str:
    while True:
        output = runner(["hdparm", "--sanitize-status", device])
        if not output.ok:
            raise StepFailed(f"hdparm --sanitize-status failed: {output.message()}")
        state = parse_ata_sanitize_status(output.stdout)
        if state == "in progress":
            sleep(interval)
            continue
        if state == "succeeded":
            return "sanitize status: SD4 Sanitize Operation succeeded"
        raise StepFailed(f"ATA sanitize {state}")


def parse_ata_sanitize_status(text: str) -> str:
    """Parse ``hdparm --sanitize-status``: its state names run SD0 to SD4."""
    if "SD2" in text:
        return "in progress"
    if "SD4" in text or "Completed Without Error" in text:
        return "succeeded"
    if "SD1" in text:
        return "frozen"
    if "SD3" in text:
        return "failed"
    return "status not recognised"
