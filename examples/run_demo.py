"""Enqueue a few tasks, run a consumer for them, print the results, stop the consumer.

Run it from the repository root once minique is installed (see README.md):

    .venv/bin/python examples/run_demo.py

It starts ``python -m minique consume app.tasks -w 4`` in ``examples/`` so that
you see the consumer's banner and one log line per task, then stops it with
SIGTERM. Each run starts from a fresh database.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def fresh_database(path: Path) -> None:
    """Delete the database of an earlier run, with its WAL files."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def main() -> int:
    try:
        import minique  # noqa: F401
    except ImportError:
        print("minique is not installed in this Python; run the first command of README.md",
              file=sys.stderr)
        return 1
    sys.path.insert(0, str(HERE))
    from app import tasks

    fresh_database(tasks.DATABASE)

    print(f"enqueueing into {tasks.DATABASE}", flush=True)
    results = {
        "add(2, 3)": tasks.add(2, 3),
        "fetch_price('ACME')": tasks.fetch_price("ACME"),
        "send_reminder(...) in 2 s": tasks.send_reminder.schedule(
            args=("water the plants",), delay=2),
    }
    for label, result in zip(["add.map: 1+1", "add.map: 2+2", "add.map: 3+3"],
                             tasks.add.map([(1, 1), (2, 2), (3, 3)]), strict=True):
        results[label] = result
    print(f"queue before the consumer starts: {tasks.mq.counts()}", flush=True)

    print("starting: python -m minique consume app.tasks -w 4  (in examples/)", flush=True)
    consumer = subprocess.Popen(
        [sys.executable, "-m", "minique", "consume", "app.tasks", "-w", "4"],
        cwd=HERE, stdin=subprocess.DEVNULL)
    try:
        for label, result in results.items():
            value = result.get(timeout=30)
            print(f"  {label:<28} -> {value!r}  ({result.status}, "
                  f"{result.record.attempts} attempt(s))", flush=True)
        print(f"queue after: {tasks.mq.counts()}", flush=True)
    finally:
        print("sending SIGTERM to the consumer", flush=True)
        consumer.send_signal(signal.SIGTERM)
        try:
            code = consumer.wait(timeout=60)
        except subprocess.TimeoutExpired:
            consumer.kill()
            code = consumer.wait()
    print(f"consumer exited with status {code}", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
