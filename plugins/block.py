"""Whole block devices and partitions: firmware erase, LUKS crypto-erase, overwrite.

A target ``block:///dev/sdb`` selects one device. The target option
``devices`` adds more devices to the same target, and one purge batch
erases them in parallel, one thread per device. The plan picks a chain of
methods from the device's capabilities (NVMe sanitize or format, ATA
sanitize or security erase, LUKS key-slot erase, overwrite), and the purge
walks down the chain until one step succeeds. The result's facts name the
step that actually ran and every step that failed before it.

An overwrite saves a checkpoint in the job's checkpoint store: the pattern
of every pass, the pass in progress and the byte ranges of it already on
stable storage. After a crash or a stop request, the next purge of the
device continues from there, and verification of a device this process
did not overwrite regenerates the last pass's pattern from it.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any, ClassVar

import structlog

from plugins import _blockdev, _firmware
from plugins._overwrite import (
    CHECKPOINT_SECONDS,
    CHUNK,
    BufferPool,
    DeviceGone,
    Keystream,
    PassReport,
    Pattern,
    Ranges,
    ReadbackReport,
    Stopped,
    ZeroPattern,
    aligned_buffer,
    covered_bytes,
    iter_offsets,
    pattern_from_spec,
    pattern_spec,
    read_back,
    release,
    write_pass,
)
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
from plugins.errors import InvalidTarget, ItemChanged, PluginError
from plugins.scan import (
    WINDOW,
    FingerprintScanner,
    content_fingerprints,
    is_distinctive,
)

OPTIONS = {"devices", "method", "fail_fast", "checkpoint_seconds"}
REQUESTED_METHODS = ("auto", "firmware", "luks-erase", "overwrite", "discard")
#: Windows of device content sampled at planning time for the raw scan that
#: verifies firmware erase and discard.
FINGERPRINT_SAMPLES = 32
FINGERPRINT_READ = 64 * 1024
#: Version of the overwrite checkpoint layout; a checkpoint of another
#: version is ignored and the overwrite starts again.
CHECKPOINT_VERSION = 1


@dataclass
class _Outcome:
    """State of one device's purge, kept in memory for its verification."""

    step: _firmware.Step
    pattern: Pattern | None = None
    passes: list[dict[str, Any]] = field(default_factory=list)
    #: True when the overwrite ran in another process and this outcome was
    #: rebuilt from the job's checkpoint.
    resumed: bool = False


