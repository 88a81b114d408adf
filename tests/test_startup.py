"""What a process imports to start: only what it uses (issue 10, consumer start-up).

Each of these modules costs a consumer about a millisecond or more of its
start-up, and none is needed to enqueue, consume and read JSON calls; the
serializer imports pickle, decimal and uuid when a value needs them, and
``minique.Job`` is built on demand. The checks run in a fresh interpreter, so
what the test process has imported cannot hide an import.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import ROOT

#: Not imported by an application that enqueues, consumes and reads JSON calls.
NOT_AT_START = ("pickle", "uuid", "platform", "decimal", "shutil", "minique.job")


def run_python(code: str, cwd: Path) -> str:
    """Run ``code`` in a fresh interpreter; return what it prints."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_consumer_enqueues_runs_and_reads_a_call_without_the_modules_it_does_not_need(
        tmp_path: Path) -> None:
    # Made by another process, as a consumer finds it: making the schema of a
    # new database imports peewee, and peewee imports decimal and uuid.
    path = tmp_path / "q.db"
    run_python(f"from minique import Minique; Minique({str(path)!r}).jobs()", tmp_path)
    out = run_python(f"""
        import json, sys
        import minique.cli
        from minique import Minique

        mq = Minique({str(path)!r})

        @mq.task
        def add(a, b=1):
            return {{"sum": a + b, "items": (a, b), "raw": b"x"}}

        with mq.consumer() as consumer:
            value = add(1, b=2).get(timeout=30)
        assert value == {{"sum": 3, "items": (1, 2), "raw": b"x"}}, value
        print(json.dumps([name for name in {NOT_AT_START!r} if name in sys.modules]))
    """, tmp_path)
    assert json.loads(out) == []


def test_decimal_uuid_and_pickle_work_in_a_process_that_had_not_imported_them(
        tmp_path: Path) -> None:
    # The JSON stored by one process is read by another that never imported
    # decimal or uuid: decoding imports them; and the pickle queue imports pickle.
    stored = run_python("""
        from decimal import Decimal
        from uuid import UUID
        from minique.serializers import JSONSerializer

        print(JSONSerializer().dumps([Decimal("1.10"), UUID(int=7)]))
    """, tmp_path)
    out = run_python(f"""
        import sys
        from minique import Minique
        from minique.serializers import JSONSerializer, get_serializer

        assert "decimal" not in sys.modules and "uuid" not in sys.modules
        number, key = JSONSerializer().loads({stored.strip()!r})
        assert type(number).__module__ == "decimal" and str(number) == "1.10", number
        assert type(key).__module__ == "uuid" and key.int == 7, key
        # Now that they are imported, they are stored as before.
        assert JSONSerializer().dumps([number, key]) == {stored.strip()!r}

        assert "pickle" not in sys.modules
        mq = Minique({str(tmp_path / "p.db")!r}, serializer="pickle")
        pickled = get_serializer("pickle")
        assert pickled.loads(pickled.dumps({{1, 2}})) == {{1, 2}}
        print("ok")
    """, tmp_path)
    assert out.strip() == "ok"


def test_job_and_job_attempt_are_importable_from_minique_when_first_asked_for(
        tmp_path: Path) -> None:
    out = run_python("""
        import sys
        import minique

        assert "minique.job" not in sys.modules
        from minique import Job, JobAttempt
        from minique.job import Job as Defined

        assert Job is Defined and minique.JobAttempt is JobAttempt
        try:
            minique.NoSuchName
        except AttributeError as exc:
            print(exc)
    """, tmp_path)
    assert out.strip() == "module 'minique' has no attribute 'NoSuchName'"
