"""Many processes on one database at once: producers enqueueing while consumers drain.

Three producer processes each enqueue calls one by one and then a ``map``,
while three ``minique consume -w 4`` processes drain the same SQLite file.
Every call appends its argument to ``markers.txt`` when it runs, so the test
can count runs per call.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

from conftest import Proc, wait_for

from minique import Minique

APP = """
    import os

    from minique import Minique

    mq = Minique("queue.db")


    @mq.task(name="record")
    def record(producer, number):
        line = f"{producer}-{number} {os.getpid()}\\n"
        fd = os.open("markers.txt", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
"""

PRODUCER = """
    import sys

    from jobs import record

    producer, one_by_one, mapped = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    for number in range(one_by_one):
        record(producer, number)
    record.map([(producer, number) for number in range(one_by_one, one_by_one + mapped)])
    print("enqueued", one_by_one + mapped, flush=True)
"""

PRODUCERS = 3
ONE_BY_ONE = 300
MAPPED = 100


def runs(root: Path) -> Counter[str]:
    path = root / "markers.txt"
    if not path.exists():
        return Counter()
    return Counter(line.split()[0] for line in path.read_text().splitlines())


def test_concurrent_producers_and_consumers_run_every_task_exactly_once(
        app_dir: Callable[[str, str], Path], spawn: Callable[..., Proc], db_path: Path) -> None:
    # Given three consumer processes of four workers each on one database
    root = app_dir("jobs", APP)
    app_dir("produce", PRODUCER)
    consumers = [spawn("-m", "minique", "consume", "jobs", "-w", "4", "--no-periodic")
                 for _ in range(3)]
    wait_for(lambda: all("started on" in proc.output() for proc in consumers), timeout=15,
             what="every consumer's banner")

    # When three producer processes enqueue at the same time
    producers = [spawn("produce.py", f"p{n}", str(ONE_BY_ONE), str(MAPPED))
                 for n in range(PRODUCERS)]
    for proc in producers:
        assert proc.wait(30) == 0, proc.output()

    # Then every call runs exactly once and ends done
    total = PRODUCERS * (ONE_BY_ONE + MAPPED)
    mq = Minique(db_path)
    wait_for(lambda: mq.counts()["done"] == total, timeout=20,
             what=f"{total} tasks done (counts: {mq.counts()})")
    expected = Counter({f"p{n}-{i}": 1 for n in range(PRODUCERS)
                        for i in range(ONE_BY_ONE + MAPPED)})
    assert runs(root) == expected
    assert mq.counts() == {"queued": 0, "scheduled": 0, "running": 0, "done": total,
                           "failed": 0, "revoked": 0, "expired": 0}

    # And no process met a locked database or raised
    for proc in consumers + producers:
        output = proc.output()
        assert "locked" not in output, output
        assert "Traceback" not in output, output
        assert " ERROR " not in output, output
