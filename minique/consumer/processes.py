"""Process workers (``-k process``): each attempt runs in a child process that can be killed.

A Python thread cannot be stopped from outside, so a thread worker can only
stop waiting for a task past its timeout. With process workers each worker
thread owns one child process; the attempt runs there, and past its timeout
the child is killed (SIGKILL) and a fresh one started. Children are started
as fresh interpreters that import the modules defining the tasks, so nothing
of the consumer's threads or database connections leaks into them (and tasks
must live in importable modules, not in a ``__main__`` script).
The cost is a start-up per child (and per kill), and a pickled round trip of
the job and its outcome per attempt.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from importlib import import_module
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING

from ..attempt import Ran, WorkerClosed, after_error, execute, timed_out
from ..store import ClaimedJob
from .identity import resident_bytes

if TYPE_CHECKING:
    from types import FrameType

    from ..app import Minique

log = logging.getLogger("minique")

START_TIMEOUT = 60.0
_CHILD = "from minique.consumer.processes import child_main; child_main()"


class WorkerCrashed(Exception):  # noqa: N818 - the name users see as error_type
    """The worker process running an attempt died before it reported back."""


def _find_queue(modules: list[str], location: str, names: list[str]) -> Minique:
    from ..app import Minique

    for name in modules:
        import_module(name)
    for module in list(sys.modules.values()):
        for value in list(vars(module).values()) if module is not None else ():
            if isinstance(value, Minique) and _location(value) == location \
                    and all(n in value.tasks for n in names):
                return value
    raise RuntimeError(
        f"no Minique for {location} defining {names} found after importing {modules}")


def _location(mq: Minique) -> str | None:
    # A queue configured later (Flask, Django) has no store yet.
    store = vars(mq).get("store")
    return None if store is None else str(store.location)


def _stop_with(parent: int, requests_fd: int) -> None:
    """End this worker process as soon as its consumer dies, even in the middle of a task.

    A consumer that is SIGKILLed (or crashes) cannot kill its children. An
    attempt left running here would go on while another consumer, which sees
    the dead consumer within a second, runs the call again: the consumer's
    death must end its attempts, as it does for thread workers. The consumer
    holds the only write end of the requests pipe, so the pipe hangs up when
    it dies; waiting for that costs nothing while it lives.
    """
    hangup = select.poll()
    hangup.register(requests_fd, 0)  # 0: only a hang-up or an error wakes it
    while not hangup.poll():
        pass
    # (The consumer itself closes the pipe only after it killed this process.)
    sys.stderr.write(f"minique worker process {os.getpid()}: its consumer {parent} is gone; "
                     "exiting, and the call it ran (if any) is queued again\n")
    sys.stderr.flush()
    os._exit(1)


def _leave_it_to_the_consumer(signum: int, frame: FrameType | None) -> None:
    """A worker process's handler of SIGTERM and SIGINT: nothing (see child_main)."""


def child_main() -> None:
    """Entry point of a worker process: run the jobs the parent sends until it goes away."""
    # The consumer decides when its attempts stop: a SIGTERM sent to the
    # whole group (systemd's default KillMode, a container's stop) or a
    # Ctrl-C in the terminal must start its grace period, not kill the
    # attempt here and fail the call. Past the grace the parent SIGKILLs us.
    # A handler that does nothing, not SIG_IGN: programs that a task starts
    # would inherit SIG_IGN, and could then not be stopped with SIGTERM.
    signal.signal(signal.SIGINT, _leave_it_to_the_consumer)
    signal.signal(signal.SIGTERM, _leave_it_to_the_consumer)
    read_fd, write_fd, config = int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])
    threading.Thread(target=_stop_with, args=(config["parent"], read_fd), daemon=True,
                     name="minique-parent-watch").start()
    sys.path[:0] = [p for p in config["sys_path"] if p not in sys.path]
    requests, replies = Connection(read_fd, writable=False), Connection(write_fd, readable=False)
    try:
        mq = _find_queue(config["modules"], config["location"], config["names"])
    except BaseException as exc:
        replies.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    replies.send(("ready", ""))
    while True:
        try:
            job, owner = requests.recv()
        except (EOFError, OSError):
            return  # the consumer is gone
        replies.send(execute(mq, job, owner))


