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

import fcntl
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
# SIGTERM and SIGINT are ignored before anything is imported (see child_main),
# and the consumer's sys.path is set before minique is imported: it may be
# reachable only through a path the consumer's program added.
_CHILD = ("import signal; signal.signal(signal.SIGINT, signal.SIG_IGN); "
          "signal.signal(signal.SIGTERM, signal.SIG_IGN); "
          "import json, sys; "
          "sys.path[:0] = [p for p in json.loads(sys.argv[4])['sys_path'] if p not in sys.path]; "
          "from minique.consumer.processes import child_main; child_main()")


class WorkerCrashed(Exception):  # noqa: N818 - the name users see as error_type
    """The worker process running an attempt died before it reported back."""

    #: At start-up: the child itself said why it could not run tasks (it
    #: could not import them or find the queue), rather than dying or hanging.
    answered = False


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


def _die_with_the_consumer(lifeline: int) -> None:
    """End this worker process the moment its consumer dies, even in the middle of a task.

    A consumer that is SIGKILLed (or crashes) cannot kill its children. An
    attempt left running here would go on while another consumer, which sees
    the dead consumer within a second, runs the call again: the consumer's
    death must end its attempts, as it does for thread workers. The consumer
    holds the only write end of the lifeline pipe and never writes to it, so
    the pipe hangs up when it dies. On Linux the kernel then sends this
    process SIGIO, whose default action ends it at once, even while a task
    holds the GIL in a long C call; elsewhere a thread waits for the hang-up.
    """
    os.set_inheritable(lifeline, False)
    signal.signal(signal.SIGIO, signal.SIG_DFL)
    if sys.platform.startswith("linux"):
        try:
            fcntl.fcntl(lifeline, fcntl.F_SETOWN, os.getpid())
            fcntl.fcntl(lifeline, fcntl.F_SETFL,
                        fcntl.fcntl(lifeline, fcntl.F_GETFL) | os.O_ASYNC)
        except OSError:
            pass
        else:
            _exit_if_hung_up(lifeline, 0)  # it died before we were listening
            return
    threading.Thread(target=_exit_if_hung_up, args=(lifeline, None), daemon=True,
                     name="minique-lifeline").start()


def _exit_if_hung_up(lifeline: int, timeout: float | None) -> None:
    """Exit if the lifeline hangs up within ``timeout`` seconds (``None``: wait for it)."""
    hangup = select.poll()
    hangup.register(lifeline, select.POLLIN)  # nothing is ever written: any event is the end
    events = hangup.poll(None if timeout is None else timeout * 1000)
    # (POLLNVAL: a task closed the descriptor; the consumer may well live.)
    if events and not events[0][1] & select.POLLNVAL:
        os._exit(1)


_worker_pid = 0  # this worker process's pid, set by child_main


def _leave_it_to_the_consumer(signum: int, frame: FrameType | None) -> None:
    """A worker process's handler of SIGTERM and SIGINT: nothing (see child_main).

    In a process that a task forked, the signal does what it normally does:
    it may have come before that process's fork hook reset the handlers.
    """
    if os.getpid() != _worker_pid:
        _default_signals()
        os.kill(os.getpid(), signum)


def _default_signals() -> None:
    # In a process that a task forks, SIGTERM and SIGINT act as they normally
    # do, unless the task set handlers of its own (they are its to keep).
    for signum, default in ((signal.SIGINT, signal.default_int_handler),
                            (signal.SIGTERM, signal.SIG_DFL)):
        try:
            if signal.getsignal(signum) is _leave_it_to_the_consumer:
                signal.signal(signum, default)
        except ValueError:  # not the main thread: nothing to undo there
            pass


# A SIGTERM sent to a process that a task just forked, before the fork hook
# gave it the default handlers back, would reach Python's handler and then be
# dropped (Python clears pending signals after a fork). So both are blocked
# around the fork: the forked process gets them once its handlers are right.
_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
_fork_masks = threading.local()


def _block_for_fork() -> None:
    _fork_masks.before = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)


def _unblock_in_worker() -> None:
    signal.pthread_sigmask(signal.SIG_SETMASK, getattr(_fork_masks, "before", set()))


def _unblock_in_forked() -> None:
    _default_signals()
    signal.pthread_sigmask(signal.SIG_SETMASK, getattr(_fork_masks, "before", set()))


