"""A private PostgreSQL server for a grading run or the tests: no systemd, its own folder and port.

    python -m autograder.pgserver start [--dir DIR] [--port PORT]   # prints: export GENLAB_GRADEBOOK=...
    python -m autograder.pgserver stop [--dir DIR]

Uses Debian's ``postgresql`` (``initdb`` and ``pg_ctl`` from /usr/lib/postgresql/<version>/bin):
``initdb`` makes a cluster in ``DIR/data`` (trust authentication, loopback only), ``pg_ctl``
starts it on ``PORT`` (a free one by default) with its socket in ``DIR``, and a database
``genlab`` is created. As root the server runs as the ``postgres`` account (PostgreSQL refuses
root). Nothing outside ``DIR`` is written; ``stop`` shuts it down (``rm -rf DIR`` removes it).
"""

from __future__ import annotations

import argparse
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DIR = Path(tempfile.gettempdir()) / "genlab-postgres"
USER = "genlab"
DATABASE = "genlab"


class PostgresMissing(RuntimeError):
    """PostgreSQL's programs are not installed."""


def bindir() -> Path:
    """The folder of ``initdb`` and ``pg_ctl``: Debian's newest version, else ``PATH``."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3].split(".")[0]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    raise PostgresMissing("PostgreSQL is not installed: `apt-get install postgresql` (Debian), or `make setup` as root")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    folder: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://{USER}@127.0.0.1:{self.port}/{DATABASE}"

    @property
    def data(self) -> Path:
        return self.folder / "data"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(bindir() / args[0]), *args[1:]]
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            cmd = ["setpriv", f"--reuid={_account().pw_uid}", f"--regid={_account().pw_gid}", "--init-groups", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=self.folder)
        if check and proc.returncode != 0:
            raise RuntimeError(
                f"{args[0]} failed (exit {proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}"
            )
        return proc

    def start(self) -> Server:
        self.folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            os.chown(self.folder, _account().pw_uid, _account().pw_gid)
        os.chmod(self.folder, 0o700)
        if not (self.data / "PG_VERSION").exists():
            self._run("initdb", "-D", str(self.data), "-U", USER, "--auth=trust", "-E", "UTF8", "--no-sync")
        options = (
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c max_connections=200 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.folder / "server.log"),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )
        (self.folder / "port").write_text(str(self.port))
        created = self._run(
            "psql",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            USER,
            "-d",
            "postgres",
            "-tAc",
            f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'",
        )
        if created.stdout.strip() != "1":
            self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, DATABASE)
        return self

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)

    def reset(self) -> None:
        """An empty ``genlab`` database (between tests)."""
        for args in (("dropdb", "--if-exists", "--force"), ("createdb",)):
            self._run(*args, "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, DATABASE)


def _account() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        raise PostgresMissing("no `postgres` account to run the server as: `apt-get install postgresql`") from None


def missing() -> str | None:
    """Why a private server cannot be started on this machine, or None when it can."""
    try:
        bindir()
        if os.geteuid() == 0:
            _account()
    except PostgresMissing as exc:
        return str(exc)
    return None


def start(folder: Path = DEFAULT_DIR, port: int | None = None) -> Server:
    """Start (making it first if needed) a private server in ``folder``; its URL is ``.url``."""
    folder = Path(folder)
    if port is None:
        recorded = folder / "port"
        port = int(recorded.read_text()) if recorded.exists() else _free_port()
    server = Server(folder, port)
    if (server.data / "postmaster.pid").exists() and _answers(port):
        return server
    return server.start()


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def stop(folder: Path = DEFAULT_DIR) -> None:
    folder = Path(folder)
    port = int((folder / "port").read_text()) if (folder / "port").exists() else 0
    Server(folder, port).stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"server folder (default {DEFAULT_DIR})")
    parser.add_argument("--port", type=int, help="port on 127.0.0.1 (default: a free one)")
    args = parser.parse_args(argv)
    try:
        if args.action == "start":
            server = start(args.dir, args.port)
            for _ in range(50):
                if _answers(server.port):
                    break
                time.sleep(0.1)
            print(f"export GENLAB_GRADEBOOK={server.url}")
        else:
            stop(args.dir)
            print(f"stopped the server in {args.dir}")
    except (PostgresMissing, RuntimeError) as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()