class ProcessRunner:
    """One child process that runs attempts for one worker thread."""

    def __init__(self, mq: Minique, max_tasks: int | None = None,
                 max_memory: float | None = None) -> None:
        self.mq = mq
        # Recycling: a fresh child after this many attempts, or once the
        # child's resident memory passes this many bytes (checked between
        # attempts, so no attempt is cut short).
        self.max_tasks = max_tasks
        self.max_memory = max_memory
        self._ran_here = 0
        self._modules = sorted({task.fn.__module__ for task in mq.tasks.values()
                                if task.fn.__module__ != "__main__"})
        self._process: subprocess.Popen[bytes] | None = None
        self._requests: Connection | None = None
        self._replies: Connection | None = None
        self._closed = False
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the child now; ``WorkerCrashed`` with the child's reason if it cannot start."""
        self.launch()
        self.wait_ready()

    def launch(self) -> None:
        """Start the child process, without waiting for it to import the tasks."""
        child_reads, parent_writes = os.pipe()
        parent_reads, child_writes = os.pipe()
        config = json.dumps({"modules": self._modules, "location": self.mq.store.location,
                             "names": sorted(self.mq.tasks), "sys_path": sys.path,
                             "parent": os.getpid()})
        # Under the lock, so that a close() from the stopping thread either
        # comes first (no child is started) or finds the child to kill.
        with self._lock:
            try:
                if self._closed:
                    raise WorkerClosed("the consumer is stopping")
                self._process = subprocess.Popen(
                    [sys.executable, "-c", _CHILD, str(child_reads), str(child_writes), config],
                    pass_fds=(child_reads, child_writes), stdin=subprocess.DEVNULL)
            except BaseException:
                os.close(parent_writes)
                os.close(parent_reads)
                raise
            finally:
                os.close(child_reads)
                os.close(child_writes)
            self._requests = Connection(parent_writes, readable=False)
            self._replies = Connection(parent_reads, writable=False)

    def wait_ready(self) -> None:
        """Wait for the launched child to import the tasks; ``WorkerCrashed`` if it cannot."""
        # Before any timeout starts counting.
        replies = self._replies
        if replies is None:
            raise WorkerCrashed("a worker process could not start: it was closed")
        try:
            state, detail = replies.recv() if replies.poll(START_TIMEOUT) \
                else ("failed", f"it did not start within {START_TIMEOUT:g} s")
        except (EOFError, OSError):
            state, detail = "failed", f"it exited ({self._exit_code()})"
        if state != "ready":
            self._kill()
            raise WorkerCrashed(f"a worker process could not start: {detail}")

    def _kill(self) -> None:
        # The worker thread and the stopping thread may both close at once
        # (close() at the grace period's end, and the worker as it leaves):
        # only the one that takes the child and pipes out kills and closes them.
        with self._lock:
            process, requests, replies = self._process, self._requests, self._replies
            self._process = self._requests = self._replies = None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(5)
        for conn in (requests, replies):
            if conn is not None:
                conn.close()

    def run(self, job: ClaimedJob, owner: str, timeout: float | None) -> Ran:
        """Run one attempt in the child; kill it if ``timeout`` passes first."""
        task = self.mq.tasks.get(job.name)
        if task is None:
            return execute(self.mq, job, owner)  # fails it as unknown, without a child
        if self._closed:
            raise WorkerClosed("the consumer is stopping")
        if self._process is not None and self._worn_out():
            self._kill()
        if self._process is None or self._process.poll() is not None:
            self._kill()
            self._ran_here = 0
            try:
                self.start()
            except WorkerCrashed as exc:
                if self._closed:  # close() killed the child as it started
                    raise WorkerClosed("the consumer closed the worker process") from None
                return after_error(job, owner, task.options, exc, "", 0.0)
        # Read once: close() (the stopping thread) sets them to None at any moment.
        requests, replies = self._requests, self._replies
        start = time.monotonic()
        try:
            if requests is None or replies is None:
                raise OSError("the worker process was closed")
            requests.send((job, owner))
            if replies.poll(timeout):
                ran: Ran = replies.recv()
                self._ran_here += 1
                return ran
        except Exception as exc:
            if self._closed:
                # close() killed the child, perhaps in the middle of a read:
                # whatever that raised, the consumer puts the job back.
                raise WorkerClosed("the consumer closed the worker process") from None
            if not isinstance(exc, EOFError | OSError):
                raise
            code = self._exit_code()
            self._kill()
            return after_error(job, owner, task.options, WorkerCrashed(
                f"the worker process running the task died ({code})"), "",
                time.monotonic() - start)
        self._kill()
        assert timeout is not None
        return timed_out(job, owner, task.options, timeout)

    def _worn_out(self) -> bool:
        assert self._process is not None
        if self.max_tasks is not None and self._ran_here >= self.max_tasks:
            log.info("worker process %d ran %d tasks: replacing it", self._process.pid,
                     self._ran_here)
            return True
        if self.max_memory is not None:
            rss = resident_bytes(self._process.pid)
            if rss is not None and rss > self.max_memory:
                log.info("worker process %d uses %.0f MB: replacing it", self._process.pid,
                         rss / 2**20)
                return True
        return False

    def _exit_code(self) -> str:
        if self._process is None:
            return "no process"
        try:
            code = self._process.wait(1)
        except subprocess.TimeoutExpired:
            code = None
        if code is None:
            return "it closed its pipe"
        return f"killed by signal {-code}" if code < 0 else f"exit code {code}"

    def close(self) -> None:
        """Stop the child process; an attempt running in it raises ``WorkerClosed``."""
        self._closed = True
        self._kill()

