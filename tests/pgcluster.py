"""A throwaway PostgreSQL cluster for the tests: initdb in a temporary folder, a free port.

Used by tests/conftest.py (a cluster for the session, and private ones for the
tests that restart their server) and by .ci/run, as a command::

    python tests/pgcluster.py start FOLDER   # prints the DSN; FOLDER must not exist
    python tests/pgcluster.py stop FOLDER

The server listens on 127.0.0.1 only (and a Unix socket in FOLDER), trusts
local socket connections and asks a password over TCP (scram), so that the
tests see a password in the DSN as users do. Running as root, initdb and the
server run as the ``postgres`` user (PostgreSQL refuses root), through runuser.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

USER = "minique"
PASSWORD = "minique-test-secret"
DATABASE = "minique_test"
SERVER_USER = "postgres"  # who runs the server when we are root


def find_bin() -> Path | None:
    """The folder of initdb and pg_ctl: on PATH, else Debian's newest, else None."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                      key=lambda p: int(Path(p).parent.parent.name)
                      if Path(p).parent.parent.name.isdigit() else 0)
    return Path(versions[-1]).parent if versions else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Cluster:
    """A cluster in ``folder`` (data in folder/data, socket and log beside it)."""

    folder: Path
    bin: Path
    port: int = 0

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def log(self) -> Path:
        return self.folder / "server.log"

    def dsn(self, database: str = DATABASE) -> str:
        """The URL a test gives to Minique: TCP, with the password."""
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def _as_server_user(self, args: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return args
        return ["runuser", "-u", SERVER_USER, "--", *args]

    def _run(self, *args: str, timeout: float = 120) -> None:
        done = subprocess.run(self._as_server_user([str(self.bin / args[0]), *args[1:]]),
                              capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(args[:2])} failed ({done.returncode}): "
                               f"{done.stderr.strip() or done.stdout.strip()}\n{log}")

    def init(self) -> None:
        self.folder.mkdir(parents=True)
        if os.geteuid() == 0:
            entry = pwd.getpwnam(SERVER_USER)
            os.chown(self.folder, entry.pw_uid, entry.pw_gid)
        self.folder.chmod(0o700)
        pwfile = self.folder / "pwfile"
        pwfile.write_text(PASSWORD + "\n")
        if os.geteuid() == 0:
            os.chown(pwfile, entry.pw_uid, entry.pw_gid)
        try:
            self._run("initdb", "-D", str(self.data), "-U", USER, f"--pwfile={pwfile}",
                      "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
                      "--locale=C", "--no-sync")
        finally:
            pwfile.unlink()
        with open(self.data / "postgresql.conf", "a") as conf:
            # Throwaway data: no fsync (the tests do not cut the power), quick
            # shutdowns and checkpoints, and room for every test's connections.
            conf.write("\nfsync = off\nfull_page_writes = off\nmax_connections = 300\n"
                       "unix_socket_permissions = 0777\n")

    def start(self) -> None:
        if not self.port:
            self.port = _free_port()
        options = f"-h 127.0.0.1 -p {self.port} -k {self.folder}"
        self._run("pg_ctl", "start", "-D", str(self.data), "-l", str(self.log), "-w",
                  "-t", "60", "-o", options)
        (self.folder / "port").write_text(str(self.port))

    def restart(self) -> None:
        """Stop (fast: every session ends at once) and start again, on the same port."""
        options = f"-h 127.0.0.1 -p {self.port} -k {self.folder}"
        self._run("pg_ctl", "restart", "-D", str(self.data), "-m", "fast", "-w", "-t", "60",
                  "-l", str(self.log), "-o", options)

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "immediate", "-w",
                      "-t", "60")

    def create_database(self, name: str = DATABASE) -> None:
        import psycopg

        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')

    @classmethod
    def at(cls, folder: Path) -> Cluster:
        """The cluster already made in ``folder`` (by ``make``)."""
        binary = find_bin()
        if binary is None:
            raise RuntimeError("PostgreSQL's initdb was not found")
        port = int((folder / "port").read_text()) if (folder / "port").exists() else 0
        return cls(folder, binary, port)


def make(folder: Path) -> Cluster:
    """initdb into ``folder`` (which must not exist), start the server, create the database.

    Raises RuntimeError saying what is missing or what failed; the folder is
    removed again on failure.
    """
    binary = find_bin()
    if binary is None:
        raise RuntimeError(
            "PostgreSQL's initdb was not found on PATH nor in /usr/lib/postgresql/*/bin: "
            "install the server (Debian: apt-get install postgresql) or set "
            "MINIQUE_TEST_POSTGRES to the URL of a database the tests may use")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SERVER_USER)
        except KeyError:
            raise RuntimeError(f"running as root, the test server runs as the user "
                               f"{SERVER_USER!r}, which does not exist") from None
    cluster = Cluster(folder, binary)
    try:
        cluster.init()
        cluster.start()
        cluster.create_database()
    except BaseException:
        with contextlib.suppress(Exception):
            cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return cluster


def wait_until_accepting(dsn: str, timeout: float = 30.0) -> None:
    """Wait until a connection to ``dsn`` succeeds."""
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            psycopg.connect(dsn, connect_timeout=2).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("start", "stop"):
        print(__doc__, file=sys.stderr)
        return 2
    command, folder = argv[0], Path(argv[1]).resolve()
    if command == "start":
        try:
            cluster = make(folder)
        except RuntimeError as exc:
            print(f"cannot start a PostgreSQL cluster: {exc}", file=sys.stderr)
            return 1
        print(cluster.dsn())
        return 0
    cluster = Cluster.at(folder)
    cluster.stop()
    shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
