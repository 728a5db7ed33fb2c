"""Progress columns: counts for items, sizes and throughput for bytes."""

from __future__ import annotations

from rich.progress import Progress

from agent.progress import AmountColumn, SpeedColumn

GIB = 1024**3


def _tasks():
    clock = [0.0]
    bars = Progress(get_time=lambda: clock[0])
    items = bars.add_task("purging items", total=40)
    size = bars.add_task("purging bytes", total=2 * GIB, unit="bytes")
    bars.advance(items, 10)
    # One GiB in two seconds, in two steps, gives rich a speed sample.
    for _ in range(2):
        clock[0] += 1.0
        bars.advance(size, GIB // 2)
    return bars.tasks[items], bars.tasks[size]


def test_amount_column_counts_items():
    items, _ = _tasks()
    assert AmountColumn().render(items).plain == "10/40"


def test_amount_column_shows_binary_sizes():
    _, size = _tasks()
    assert AmountColumn().render(size).plain == "1.0/2.0 GiB"


def test_speed_column_only_for_bytes():
    items, size = _tasks()
    assert SpeedColumn().render(items).plain == ""
    assert SpeedColumn().render(size).plain == "512.0 MiB/s"
