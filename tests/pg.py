"""A real PostgreSQL for the tests: one throw-away cluster per session, one database per test.

Load it from a test module with ``pytest_plugins = ["tests.pg"]``. The cluster is
Debian's ``postgresql`` package run by hand -- ``initdb`` and ``pg_ctl`` in a
temporary folder, as the ``postgres`` user when the tests run as root (PostgreSQL
refuses to run as root) -- listening on a free port of 127.0.0.1 (password
authentication, as a deployment would use) and on a unix socket in that folder
(trusted, for the fixture's own administration). Durability is off (``fsync``):
these databases live for one test. Nothing is skipped: without PostgreSQL the
fixture fails and says how to install it.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

INSTALL_HINT = "PostgreSQL is not installed: run .ci/postgres-install (Debian's postgresql package)"

#: The role the code under test connects as, and its password (tests only).
ROLE = "watcher"
PASSWORD = "pg-test-secret-5f1c"  # noqa: S105 -- a throw-away cluster's password

_SERVER_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",  # a test database lives for one test
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "100",
    "shared_buffers": "32MB",
    "log_min_messages": "warning",
    "log_connections": "off",
}


def find_bindir() -> Path:
    """The newest installed PostgreSQL's binaries (Debian: /usr/lib/postgresql/N/bin)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: (
            int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
        ),
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb is not None:
        return Path(initdb).resolve().parent
    pytest.fail(INSTALL_HINT, pytrace=False)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Cluster:
    """One running PostgreSQL server and how to reach it."""

    bindir: Path
    base: Path
    port: int
    run_as: str | None  # the user that owns and runs the server (None: ourselves)

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base / "sock"

    @property
    def log_file(self) -> Path:
        return self.base / "server.log"

    # --- the server ---

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self.run_as is not None:
            command = ["runuser", "-u", self.run_as, "--", *command]
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False
        )
        if result.returncode != 0:
            log = self.log_file.read_text() if self.log_file.exists() else ""
            raise RuntimeError(
                f"{args[0]} failed ({result.returncode}): {result.stdout}{result.stderr}\n{log}"
            )
        return result

    def init(self) -> None:
        password_file = self.base / "superuser-password"
        password_file.write_text(PASSWORD + "\n")
        self._chown(password_file)
        self._run(
            "initdb", "--no-sync", "--no-instructions", "--encoding=UTF8", "--no-locale",
            "--username=postgres", f"--pwfile={password_file}",
            "--auth-local=trust", "--auth-host=scram-sha-256", "-D", str(self.data),
        )  # fmt: skip
        settings = {
            **_SERVER_SETTINGS,
            "port": str(self.port),
            "unix_socket_directories": f"'{self.socket_dir}'",
        }
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log_file), "-w", "-t", "30",
                  "start")  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")

    def restart(self) -> None:
        """``pg_ctl restart``: every connection is dropped, the data stays."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log_file), "-m", "fast",
                  "-w", "-t", "30", "restart")  # fmt: skip

    def _chown(self, path: Path) -> None:
        if self.run_as is not None:
            entry = pwd.getpwnam(self.run_as)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    # --- connecting ---

    def admin(self, dbname: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
        """A superuser connection over the unix socket (autocommit)."""
        return psycopg.connect(
            host=str(self.socket_dir), port=self.port, user="postgres", dbname=dbname,
            autocommit=True,
        )  # fmt: skip

    def url(self, dbname: str, *, password: bool = False) -> str:
        """A ``postgresql://`` URL for :data:`ROLE` over TCP (with the password if asked)."""
        secret = f":{PASSWORD}" if password else ""
        return f"postgresql://{ROLE}{secret}@127.0.0.1:{self.port}/{dbname}"


def _start_cluster() -> Cluster:
    bindir = find_bindir()
    run_as: str | None = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.fail(f"{INSTALL_HINT} (no 'postgres' user to run it as)", pytrace=False)
        run_as = "postgres"
    # Short path: unix socket paths are limited to ~107 bytes.
    base = Path(tempfile.mkdtemp(prefix="watcher-pg-", dir="/tmp"))
    cluster = Cluster(bindir=bindir, base=base, port=free_port(), run_as=run_as)
    try:
        cluster.socket_dir.mkdir()
        cluster._chown(base)
        cluster._chown(cluster.socket_dir)
        cluster.init()
        cluster.start()
        with cluster.admin() as admin:
            admin.execute(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}'")
    except BaseException:
        with contextlib.suppress(Exception):
            cluster.stop("immediate")
        shutil.rmtree(base, ignore_errors=True)
        raise
    return cluster


@dataclass(frozen=True)
class Database:
    """One test's own database on the session's cluster, owned by :data:`ROLE`."""

    cluster: Cluster
    name: str
    password_file: Path

    @property
    def url(self) -> str:
        """Without the password: pass :attr:`password_file` (or use :attr:`url_with_password`)."""
        return self.cluster.url(self.name)

    @property
    def password(self) -> str:
        return PASSWORD

    @property
    def url_with_password(self) -> str:
        return self.cluster.url(self.name, password=True)

    def admin(self) -> psycopg.Connection[tuple[object, ...]]:
        """A superuser connection to this database, to look at or break it from outside."""
        return self.cluster.admin(self.name)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """The session's PostgreSQL server (started on first use, stopped at the end)."""
    cluster = _start_cluster()
    try:
        yield cluster
    finally:
        with contextlib.suppress(Exception):
            cluster.stop("immediate")
        shutil.rmtree(cluster.base, ignore_errors=True)


@pytest.fixture(scope="session")
def _pg_database_name(pg_cluster: Cluster) -> str:
    """One database for the session, emptied before each test (cheaper than one per test)."""
    name = f"watcher_test_{os.getpid()}"
    with pg_cluster.admin() as admin:
        admin.execute(f"CREATE DATABASE {name} OWNER {ROLE} TEMPLATE template0")
    return name


@pytest.fixture
def pg_database(pg_cluster: Cluster, _pg_database_name: str, tmp_path: Path) -> Database:
    """An empty database for one test: no watcher connection, no watcher schema.

    The session's database is reset, not recreated (``CREATE DATABASE`` checkpoints:
    hundreds of milliseconds on a busy machine): connections left by the previous test
    are ended, the watcher's schema dropped and the role's privileges restored.
    """
    name = _pg_database_name
    with pg_cluster.admin(name) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        admin.execute("DROP SCHEMA IF EXISTS finetune_watcher CASCADE")
        admin.execute(f"GRANT ALL ON DATABASE {name} TO {ROLE}")
    password_file = tmp_path / "pg-password"
    password_file.write_text(PASSWORD + "\n")
    return Database(cluster=pg_cluster, name=name, password_file=password_file)