class BlockPlugin(Plugin):
    """Destroy whole block devices with the strongest method each one supports."""

    name = "block"
    schemes = ("block",)
    methods = (Method.PURGE_FIRMWARE, Method.PURGE_CRYPTO, Method.CLEAR_OVERWRITE)
    batch_size = 8
    #: Runs nvme, hdparm, cryptsetup and blkdiscard; tests replace it with a
    #: replay of recorded outputs for hardware the test machine lacks.
    runner: ClassVar[_firmware.Runner] = staticmethod(_firmware.run_tool)

    def __init__(self, target: Target, context: JobContext) -> None:
        super().__init__(target, context)
        parts = target.parts
        if parts.scheme != "block" or parts.netloc or not parts.path.startswith("/"):
            raise InvalidTarget(
                f"invalid block target {target.url!r}: expected block:///dev/NAME"
            )
        unknown = set(target.options) - OPTIONS
        if unknown:
            raise InvalidTarget(
                f"unknown option(s) for {target.url}: {', '.join(sorted(unknown))}; "
                f"expected one of {', '.join(sorted(OPTIONS))}"
            )
        extra = target.options.get("devices", [])
        if not isinstance(extra, list) or not all(
            isinstance(path, str) and path.startswith("/") for path in extra
        ):
            raise InvalidTarget(
                f"option 'devices' of {target.url} must be a list of absolute device paths"
            )
        self.paths = list(dict.fromkeys([parts.path, *extra]))
        self.requested = str(target.options.get("method", "auto"))
        if self.requested not in REQUESTED_METHODS:
            raise InvalidTarget(
                f"invalid method {self.requested!r} for {target.url}; "
                f"expected one of {', '.join(REQUESTED_METHODS)}"
            )
        self.checkpoint_seconds = _checkpoint_seconds(target)
        self._log = structlog.get_logger(__name__).bind(
            plugin=self.name, target=target.url
        )
        self._outcomes: dict[str, _Outcome] = {}
        self._progress_lock = threading.Lock()
        self._buffers = BufferPool()

    # ------------------------------------------------------------ planning

    def describe(self) -> TargetInfo:
        devices = [_blockdev.inspect_device(path) for path in self.paths]
        media = [
            {
                "media_type": "block device",
                "device": info.path,
                "kernel_name": info.name,
                "kind": info.kind,
                "model": info.model,
                "serial": info.serial,
                "size": info.size,
                "rotational": info.rotational,
            }
            for info in devices
        ]
        residual = []
        if any(info.rotational is not True for info in devices):
            residual.append(
                "on flash storage an overwrite cannot reach remapped or over-provisioned "
                "blocks; only firmware sanitize or crypto-erase covers them"
            )
        return TargetInfo(
            media=media[0]
            if len(media) == 1
            else {"media_type": "block devices", "devices": media},
            notes=(
                f"{len(devices)} device(s), erased in parallel, one worker per device",
            ),
            residual=tuple(residual),
        )

    def discover(self) -> Iterator[Item]:
        for path in self.paths:
            info = _blockdev.inspect_device(path)
            yield Item(
                key=path,
                kind="partition" if info.is_partition else "block-device",
                size=info.size,
                identity=info.identity(),
                attributes={
                    "kind": info.kind,
                    "model": info.model,
                    "serial": info.serial,
                    "logical_block_size": info.logical_block_size,
                    "partitions": list(info.partitions),
                    "read_only": info.read_only,
                },
                label=f"{path} ({info.kind}, {info.size} bytes)",
            )

    def plan_item(self, item: Item) -> Decision:
        info = self._current(item)
        refusals = _blockdev.refusals(info)
        if refusals:
            for refusal in refusals:
                self._log.warning(
                    "device.refused",
                    device=item.key,
                    reason=refusal.reason,
                    detail=refusal.detail,
                )
            return Decision(
                refusal=refusals[0], residual=tuple(r.detail for r in refusals[1:])
            )
        capabilities = _firmware.detect(info.path, info.kind, self.runner)
        steps, notes = _firmware.chain(capabilities, self.requested)
        residual = list(notes)
        for step in steps:
            residual.extend(step.notes)
        hidden = capabilities.hidden
        residual.append(
            f"hidden areas: HPA {hidden.hpa}, DCO {hidden.dco} ({hidden.detail})"
        )
        if info.read_only:
            residual.append(
                f"{info.path} is read-only, so the purge will fail without writing"
            )
        params = {
            "chain": [step.name for step in steps],
            "hidden_areas": hidden.as_facts(),
            "passes": self._passes(),
            "final_zero": bool(self.context.settings.get("final_zero", False)),
            "readback": self._readback_fraction(),
        }
        return Decision(
            method=steps[0].method,
            residual=tuple(dict.fromkeys(residual)),
            fingerprints=tuple(self._plan_fingerprints(info, steps[0])),
            params=params,
        )

    def _current(self, item: Item) -> _blockdev.DeviceInfo:
        info = _blockdev.inspect_device(item.key)
        if info.identity() != dict(item.identity):
            raise ItemChanged(
                f"{item.key} is no longer the device the plan saw "
                f"(planned {dict(item.identity)}, now {info.identity()}); plan again"
            )
        return info

    def _plan_fingerprints(
        self, info: _blockdev.DeviceInfo, first: _firmware.Step
    ) -> list[bytes]:
        if first.name == "luks-erase":
            return _luks_keyslot_fingerprints(info.path, self.runner)
        if first.method is Method.CLEAR_OVERWRITE and first.name == "overwrite":
            # The read-back against the regenerated pattern checks every byte.
            return []
        return _sample_fingerprints(info)

    def _passes(self) -> int:
        passes = self.context.settings.get("passes", 1)
        if not isinstance(passes, int) or not 1 <= passes <= 35:
            raise InvalidTarget(
                f"setting 'passes' must be an integer from 1 to 35, not {passes!r}"
            )
        return passes

    def _readback_fraction(self) -> float:
        value = self.context.settings.get("readback", "full")
        if value in ("full", None):
            return 1.0
        try:
            fraction = float(value)
        except (TypeError, ValueError) as error:
            raise InvalidTarget(
                f"setting 'readback' must be 'full' or a fraction, not {value!r}"
            ) from error
        if not 0 < fraction <= 1:
            raise InvalidTarget(
                f"setting 'readback' must lie in (0, 1], not {fraction}"
            )
        return fraction

    def _fail_fast(self) -> bool:
        return bool(
            self.target.options.get(
                "fail_fast", self.context.settings.get("fail_fast", False)
            )
        )

    # ------------------------------------------------------------ purge

    def purge(self, batch: Sequence[PlannedItem]) -> Iterator[PurgeResult]:
        permitted = [planned for planned in batch if planned.decision.permitted]
        if self.context.dry_run:
            for planned in permitted:
                yield PurgeResult(
                    planned.item.key,
                    "blocked",
                    detail=f"dry run: would erase {planned.item.key}",
                    refusal=Refusal("dry-run", "a dry run writes nothing"),
                )
            return
        if not permitted:
            return
        with ThreadPoolExecutor(
            len(permitted), thread_name_prefix="lethe-block"
        ) as pool:
            futures = [pool.submit(self._purge_one, planned) for planned in permitted]
            for future in as_completed(futures):
                result = future.result()
                # None: a stop request ended the overwrite after it saved a
                # checkpoint, and the next purge continues from there.
                if result is not None:
                    yield result

    def verify_read_bytes(self, size: int) -> int:
        return math.ceil(size * self._readback_fraction())

    def _progress(self, done: int) -> None:
        with self._progress_lock:
            self.context.progress(done)

    def _pass_progress(self, passes: int) -> Callable[[int], None]:
        """Return a progress callback that counts ``passes`` passes as one device size.

        The job's byte total counts each device once, so the bytes of every
        pass are divided by the number of passes.
        """
        state = {"bytes": 0, "reported": 0}

        def advance(done: int) -> None:
            with self._progress_lock:
                state["bytes"] += done
                share = state["bytes"] // passes - state["reported"]
                state["reported"] += share
            if share:
                self._progress(share)

        return advance

    def _purge_one(self, planned: PlannedItem) -> PurgeResult | None:
        key = planned.item.key
        log = self._log.bind(device=key)
        started = time.time()
        try:
            info = self._current(planned.item)
            refusals = _blockdev.refusals(info)
            if refusals:
                raise _Failure(
                    f"{key} came into use after planning: {refusals[0].detail}; nothing was written"
                )
            if info.read_only:
                raise _Failure(
                    f"{key} is read-only (losetup -r, a write-protect switch or the ro flag "
                    "in sysfs); nothing was written. Make it writable and plan again"
                )
            return self._run_chain(planned, info, log, started)
        except _Suspended as suspended:
            log.info("device.suspended", detail=str(suspended))
            return None
        except _Failure as failure:
            log.error("device.failed", error=str(failure))
            return PurgeResult(key, "failed", detail=str(failure), facts=failure.facts)
        except PluginError as error:
            log.error("device.failed", error=str(error))
            return PurgeResult(key, "failed", detail=str(error))
        except OSError as error:
            log.debug("device.os_error", exc_info=True)
            detail = f"{key}: {os.strerror(error.errno or 0)}; the device may be partly overwritten"
            log.error("device.failed", error=detail)
            return PurgeResult(key, "failed", detail=detail)
        except Exception as error:
            log.debug("device.unexpected_error", exc_info=True)
            detail = f"{key}: unexpected {type(error).__name__}: {error}; the device may be partly overwritten"
            log.error("device.failed", error=detail)
            return PurgeResult(key, "failed", detail=detail)

    def _run_chain(
        self, planned: PlannedItem, info: _blockdev.DeviceInfo, log: Any, started: float
    ) -> PurgeResult:
        steps = _steps_by_name(planned.decision.params.get("chain", ["overwrite"]))
        attempts: list[dict[str, str]] = []
        facts: dict[str, Any] = {
            "hidden_areas": planned.decision.params.get("hidden_areas", {}),
            "attempts": attempts,
            "worker": threading.current_thread().name,
            "started": started,
        }
        for step in steps:
            log.info("step.start", step=step.name)
            if step.name == "overwrite":
                outcome = self._overwrite(info, planned, facts)
            else:
                try:
                    output = _firmware.run_step(step, info.path, self.runner)
                except _firmware.StepFailed as error:
                    attempts.append({"step": step.name, "error": str(error)})
                    log.warning("step.failed", step=step.name, error=str(error))
                    continue
                facts["tool_output"] = output[-500:]
                outcome = _Outcome(step)
            self._outcomes[info.path] = outcome
            facts.update(
                method_used=step.name,
                method_description=step.description,
                finished=time.time(),
            )
            log.info("device.purged", step=step.name, bytes=info.size)
            return PurgeResult(
                info.path, "purged", bytes=info.size, method=step.method, facts=facts
            )
        raise _Failure(
            f"{info.path}: every method in the chain failed; the device may be unchanged",
            facts,
        )

    def _overwrite(
        self, info: _blockdev.DeviceInfo, planned: PlannedItem, facts: dict[str, Any]
    ) -> _Outcome:
        key = planned.item.key
        checkpoint = self._start_checkpoint(info, planned)
        patterns = [pattern_from_spec(spec) for spec in checkpoint["passes"]]
        outcome = _Outcome(_firmware.OVERWRITE)
        outcome.passes.extend(checkpoint["reports"])
        facts["passes"] = outcome.passes
        if checkpoint["pass"] or checkpoint["written"]:
            facts["resumed_at"] = {
                "pass": checkpoint["pass"] + 1,
                "bytes_already_written": covered_bytes(checkpoint["written"]),
            }
            self._log.info("overwrite.resumed", device=key, **facts["resumed_at"])

        def present() -> bool:
            return _blockdev.present_size(info) == info.size

        progress = self._pass_progress(len(patterns))
        # Passes finished before an interruption, and the written part of the
        # pass in progress, count as done so the bar ends at the device size.
        progress(checkpoint["pass"] * info.size + covered_bytes(checkpoint["written"]))
        for index in range(checkpoint["pass"], len(patterns)):
            number = index + 1
            if self.context.should_stop():
                raise _Suspended(
                    f"{info.path}: stopped before pass {number}; the checkpoint lets a resume continue"
                )
            if not present():
                raise _Failure(
                    f"{info.path} disappeared or shrank before pass {number}; the device is partly overwritten",
                    facts,
                )
            report = self._write_one_pass(
                key, info, patterns[index], number, checkpoint, present, facts, progress
            )
            outcome.passes.append(_pass_facts(number, report))
            self._log.info("pass.finished", device=key, **outcome.passes[-1])
            if report.failed_sectors:
                raise _Failure(
                    f"{info.path}: pass {number} could not write {report.failed_sectors} sector(s) of "
                    f"{info.logical_block_size} bytes, at "
                    f"{', '.join(iter_offsets(report.failed_offsets[:10], report.failed_sectors))}; "
                    "those sectors may still hold data",
                    facts,
                )
            if report.flush_error:
                raise _Failure(
                    f"{info.path}: fdatasync after pass {number} failed: {report.flush_error}",
                    facts,
                )
            checkpoint = {
                **checkpoint,
                "pass": number,
                "written": [],
                "reports": list(outcome.passes),
            }
            self.context.checkpoints.save(key, checkpoint)
        outcome.pattern = patterns[-1]
        return outcome

    def _write_one_pass(
        self,
        key: str,
        info: _blockdev.DeviceInfo,
        pattern: Pattern,
        number: int,
        checkpoint: Mapping[str, Any],
        present: Callable[[], bool],
        facts: dict[str, Any],
        progress: Callable[[int], None],
    ) -> PassReport:
        """Run pass ``number``, continuing from the ranges the checkpoint lists."""

        def save(ranges: Ranges) -> None:
            self.context.checkpoints.save(
                key, {**checkpoint, "pass": number - 1, "written": ranges}
            )

        descriptor = _open_device(info.path, os.O_WRONLY)
        try:
            return write_pass(
                descriptor,
                info.size,
                pattern,
                info.logical_block_size,
                progress,
                self.context.should_stop,
                present,
                written=checkpoint["written"],
                save=save,
                buffers=self._buffers,
                checkpoint_seconds=self.checkpoint_seconds,
            )
        except DeviceGone as error:
            raise _Failure(
                f"{info.path} disappeared or shrank during pass {number} ({os.strerror(error.errno or 0)}); "
                "the device is partly overwritten and was not verified",
                facts,
            ) from error
        except Stopped as stop:
            raise _Suspended(
                f"{info.path}: stopped during pass {number} at offset {stop.args[0]}; "
                "the checkpoint lets a resume continue the pass"
            ) from stop
        finally:
            os.close(descriptor)

    def _start_checkpoint(
        self, info: _blockdev.DeviceInfo, planned: PlannedItem
    ) -> dict[str, Any]:
        """Load the device's unfinished overwrite, or save a new one with fresh patterns.

        The checkpoint is saved before the first write, so every byte a
        pass writes comes from a pattern that a resumed job can regenerate.
        A finished overwrite is never continued: the engine purges an item
        again only when verification could not confirm it.
        """
        params = planned.decision.params
        names = ["random"] * int(params.get("passes", 1))
        if params.get("final_zero"):
            names.append("zero")
        saved = self.context.checkpoints.load(planned.item.key)
        if saved is not None and _resumable(saved, info, names):
            return dict(saved)
        patterns: list[Pattern] = [
            Keystream() if name == "random" else ZeroPattern() for name in names
        ]
        checkpoint = {
            "version": CHECKPOINT_VERSION,
            "identity": info.identity(),
            "passes": [pattern_spec(pattern) for pattern in patterns],
            "pass": 0,
            "written": [],
            "reports": [],
        }
        self.context.checkpoints.save(planned.item.key, checkpoint)
        return checkpoint

    # ------------------------------------------------------------ verify

    def verify(self, batch: Sequence[PlannedItem]) -> Iterator[Evidence]:
        if not batch:
            return
        with ThreadPoolExecutor(
            len(batch), thread_name_prefix="lethe-block-verify"
        ) as pool:
            futures = [pool.submit(self._verify_one, planned) for planned in batch]
            for future in as_completed(futures):
                yield future.result()

    def _verify_one(self, planned: PlannedItem) -> Evidence:
        key = planned.item.key
        try:
            info = self._current(planned.item)
        except PluginError as error:
            return Evidence(key, (Check("device-present", False, str(error)),))
        outcome = self._outcomes.get(key) or self._saved_outcome(key, info)
        if isinstance(outcome, str):
            return Evidence(key, (Check("read-back", False, outcome),))
        checks = [Check("device-present", True, f"{key} has the planned identity")]
        try:
            if outcome.step.name == "overwrite":
                checks.append(self._check_readback(info, outcome))
            elif outcome.step.name == "luks-erase":
                checks.extend(self._check_luks(info, planned))
            else:
                checks.extend(self._check_firmware(info, outcome, planned))
        except _Failure as failure:
            checks.append(Check("read-back", False, str(failure)))
        except OSError as error:
            self._log.debug("verify.os_error", device=key, exc_info=True)
            checks.append(
                Check(
                    "read-back",
                    False,
                    f"{key}: {os.strerror(error.errno or 0)} during verification",
                )
            )
        evidence = Evidence(key, tuple(checks))
        if not evidence.verified:
            self._log.error(
                "device.unverified",
                device=key,
                checks=[c.name for c in checks if not c.passed],
            )
        return evidence

    def _saved_outcome(self, key: str, info: _blockdev.DeviceInfo) -> _Outcome | str:
        """Rebuild the outcome of an overwrite another process ran, or return why it cannot.

        The checkpoint of a finished overwrite contains the last pass's
        pattern, so a resumed job can read the device back against it.
        """
        saved = self.context.checkpoints.load(key)
        if saved is None:
            return (
                "no purge of this device ran in this process and the job has no "
                "checkpoint of one, so there is nothing to compare against; purge it again"
            )
        try:
            passes = saved["passes"]
            finished = int(saved["pass"])
            written = covered_bytes(saved["written"])
            pattern = pattern_from_spec(passes[-1])
        except (KeyError, TypeError, ValueError, IndexError) as error:
            return f"the job's checkpoint of this device is unreadable ({error}); purge it again"
        if saved.get("identity") != info.identity():
            return "the job's checkpoint belongs to another device at this path; purge it again"
        if finished < len(passes):
            return (
                f"the overwrite stopped in pass {finished + 1} of {len(passes)} with "
                f"{written} of {info.size} bytes of that pass written; "
                "resuming the job continues it from the checkpoint"
            )
        return _Outcome(
            _firmware.OVERWRITE, pattern, list(saved.get("reports", [])), resumed=True
        )

    def _check_readback(self, info: _blockdev.DeviceInfo, outcome: _Outcome) -> Check:
        assert outcome.pattern is not None
        fraction = self._readback_fraction()
        descriptor = _open_device(info.path, os.O_RDONLY)
        try:
            report = read_back(
                descriptor,
                info.size,
                outcome.pattern,
                info.logical_block_size,
                fraction,
                self._fail_fast(),
                self._progress,
                self.context.should_stop,
                buffers=self._buffers,
            )
        finally:
            os.close(descriptor)
        detail = _readback_detail(report, info)
        if outcome.resumed:
            detail += "; the pattern was regenerated from the job's checkpoint"
        return Check("read-back", report.passed and not report.stopped_early, detail)

    def _check_luks(
        self, info: _blockdev.DeviceInfo, planned: PlannedItem
    ) -> list[Check]:
        dump = self.runner(["cryptsetup", "luksDump", info.path])
        slots = _luks_keyslot_count(dump.stdout) if dump.ok else -1
        checks = [
            Check(
                "luks-key-slots",
                slots == 0,
                f"luksDump lists {slots} key slot(s)"
                if slots >= 0
                else f"luksDump failed: {dump.message()}",
            )
        ]
        checks.append(
            self._scan_check(info, planned, "keyslot-areas", limit=16 * 1024 * 1024)
        )
        return checks

    def _check_firmware(
        self, info: _blockdev.DeviceInfo, outcome: _Outcome, planned: PlannedItem
    ) -> list[Check]:
        checks = []
        if outcome.step.name.startswith("nvme-sanitize"):
            output = self.runner(["nvme", "sanitize-log", info.path, "-o", "json"])
            try:
                state = (
                    _firmware.parse_sanitize_log(output.stdout) if output.ok else None
                )
            except (ValueError, KeyError, TypeError):
                state = None
            checks.append(
                Check(
                    "sanitize-log",
                    bool(state and state.succeeded),
                    state.text if state else output.message(),
                )
            )
        checks.append(self._scan_check(info, planned, "raw-scan"))
        return checks

    def _scan_check(
        self,
        info: _blockdev.DeviceInfo,
        planned: PlannedItem,
        name: str,
        limit: int | None = None,
    ) -> Check:
        fingerprints = planned.decision.fingerprints
        if not fingerprints:
            return Check(
                name,
                False,
                "scan not run: no fingerprints from planning (resumed job or empty device)",
            )
        scanner = FingerprintScanner()
        scanner.add_all(info.path, fingerprints)
        read = min(limit or info.size, info.size)
        hits = list(scanner.scan_chunks(_read_direct(info.path, read)))
        if hits:
            offsets = ", ".join(f"0x{hit.offset:x}" for hit in hits[:10])
            return Check(
                name,
                False,
                f"{len(hits)} of the planned fingerprints still on the device, at {offsets}",
            )
        return Check(
            name,
            True,
            f"none of {len(fingerprints)} fingerprints found in {read} bytes read with O_DIRECT",
        )

    def close(self) -> None:
        self._outcomes.clear()
        self._buffers.close()


