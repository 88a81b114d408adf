"""Moving a queue's waiting calls to another store, ids and all."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import pytest

from minique import Minique
from minique.moving import _as_new, move_waiting
from minique.store.selection import Selection


def declare(mq: Minique) -> None:
    @mq.task(name="add", retries=2)
    def add(a: int, b: int) -> int:
        return a + b


LOCATIONS: dict[int, str] = {}


@pytest.fixture(params=["sqlite", "postgres"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Minique:
    """The store calls move to: another SQLite file, or a PostgreSQL database."""
    location = str(tmp_path / "target.db") if request.param == "sqlite" \
        else request.getfixturevalue("pg_dsn")
    mq = Minique(location)
    LOCATIONS[id(mq)] = location  # a URL with its password, for the command line
    declare(mq)
    return mq


def test_waiting_calls_move_with_their_ids_and_finished_ones_stay(
        mq: Minique, target: Minique) -> None:
    # Given a SQLite queue with a finished call, queued calls, and one scheduled for tomorrow
    declare(mq)
    add = mq.tasks["add"]
    mq.immediate = True
    finished = add(0, 0)
    mq.immediate = False
    queued = [add(n, n) for n in range(5)]
    later = add.schedule((1, 1), eta=dt.datetime.now() + dt.timedelta(days=1), priority=3)

    # When its waiting calls are moved
    moved = move_waiting(mq.store, target.store, batch=2)

    # Then they wait in the target under the same ids; the source keeps only its history
    assert moved == 6
    assert [target.result(r.id).status for r in queued] == ["queued"] * 5
    job = target.job(later.id)
    assert (job.status, job.priority, job.args) == ("scheduled", 3, (1, 1))
    assert [r.status for r in queued] == ["revoked"] * 5
    assert finished.get() == 0
    with target.consumer(workers=2):
        assert [target.result(r.id).get(timeout=20) for r in queued] == [0, 2, 4, 6, 8]

    # ...and moving again moves nothing
    assert move_waiting(mq.store, target.store) == 0


def test_a_move_cut_short_can_run_again_without_copying_twice(
        mq: Minique, target: Minique) -> None:
    # Given calls already copied to the target by a move that stopped before revoking them
    declare(mq)
    calls = mq.tasks["add"].map([(n, 1) for n in range(4)])
    copied = mq.store.jobs(Selection(states=("queued",)), 2, time.time())
    target.store.enqueue([_as_new(job) for job in copied], time.time())

    # When the move runs again
    assert move_waiting(mq.store, target.store) == 4

    # Then each call is in the target once
    assert target.counts()["queued"] == 4
    assert sorted(target.result(r.id).status for r in calls) == ["queued"] * 4


def test_a_store_cannot_be_moved_onto_itself(mq: Minique) -> None:
    with pytest.raises(ValueError, match="same store"):
        move_waiting(mq.store, Minique(mq.path).store)  # type: ignore[arg-type]


def test_minique_move_moves_the_waiting_calls_of_a_file_to_another_store(
        mq: Minique, target: Minique, capsys: pytest.CaptureFixture[str]) -> None:
    # Given a SQLite file with waiting calls, and an operator with only the files at hand
    from minique.cli import main

    declare(mq)
    calls = mq.tasks["add"].map([(n, 1) for n in range(3)])

    # When they move its calls with the command line
    status = main(["move", str(mq.path), LOCATIONS[id(target)]])

    # Then the calls wait in the target, and the command says how many moved where
    assert status == 0
    assert "moved 3 waiting call(s)" in capsys.readouterr().out
    assert [target.result(r.id).status for r in calls] == ["queued"] * 3


def test_minique_move_onto_the_same_store_is_refused(
        mq: Minique, capsys: pytest.CaptureFixture[str]) -> None:
    from minique.cli import main

    declare(mq)
    mq.tasks["add"](1, 1)
    assert main(["move", str(mq.path), str(mq.path)]) == 2
    assert "same store" in capsys.readouterr().err
