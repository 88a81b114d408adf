"""The rows of the table and their targets, as ratios against a peer in the same run.

Each row has a key that the scenarios fill with per-repeat figures for
``minique`` and its peer (``huey`` beside the SQLite store, ``procrastinate``
beside the PostgreSQL store, ``benchmarks/postgres.py``); the table shows
their medians, the ratio minique ÷ peer, the target, and whether it holds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from statistics import median

Figures = dict[str, dict[str, list[float]]]  # row key -> system -> one figure per repeat


@dataclass(frozen=True)
class Target:
    """A target for one row: its text, and a test of (minique, peer, all medians)."""

    text: str
    test: Callable[[float, float | None, dict[str, dict[str, float]]], bool | None]


def at_least_times(x: float) -> Target:
    def test(m: float, h: float | None, _: dict[str, dict[str, float]]) -> bool | None:
        return None if not h else m / h >= x
    return Target(f"≥ {x:g}×", test)


def at_most(x: float, unit: str) -> Target:
    return Target(f"≤ {x:g} {unit}", lambda m, h, _: m <= x)


def at_most_huey_plus(x: float, unit: str) -> Target:
    def test(m: float, h: float | None, _: dict[str, dict[str, float]]) -> bool | None:
        return None if h is None else m <= h + x
    return Target(f"≤ Huey + {x:g} {unit}", test)


def fraction_of(key: str, fraction: float, what: str) -> Target:
    def test(m: float, h: float | None, medians: dict[str, dict[str, float]]) -> bool | None:
        ref = medians.get(key, {}).get("minique")
        return None if ref is None else m >= fraction * ref
    return Target(f"≥ {fraction:.0%} of {what}", test)


EVERY_TIME = Target("every time", lambda m, h, _: m >= 1.0)


@dataclass(frozen=True)
class RowSpec:
    key: str
    label: str
    unit: str  # "/s", "ms", "%", "MiB", "tasks", "recovered"
    target: Target | None = None
    peer_from: str | None = None  # take the peer's column from another row


def row_specs(growth: tuple[int, ...]) -> list[RowSpec]:
    rows: list[RowSpec] = []
    for mode in ("durable", "fast"):
        durable = mode == "durable"
        rows += [
            RowSpec(f"enqueue.serial.{mode}", f"enqueue, 1 producer, one at a time ({mode})",
                    "/s", at_least_times(1.0)),
            RowSpec(f"enqueue.map.{mode}", f"enqueue with map vs Huey one at a time ({mode})",
                    "/s", at_least_times(10.0 if durable else 2.0),
                    peer_from=f"enqueue.serial.{mode}"),
            RowSpec(f"producers.{mode}", f"enqueue, 4 producer processes, total ({mode})",
                    "/s", at_least_times(1.0)),
            RowSpec(f"drain.w1.{mode}", f"drain, 1 worker ({mode})", "/s",
                    at_least_times(2.0 if durable else 2.5)),
            RowSpec(f"drain.w4.{mode}", f"drain, 4 workers ({mode})", "/s",
                    at_least_times(2.5 if durable else 3.0)),
            RowSpec(f"drain.w8.{mode}", f"drain, 8 workers ({mode})", "/s",
                    at_least_times(2.5 if durable else 3.0)),
        ]
    for polling, text in (("default", "Huey default polling"),
                          ("fastpoll", "Huey -d 0.001 -m 0.01")):
        rows += [
            RowSpec(f"latency.p50.{polling}", f"latency p50, idle consumer, {text}", "ms",
                    at_most(1.0, "ms")),
            RowSpec(f"latency.p99.{polling}", f"latency p99, idle consumer, {text}", "ms",
                    at_most(3.0, "ms")),
            RowSpec(f"latency.max.{polling}", f"latency max, idle consumer, {text}", "ms"),
            RowSpec(f"idle_cpu.{polling}", f"idle consumer CPU, {text}", "%",
                    at_most(0.5, "%")),
        ]
    for mode in ("durable", "fast"):
        rows.append(RowSpec(f"rss.w8.{mode}", f"consumer peak RSS, drain 8 workers ({mode})",
                            "MiB", at_most_huey_plus(10.0, "MiB")))
    smallest = min(growth)
    for n in growth:
        target = None
        if n >= 1_000_000:
            target = fraction_of(f"growth.drain.{smallest}", 0.8, f"{smallest:,} waiting")
        rows.append(RowSpec(f"growth.drain.{n}", f"drain rate, {n:,} waiting (fast)", "/s",
                            target))
    rows += [RowSpec(f"growth.enqueue.{n}", f"enqueue rate, {n:,} waiting (fast)", "/s")
             for n in growth]
    for mode in ("durable", "fast"):
        rows += [
            RowSpec(f"sustained.rate.{mode}", f"sustained, finished ({mode})", "/s"),
            RowSpec(f"sustained.backlog.{mode}", f"sustained, backlog at the end ({mode})",
                    "tasks"),
        ]
    rows.append(RowSpec("kill.recovered", "in-flight task after SIGKILL of the consumer",
                        "recovered", EVERY_TIME))
    return rows


@dataclass
class Row:
    key: str
    label: str
    unit: str
    minique: float | None
    peer: float | None
    ratio: float | None
    target: str
    holds: bool | None
    repeats: dict[str, list[float]]


def build_rows(specs: list[RowSpec], figures: Figures, peer: str = "huey") -> list[Row]:
    """Medians per row and system, the ratio minique ÷ ``peer``, and each target's verdict."""
    # A row of tries (recovered or not) shows the share of them; every other row the median.
    medians = {key: {system: _summary(key, values) for system, values in per.items() if values}
               for key, per in figures.items()}
    rows = []
    for spec in specs:
        per = medians.get(spec.key, {})
        if not per:
            continue
        m = per.get("minique")
        h = medians.get(spec.peer_from or spec.key, {}).get(peer)
        ratio = m / h if m is not None and h else None
        holds = None
        if spec.target is not None and m is not None:
            holds = spec.target.test(m, h, medians)
        repeats = dict(figures.get(spec.key, {}))
        rows.append(Row(spec.key, spec.label, spec.unit, m, h, ratio,
                        spec.target.text if spec.target else "—", holds, repeats))
    return rows


def _summary(key: str, values: list[float]) -> float:
    if key.startswith("kill."):
        return sum(values) / len(values)
    return median(values)
