"""The per-task log line: one ``Logger.log`` record per finished task, naming its caller."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from minique import Minique
from minique.consumer import Consumer
from minique.consumer.tasklog import log_task_line


class Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def kept() -> Iterator[Keep]:
    log = logging.getLogger("minique")
    handler, level = Keep(), log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    yield handler
    log.removeHandler(handler)
    log.setLevel(level)


def test_a_task_line_names_where_it_was_logged(kept: Keep) -> None:
    def settle() -> int:
        log_task_line(logging.ERROR, "work[1] failed")
        return settle.__code__.co_firstlineno + 1

    line = settle()
    [record] = kept.records
    assert record.name == "minique"
    assert (record.levelname, record.getMessage()) == ("ERROR", "work[1] failed")
    assert (record.pathname, record.funcName, record.lineno) == (__file__, "settle", line)


def test_filters_and_levels_of_the_logger_still_apply(kept: Keep) -> None:
    log = logging.getLogger("minique")
    log.setLevel(logging.WARNING)
    log_task_line(logging.INFO, "below the level")
    log.setLevel(logging.INFO)

    def refuse_secrets(record: logging.LogRecord) -> bool:
        return "secret" not in record.getMessage()

    log.addFilter(refuse_secrets)
    try:
        log_task_line(logging.INFO, "a secret")
        log_task_line(logging.INFO, "public")
    finally:
        log.removeFilter(refuse_secrets)
    assert [r.getMessage() for r in kept.records] == ["public"]


def test_a_consumer_logs_one_line_per_task_naming_it(mq: Minique, kept: Keep,
                                                     start_consumer: Any) -> None:
    @mq.task
    def work(n: int) -> int:
        return n

    results = work.map(range(3))
    consumer: Consumer = start_consumer(mq, workers=1)
    for result in results:
        result.get(timeout=10)
    consumer.stop(timeout=5)
    lines = [r.getMessage() for r in kept.records if "] done in " in r.getMessage()]
    assert sorted(line.split(" done")[0] for line in lines) == sorted(
        f"{work.name}[{r.id}]" for r in results)