class _Suspended(Exception):
    """A stop request ended an overwrite after its checkpoint was saved."""


class _Failure(Exception):
    """Failure of one device; the message states what state the device was left in."""

    def __init__(self, message: str, facts: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.facts = dict(facts or {})


def _checkpoint_seconds(target: Target) -> float:
    value = target.options.get("checkpoint_seconds", CHECKPOINT_SECONDS)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise InvalidTarget(
            f"option 'checkpoint_seconds' of {target.url} must be a number of "
            f"seconds, 0 or more, not {value!r}"
        )
    return float(value)


def _pass_facts(number: int, report: PassReport) -> dict[str, Any]:
    return {
        "pass": number,
        "pattern": report.pattern,
        "bytes": report.bytes_written,
        "bytes_already_written": report.bytes_resumed,
        "failed_sectors": report.failed_sectors,
        "failed_offsets": list(
            iter_offsets(report.failed_offsets, report.failed_sectors)
        ),
        "flush_error": report.flush_error,
        "seconds": round(report.seconds, 3),
    }


def _resumable(
    saved: Mapping[str, Any], info: _blockdev.DeviceInfo, names: Sequence[str]
) -> bool:
    """Tell whether a saved overwrite belongs to this device and plan and is unfinished."""
    try:
        passes = saved["passes"]
        return (
            saved.get("version") == CHECKPOINT_VERSION
            and saved.get("identity") == info.identity()
            and [spec["pattern"] for spec in passes] == list(names)
            and 0 <= int(saved["pass"]) < len(passes)
            and all(end <= info.size for _, end in saved["written"])
        )
    except (KeyError, TypeError, ValueError):
        return False


def _steps_by_name(names: Sequence[str]) -> list[_firmware.Step]:
    known = {
        step.name: step
        for step in (_firmware.OVERWRITE, _firmware.LUKS_ERASE, _firmware.DISCARD)
    }
    steps = []
    for name in names:
        if name in known:
            steps.append(known[name])
        else:
            steps.append(_firmware.Step(name, Method.PURGE_FIRMWARE, name))
    return steps


def _open_device(path: str, mode: int) -> int:
    """Open a device with O_DIRECT and O_EXCL, so nothing mounts it mid-pass."""
    try:
        return os.open(path, mode | os.O_DIRECT | os.O_EXCL | os.O_CLOEXEC)
    except OSError as error:
        if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise _Failure(
                f"{path} is read-only or not writable ({os.strerror(error.errno)}); nothing was written"
            ) from error
        if error.errno == errno.EBUSY:
            raise _Failure(
                f"{path} is in use (exclusive open failed); nothing was written"
            ) from error
        if error.errno in (errno.ENOENT, errno.ENXIO, errno.ENODEV):
            raise _Failure(
                f"{path} disappeared ({os.strerror(error.errno)})"
            ) from error
        raise


def _readback_detail(report: ReadbackReport, info: _blockdev.DeviceInfo) -> str:
    scope = (
        f"full read-back of {report.bytes_read} bytes"
        if report.fraction >= 1
        else f"sampled read-back of {report.fraction:.2%} of the device ({report.bytes_read} bytes, seed {report.seed})"
    )
    if report.passed:
        return f"{scope} matched the last pass ({report.pattern})"
    bad = report.mismatched_sectors + report.unreadable_sectors
    offsets = ", ".join(iter_offsets(report.mismatched_offsets[:10], bad))
    stop = "; stopped at the first mismatch" if report.stopped_early else ""
    return (
        f"{scope}: {report.mismatched_sectors} mismatched and {report.unreadable_sectors} unreadable "
        f"sector(s) of {info.logical_block_size} bytes, at {offsets}{stop}"
    )


def _sample_fingerprints(info: _blockdev.DeviceInfo) -> list[bytes]:
    """Take distinctive windows from reads spread over the device.

    Each read keeps its first two distinctive windows, wherever they sit,
    because disks are mostly zeros or repeated patterns around the data.
    """
    picked: list[bytes] = []
    if info.size == 0:
        return picked
    step = max(info.size // FINGERPRINT_SAMPLES, FINGERPRINT_READ)
    try:
        with open(info.path, "rb", buffering=0) as device:
            for offset in range(0, info.size, step):
                device.seek(offset)
                picked.extend(
                    _distinctive_windows(device.read(FINGERPRINT_READ), picked)
                )
    except OSError:
        return picked
    return picked


def _distinctive_windows(data: bytes, seen: list[bytes], count: int = 2) -> list[bytes]:
    found: list[bytes] = []
    for start in range(0, len(data) - WINDOW + 1, WINDOW):
        window = data[start : start + WINDOW]
        if is_distinctive(window) and window not in seen and window not in found:
            found.append(window)
            if len(found) >= count:
                break
    return found


def _luks_keyslot_fingerprints(path: str, runner: _firmware.Runner) -> list[bytes]:
    """Take windows of the LUKS2 key-slot areas, whose bytes the erase must wipe."""
    output = runner(["cryptsetup", "luksDump", "--dump-json-metadata", path])
    if not output.ok:
        return []
    try:
        metadata = json.loads(output.stdout)
        areas = [
            (int(slot["area"]["offset"]), int(slot["area"]["size"]))
            for slot in metadata.get("keyslots", {}).values()
        ]
    except (ValueError, KeyError, TypeError):
        return []
    picked: list[bytes] = []
    with open(path, "rb", buffering=0) as device:
        for offset, size in areas:
            device.seek(offset)
            picked.extend(
                content_fingerprints(device.read(min(size, 256 * 1024)), count=8)
            )
    return picked


def _luks_keyslot_count(dump: str) -> int:
    """Count key slots in ``cryptsetup luksDump`` text (LUKS2 or LUKS1).

    LUKS2 lists each slot as an indented ``N: luks2`` line under
    ``Keyslots:``; LUKS1 prints ``Key Slot N: ENABLED`` for each used slot.
    """
    if "Keyslots:" not in dump:
        return dump.count(": ENABLED")
    section = dump.split("Keyslots:", 1)[1].split("Tokens:", 1)[0]
    slot_line = re.compile(r"^\s+\d+: luks2\b")
    return sum(1 for line in section.splitlines() if slot_line.match(line))


def _read_direct(path: str, length: int) -> Iterator[bytes]:
    """Yield the first ``length`` bytes of a device, read with O_DIRECT."""
    buffer = aligned_buffer()
    view = memoryview(buffer)
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC)
    try:
        for offset in range(0, length, CHUNK):
            count = os.preadv(descriptor, [view[: min(CHUNK, length - offset)]], offset)
            if count <= 0:
                break
            yield bytes(view[:count])
    finally:
        os.close(descriptor)
        release(view, buffer)
