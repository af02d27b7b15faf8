"""A throwaway PostgreSQL server for tests and benchmarks: initdb + pg_ctl in a temporary folder.

WHY: the store's PostgreSQL backend is tested against a real server (claims with SKIP LOCKED,
serialization failures, a restart mid-run), never a mock. Each server has its own data folder and a
free loopback port, so several test sessions can run side by side, and it is gone after the last
test. Durability settings stay the server's defaults (``fsync=on``, ``synchronous_commit=on``) so
that what the tests measure is what a site would run.

PostgreSQL refuses to run as root: as root the folder is chowned to the ``postgres`` OS user (the
Debian package creates it) and every server command runs through ``runuser -u postgres``.
Debian keeps the server binaries off PATH, in ``/usr/lib/postgresql/<major>/bin``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from conformance.peers.process import LOOPBACK, PeerFailed, PeerUnavailable, free_port, tail_log

OS_USER = "postgres"
DB_USER = "cds"
INSTALL_HINT = "install the Debian package postgresql (scripts/install_peers.sh, as root)"


def postgres_bindir() -> Path | None:
    """The folder with initdb and pg_ctl: on PATH, or Debian's newest /usr/lib/postgresql/N/bin."""
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(on_path).parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
                      key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    return versions[-1].parent if versions else None


def postgres_missing_reason() -> str | None:
    """Why a PostgreSQL server cannot be started here, or None when it can."""
    if postgres_bindir() is None:
        return f"PostgreSQL server binaries (initdb, pg_ctl) not found; {INSTALL_HINT}"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(OS_USER)
        except KeyError:
            return f"running as root and there is no {OS_USER!r} OS user to run PostgreSQL; {INSTALL_HINT}"
    return None


class PostgresServer:
    """One PostgreSQL cluster in a temporary folder, on a free loopback port, user ``cds`` (trust).

    ``host`` adds one more listen address (the multi-host tests' bridge gateway) and ``trust_cidrs``
    the client networks allowed to connect there (pg_hba ``host all all CIDR trust``): test hosts
    in network namespaces reach the server over the bridge, as other machines would.
    """

    def __init__(self, root: Path | None = None, port: int | None = None, *, host: str | None = None,
                 trust_cidrs: tuple[str, ...] = ()) -> None:
        reason = postgres_missing_reason()
        if reason:
            raise PeerUnavailable(reason)
        self.bindir = postgres_bindir()
        self._own_root = root is None
        self.root = Path(root or tempfile.mkdtemp(prefix="cds-pg-"))
        self.data = self.root / "data"
        self.log_path = self.root / "postgres.log"
        self.port = port or free_port()
        self._as_root = os.geteuid() == 0
        self.host = host
        self.trust_cidrs = tuple(trust_cidrs)
        self.started = False

    def _cmd(self, tool: str, *args: str) -> list[str]:
        argv = [str(self.bindir / tool), *args]  # type: ignore[operator]
        return ["runuser", "-u", OS_USER, "--", *argv] if self._as_root else argv

    def _run(self, tool: str, *args: str, timeout_s: float = 60.0) -> None:
        proc = subprocess.run(self._cmd(tool, *args), capture_output=True, text=True, timeout=timeout_s,
                              cwd=self.root, check=False)
        if proc.returncode != 0:
            raise PeerFailed(f"{tool} {' '.join(args[:2])} failed ({proc.returncode}): "
                             f"{(proc.stderr or proc.stdout).strip()[-800:]}\n{tail_log(self.log_path)}")

    def start(self) -> PostgresServer:
        """initdb (first time) and start; returns when the server accepts connections."""
        self.root.mkdir(parents=True, exist_ok=True)
        if self._as_root:
            user = pwd.getpwnam(OS_USER)
            os.chown(self.root, user.pw_uid, user.pw_gid)
        if not (self.data / "PG_VERSION").exists():
            self._run("initdb", "-D", str(self.data), "-U", DB_USER, "--auth=trust", "-E", "UTF8",
                      "--no-locale", "--no-instructions")
            self._allow_networks()
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log_path), "-o", self._options, "-w", "-t", "60",
                  "start")
        self.started = True
        return self

    def _allow_networks(self) -> None:
        """Trust the client networks given (pg_hba.conf is written by initdb as the OS user)."""
        if not self.trust_cidrs:
            return
        hba = self.data / "pg_hba.conf"
        lines = "".join(f"host all all {cidr} trust\n" for cidr in self.trust_cidrs)
        with open(hba, "a") as f:
            f.write("# multi-host test networks\n" + lines)

    @property
    def _options(self) -> str:
        """Server options: loopback (plus ``host``), socket in our folder, durability on (the defaults, said)."""
        listen = LOOPBACK if self.host is None else f"{LOOPBACK},{self.host}"
        return (f"-p {self.port} -c listen_addresses='{listen}' -k {self.root} -c fsync=on "
                "-c synchronous_commit=on -c full_page_writes=on -c max_connections=200")

    def url(self, database: str = "postgres", host: str | None = None) -> str:
        """The URL on loopback, or on ``host`` (one of the addresses it listens on)."""
        return f"postgresql://{DB_USER}@{host or LOOPBACK}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new empty database; returns its URL."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as con:
            con.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def restart(self) -> None:
        """``pg_ctl restart -m fast``: every client connection is cut, then the server is back."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log_path), "-o", self._options, "-m", "fast", "-w",
                  "-t", "60", "restart")

    def stop(self) -> None:
        """Stop the server (fast: clients are disconnected) and remove its folder; idempotent."""
        if self.started:
            try:
                self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop")
            except (PeerFailed, subprocess.TimeoutExpired):
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
            self.started = False
        if self._own_root:
            for _ in range(3):
                shutil.rmtree(self.root, ignore_errors=True)
                if not self.root.exists():
                    break
                time.sleep(0.2)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def log_tail(self, lines: int = 40) -> str:
        return tail_log(self.log_path, lines)