def child_main() -> None:
    """Entry point of a worker process: run the jobs the parent sends until it goes away."""
    # The consumer decides when its attempts stop: a SIGTERM sent to the
    # whole group (systemd's default KillMode, a container's stop) or a
    # Ctrl-C in the terminal must start its grace period, not kill the
    # attempt here and fail the call. Past the grace the parent SIGKILLs us.
    # _CHILD ignores both from the start; then a handler that does nothing
    # takes over, since programs that a task starts would inherit SIG_IGN,
    # and could then not be stopped with SIGTERM.
    global _worker_pid
    _worker_pid = os.getpid()
    signal.signal(signal.SIGINT, _leave_it_to_the_consumer)
    signal.signal(signal.SIGTERM, _leave_it_to_the_consumer)
    os.register_at_fork(before=_block_for_fork, after_in_parent=_unblock_in_worker,
                        after_in_child=_unblock_in_forked)
    read_fd, write_fd, lifeline = (int(arg) for arg in sys.argv[1:4])
    config = json.loads(sys.argv[4])
    _die_with_the_consumer(lifeline)
    for fd in (read_fd, write_fd):
        os.set_inheritable(fd, False)  # not to programs the tasks start
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
        ran = execute(mq, job, owner)
        if signal.getsignal(signal.SIGIO) is not signal.SIG_DFL:
            signal.signal(signal.SIGIO, signal.SIG_DFL)  # a task took the lifeline's signal
        replies.send(ran)


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
        self._lifeline = -1  # the write end of the child's lifeline pipe
        self._closed = False
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the child now; ``WorkerCrashed`` with the child's reason if it cannot start."""
        self.launch()
        self.wait_ready()

    def launch(self) -> None:
        """Start the child process, without waiting for it to import the tasks."""
        config = json.dumps({"modules": self._modules, "location": self.mq.store.location,
                             "names": sorted(self.mq.tasks), "sys_path": sys.path})
        opened: list[int] = []
        # Under the lock, so that interrupt() from the stopping thread either
        # comes first (no child is started) or finds the child to kill.
        with self._lock:
            try:
                if self._closed:
                    raise WorkerClosed("the consumer is stopping")
                for _ in range(3):
                    opened.extend(os.pipe())
                child_reads, parent_writes, parent_reads, child_writes = opened[:4]
                # The lifeline (the last pipe) is never written to: see _die_with_the_consumer.
                lifeline_r, lifeline_w = opened[4:]
                passed = (child_reads, child_writes, lifeline_r)
                self._process = subprocess.Popen(
                    [sys.executable, "-c", _CHILD, *map(str, passed), config],
                    pass_fds=passed, stdin=subprocess.DEVNULL)
            except BaseException:
                for fd in opened:
                    os.close(fd)
                raise
            for fd in passed:
                os.close(fd)
            self._requests = Connection(parent_writes, readable=False)
            self._replies = Connection(parent_reads, writable=False)
            self._lifeline = lifeline_w

    def wait_ready(self) -> None:
        """Wait for the launched child to import the tasks; ``WorkerCrashed`` if it cannot."""
        # Before any timeout starts counting.
        replies = self._replies
        if replies is None:
            raise WorkerCrashed("a worker process could not start: it was closed")
        answered = False
        try:
            if replies.poll(START_TIMEOUT):
                state, detail = replies.recv()
                answered = True
            else:
                state, detail = "failed", f"it did not start within {START_TIMEOUT:g} s"
        except (EOFError, OSError):
            state, detail = "failed", f"it exited ({self._exit_code()})"
        if state != "ready":
            self._kill()
            crashed = WorkerCrashed(f"a worker process could not start: {detail}")
            crashed.answered = answered
            raise crashed

    def _kill(self) -> None:
        """Kill the child and close its pipes (the owner's thread, or a runner no thread took)."""
        with self._lock:
            process, self._process = self._process, None
            pipes = (self._requests, self._replies)
            lifeline, self._lifeline = self._lifeline, -1
            self._requests = self._replies = None
        try:
            if process is not None:
                _kill_and_reap(process)
        finally:
            for conn in pipes:
                if conn is not None:
                    conn.close()
            if lifeline >= 0:
                os.close(lifeline)  # after the kill: its hang-up would end the child too

    def run(self, job: ClaimedJob, owner: str, timeout: float | None) -> Ran:
        """Run one attempt in the child; kill it if ``timeout`` passes first."""
        task = self.mq.tasks.get(job.name)
        if task is None:
            return execute(self.mq, job, owner)  # fails it as unknown, without a child
        if self._closed:
            raise WorkerClosed("the consumer is stopping")
        # Normally the worker replaced a gone or worn-out child after the last
        # attempt (replace()); this is for a child that died while idle, or
        # that could not start then.
        if self._process is None or self._process.poll() is not None:
            try:
                self._restart()
            except WorkerCrashed as exc:
                if self._closed:  # interrupt() killed the child as it started
                    raise WorkerClosed("the consumer closed the worker process") from None
                return after_error(job, owner, task.options, exc, "", 0.0)
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
                # interrupt() killed the child, perhaps in the middle of a
                # read: whatever that raised, the consumer puts the job back.
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

    def needs_replacing(self) -> bool:
        """Whether the child is gone or worn out (checked between attempts)."""
        if self._closed:
            return False
        process = self._process
        return process is None or process.poll() is not None or self._worn_out()

    def replace(self) -> None:
        """Start a fresh child in place of a gone or worn-out one, before the next attempt.

        If it cannot start, the next attempt tries again, and fails with the reason.
        """
        try:
            self._restart()
        except WorkerClosed:
            pass  # the consumer is stopping: the next run() says so
        except Exception as exc:  # noqa: BLE001 - the worker thread must live on
            if self._closed:
                return  # interrupt() killed it as it started
            reason = str(exc) if isinstance(exc, WorkerCrashed) \
                else f"a worker process could not start: {type(exc).__name__}: {exc}"
            log.error("%s; the next task of this worker tries again", reason)

    def _restart(self) -> None:
        self._kill()
        self._ran_here = 0
        self.start()

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

    def interrupt(self) -> None:
        """From the stopping thread: kill the child; the attempt running in it is put back.

        The worker thread that owns this runner gets ``WorkerClosed`` from
        ``run()``, and closes the pipes itself as it leaves: closing them here,
        while it may be reading, could hand their numbers to another file.
        """
        self._closed = True
        with self._lock:
            process = self._process
        if process is not None:
            _kill_and_reap(process)

    def close(self) -> None:
        """Stop the child process and close its pipes; no attempt runs here after this."""
        self._closed = True
        self._kill()


def _kill_and_reap(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:  # stuck in the kernel: reaped by a later poll()
            log.warning("worker process %d did not die within 5 s of SIGKILL", process.pid)

