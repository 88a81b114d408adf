"""Connections to a PostgreSQL server, and the secrets kept out of what people read.

A store opens one connection per thread through a ``Connector``: it checks
the server's version, sets time limits on sessions that have none, and turns
psycopg's errors into minique's (one line, the password removed).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from ..errors import ConfigurationError, DatabaseError

try:
    import psycopg
    from psycopg.conninfo import conninfo_to_dict
except ImportError:  # the extra is not installed: postgres.py says so at Minique(...)
    pass

MIN_SERVER_VERSION = 130000
# Defaults for the sessions of a connection whose DSN, role or database sets
# nothing else: a statement blocked (by a lock, a stuck server) fails after
# this long instead of hanging a worker for ever, and a process frozen inside
# a transaction cannot hold its row locks longer than that either.
STATEMENT_TIMEOUT = "30s"
IDLE_IN_TRANSACTION_TIMEOUT = "60s"
CONNECT_TIMEOUT = 10  # seconds, unless the DSN says connect_timeout


# -- locations, and secrets kept out of them ----------------------------------------------


def public_location(url: str) -> str:
    """``url`` without its password (in the user part or as a ``password=`` parameter)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hosts = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}@{hosts}"
    query = parts.query
    if query:
        pairs = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True)
                 if k.lower() != "password"]
        query = urlencode(pairs, quote_via=quote, safe="/:,=")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


class Secrets:
    """Removes a DSN's password from text meant for people (errors, logs)."""

    def __init__(self, url: str) -> None:
        words: set[str] = set()
        try:
            password = conninfo_to_dict(url).get("password")
        except Exception:  # a malformed DSN: fall back on the URL's own parts
            password = urlsplit(url).password
        if password:
            words.add(str(password))
            words.add(quote(str(password), safe=""))
        raw = urlsplit(url).netloc.rpartition("@")[0].partition(":")[2]
        if raw:
            words.add(raw)
        self._words = sorted(words, key=len, reverse=True)

    def scrub(self, text: str) -> str:
        for word in self._words:
            text = text.replace(word, "***")
        return text


def one_line(exc: BaseException) -> str:
    """An engine error's message on one line (libpq's span several)."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


# -- connections ----------------------------------------------------------------------------


class Held:
    """A thread's connection; it closes when its thread ends and this is collected."""

    __slots__ = ("__weakref__", "conn", "pid")

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self.pid = os.getpid()

    def __del__(self) -> None:
        if self.pid == os.getpid():
            with contextlib.suppress(Exception):  # closing at exit: nothing to tell
                self.conn.close()


def disown(conn: psycopg.Connection[Any]) -> None:
    """In a forked child: make ``conn`` harmless without touching the parent's session.

    Closing it would send the server a Terminate message on the socket the
    parent shares, ending the parent's session. The child's descriptor is
    pointed at /dev/null first, so that whatever libpq sends at close goes
    nowhere.
    """
    try:
        fd = conn.pgconn.socket
    except Exception:
        return
    try:
        null = os.open(os.devnull, os.O_RDWR)
        try:
            os.dup2(null, fd)
        finally:
            os.close(null)
    except OSError:
        return
    with contextlib.suppress(Exception):  # only /dev/null hears it
        conn.close()


class Connector:
    """Opens connections to one database with minique's session settings."""

    def __init__(self, url: str, location: str, secrets: Secrets) -> None:
        self.url = url
        self.location = location
        self.secrets = secrets
        try:
            params = conninfo_to_dict(url)
        except psycopg.ProgrammingError as exc:
            raise ConfigurationError(
                f"cannot use the PostgreSQL URL {location}: {secrets.scrub(one_line(exc))}; "
                "give one like postgresql://user:password@host:5432/dbname") from None
        ports = [p for p in str(params.get("port") or "").split(",") if p]
        if any(not p.isdigit() or not 0 < int(p) < 65536 for p in ports):
            raise ConfigurationError(
                f"cannot use the PostgreSQL URL {location}: its port {params['port']!r} is not "
                "a port number; give one like postgresql://user:password@host:5432/dbname")
        self._extra: dict[str, Any] = {}
        if "connect_timeout" not in params and "PGCONNECT_TIMEOUT" not in os.environ:
            self._extra["connect_timeout"] = CONNECT_TIMEOUT
        if "application_name" not in params and "PGAPPNAME" not in os.environ:
            self._extra["application_name"] = "minique"

    def connect(self) -> psycopg.Connection[Any]:
        """A new connection in autocommit with minique's timeouts; raises DatabaseError."""
        try:
            conn = psycopg.Connection.connect(self.url, autocommit=True, **self._extra)
        except psycopg.Error as exc:
            raise self.connect_error(exc) from None
        try:
            if conn.info.server_version < MIN_SERVER_VERSION:
                raise ConfigurationError(
                    f"the PostgreSQL server at {self.location} is version "
                    f"{conn.info.server_version // 10000}; minique needs PostgreSQL 13 or newer")
            # Ours only where the DSN, the role and the database set nothing.
            conn.execute(
                "SELECT set_config('statement_timeout', CASE WHEN"
                " current_setting('statement_timeout') IN ('0', '0ms') THEN %s ELSE"
                " current_setting('statement_timeout') END, false),"
                " set_config('idle_in_transaction_session_timeout', CASE WHEN"
                " current_setting('idle_in_transaction_session_timeout') IN ('0', '0ms')"
                " THEN %s ELSE current_setting('idle_in_transaction_session_timeout') END,"
                " false)",
                (STATEMENT_TIMEOUT, IDLE_IN_TRANSACTION_TIMEOUT), prepare=False)
        except BaseException as exc:
            conn.close()
            if isinstance(exc, psycopg.Error):
                raise self.connect_error(exc) from None
            raise
        return conn

    def connect_error(self, exc: psycopg.Error) -> Exception:
        text = self.secrets.scrub(one_line(exc))
        lowered = text.lower()
        where = f"the PostgreSQL database {self.location}"
        if "password authentication failed" in lowered or "no password supplied" in lowered \
                or "authentication failed" in lowered:
            return ConfigurationError(
                f"cannot log in to {where}: {text}; check the user and password in the URL "
                "(or in ~/.pgpass / PGPASSWORD)")
        if "does not exist" in lowered:
            return ConfigurationError(
                f"cannot open {where}: {text}; create it first (createdb) or fix the URL")
        if isinstance(exc, psycopg.ProgrammingError) or "invalid" in lowered:
            return ConfigurationError(f"cannot use {where}: {text}")
        return DatabaseError(
            f"cannot connect to {where}: {text}; check that the server runs and that this "
            "host can reach it (host, port, firewall)")
