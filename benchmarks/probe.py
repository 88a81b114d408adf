"""The producer side of a benchmark, in a process of its own.

``python -m benchmarks.probe SYSTEM ACTION [ARGS...]`` with ``BENCH_DB`` and
``BENCH_MODE`` set; prints one JSON line of figures on stdout. Actions that
run alongside others (``producer``, ``flood``) first print ``ready`` and wait
for a line on stdin, so that the harness starts them all at once.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from types import ModuleType
from typing import Any


def _app(system: str) -> ModuleType:
    if system not in ("minique", "huey", "procrastinate"):
        raise SystemExit(f"probe: unknown system {system!r}; use minique, huey or procrastinate")
    return importlib.import_module(f"benchmarks.{system}_app")


def _await_go() -> str:
    print("ready", flush=True)
    return sys.stdin.readline().strip()


def serial(app: ModuleType, n: int) -> dict[str, Any]:
    """``n`` calls one by one, timed after one untimed call that creates the tables."""
    app.enqueue_one(-1)
    start = time.perf_counter()
    for i in range(n):
        app.enqueue_one(i)
    return {"count": n, "seconds": time.perf_counter() - start}


def batch(app: ModuleType, n: int) -> dict[str, Any]:
    """One ``map`` of ``n`` calls (one transaction), timed after one untimed call."""
    app.enqueue_one(-1)
    start = time.perf_counter()
    app.enqueue_map(n)
    return {"count": n, "seconds": time.perf_counter() - start}


def fill(app: ModuleType, n: int) -> dict[str, Any]:
    """Queue ``n`` no-op tasks, the fastest way the system offers."""
    start = time.perf_counter()
    app.fill(n)
    return {"count": n, "seconds": time.perf_counter() - start}


def producer(app: ModuleType, n: int) -> dict[str, Any]:
    """One of several producer processes: ``n`` calls one by one, from the go signal."""
    app.enqueue_one(-1)
    _await_go()
    start = time.time()
    for i in range(n):
        app.enqueue_one(i)
    return {"count": n, "start": start, "end": time.time()}


def flood(app: ModuleType) -> dict[str, Any]:
    """Calls one by one from the go signal until the deadline it carries (epoch seconds)."""
    app.enqueue_one(-1)
    deadline = float(_await_go())
    start = time.time()
    count = 0
    while time.time() < deadline:
        app.enqueue_one(count)
        count += 1
    return {"count": count, "start": start, "end": time.time()}


def latency(app: ModuleType, n: int, interval: float) -> dict[str, Any]:
    """``n`` latency tasks, one every ``interval`` seconds, each told when it was enqueued."""
    start = time.time()
    for i in range(n):
        pause = start + i * interval - time.time()
        if pause > 0:
            time.sleep(pause)
        app.stamp(time.time())
    return {"count": n, "seconds": time.time() - start}


def hold(app: ModuleType) -> dict[str, Any]:
    """One task that says it started and then runs on until killed."""
    app.hold()
    return {"count": 1}


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: python -m benchmarks.probe SYSTEM ACTION [ARGS...]", file=sys.stderr)
        return 2
    system, action, *args = argv
    app = _app(system)
    if action == "serial":
        out = serial(app, int(args[0]))
    elif action == "map":
        out = batch(app, int(args[0]))
    elif action == "fill":
        out = fill(app, int(args[0]))
    elif action == "producer":
        out = producer(app, int(args[0]))
    elif action == "flood":
        out = flood(app)
    elif action == "latency":
        out = latency(app, int(args[0]), float(args[1]))
    elif action == "hold":
        out = hold(app)
    else:
        print(f"probe: unknown action {action!r}", file=sys.stderr)
        return 2
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
