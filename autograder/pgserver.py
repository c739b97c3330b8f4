"""A private PostgreSQL server for a course's grading runs (durable) or for the tests (fast): no systemd.

    python -m autograder.pgserver start --dir DIR [--port PORT] [--listen ADDRESS] [--fast]
    python -m autograder.pgserver stop --dir DIR

Uses Debian's ``postgresql`` (``initdb`` and ``pg_ctl`` from /usr/lib/postgresql/<version>/bin).
``start`` makes a cluster in ``DIR/data`` on first use, starts it on ``PORT`` (a free one by
default, then the same one) and creates the database ``genlab``; it prints the two lines a
grading run needs::

    export GENLAB_GRADEBOOK=postgresql+psycopg2://genlab@HOST:PORT/genlab
    export GENLAB_GRADEBOOK_PASSWORD_FILE=DIR/password

The password is made at the first start and kept in ``DIR/password`` (mode 0600); it is never
part of the URL, so it does not reach logs, feedback or the grade table.

* **Durable** (the default, for a course): every commit reaches the disk (``fsync``, full page
  writes, synchronous commits), and ``DIR`` must be a folder the system keeps: one under the
  temporary folder is refused (a reboot or a clean-up would take the grades with it). With
  ``--listen 0.0.0.0`` (or an address of this machine) Ray workers on other machines connect, with
  the password; by default it listens on 127.0.0.1 only.
* **Fast** (``--fast``, the tests): nothing is synced, connections from 127.0.0.1 need no
  password, and ``DIR`` may be anywhere. A power cut loses it: never for grades.

As root the server runs as the ``postgres`` account (PostgreSQL refuses root). Nothing outside
``DIR`` is written; ``stop`` shuts it down, and ``rm -rf DIR`` removes it.
"""

from __future__ import annotations

import argparse
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

USER = "genlab"
DATABASE = "genlab"
FAST = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
DURABLE = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}


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


def _volatile(folder: Path) -> bool:
    """Whether ``folder`` lies in a temporary folder that the system may clean (or lose at a reboot)."""
    resolved = folder.resolve()
    places = {Path(tempfile.gettempdir()).resolve(), Path("/tmp"), Path("/var/tmp"), Path("/dev/shm")}
    return any(resolved == p or resolved.is_relative_to(p) for p in places)


@dataclass
class Server:
    folder: Path
    port: int
    fast: bool = False
    listen: str = "127.0.0.1"

    @property
    def host(self) -> str:
        """The host name workers use: this machine's name when it listens beyond the loopback."""
        return "127.0.0.1" if self.listen in ("127.0.0.1", "localhost") else socket.getfqdn()

    @property
    def url(self) -> str:
        """The gradebook URL, without the password (see :attr:`password_file`)."""
        return f"postgresql+psycopg2://{USER}@{self.host}:{self.port}/{DATABASE}"

    @property
    def password_file(self) -> Path:
        return self.folder / "password"

    @property
    def data(self) -> Path:
        return self.folder / "data"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(bindir() / args[0]), *args[1:]]
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            cmd = ["setpriv", f"--reuid={_account().pw_uid}", f"--regid={_account().pw_gid}", "--init-groups", *cmd]
        env = {**os.environ, "PGPASSFILE": os.devnull}
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=self.folder, env=env)
        if check and proc.returncode != 0:
            raise RuntimeError(
                f"{args[0]} failed (exit {proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}"
            )
        return proc

    def _own(self, path: Path, mode: int) -> None:
        if os.geteuid() == 0:
            os.chown(path, _account().pw_uid, _account().pw_gid)
        os.chmod(path, mode)

    def _initdb(self) -> None:
        """A new cluster: scram-sha-256 with the generated password over TCP, the owner alone on its socket."""
        self.password_file.write_text(secrets.token_urlsafe(24) + "\n")
        self._own(self.password_file, 0o600)
        args = ["initdb", "-D", str(self.data), "-U", USER, "-E", "UTF8", "--auth-local=trust"]
        if self.fast:
            args += ["--auth-host=trust", "--no-sync"]
        else:
            args += ["--auth-host=scram-sha-256", f"--pwfile={self.password_file}"]
        self._run(*args)
        if not self.fast:  # other machines (the Ray workers) connect with the password
            with open(self.data / "pg_hba.conf", "a") as fh:
                fh.write("host all all 0.0.0.0/0 scram-sha-256\nhost all all ::/0 scram-sha-256\n")

    def start(self) -> Server:
        if not self.fast and _volatile(self.folder):
            raise RuntimeError(
                f"{self.folder} is in a temporary folder, which the system may clean or lose at a reboot, and the "
                "grades with it: give --dir a folder that is kept (e.g. ~/genlab-gradebook), or --fast for a "
                "throw-away server"
            )
        self.folder.mkdir(parents=True, exist_ok=True)
        self._own(self.folder, 0o700)
        if not (self.data / "PG_VERSION").exists():
            self._initdb()
        settings = {"listen_addresses": self.listen, "max_connections": 200, **(FAST if self.fast else DURABLE)}
        options = f"-p {self.port} -k {self.folder} " + " ".join(f"-c {k}={v}" for k, v in settings.items())
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
            *("-h", str(self.folder), "-p", str(self.port), "-U", USER, "-d", "postgres"),
            *("-tAc", f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"),
        )
        if created.stdout.strip() != "1":
            self._run("createdb", "-h", str(self.folder), "-p", str(self.port), "-U", USER, DATABASE)
        return self

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            # a fast server has nothing to keep; a durable one shuts down cleanly, its last commits on disk
            self._run(
                "pg_ctl", "-D", str(self.data), "-m", "immediate" if self.fast else "fast", "-w", "stop", check=False
            )

    def reset(self) -> None:
        """An empty ``genlab`` database (between tests)."""
        for args in (("dropdb", "--if-exists", "--force"), ("createdb",)):
            self._run(*args, "-h", str(self.folder), "-p", str(self.port), "-U", USER, DATABASE)


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


def start(folder: Path, port: int | None = None, *, fast: bool = False, listen: str = "127.0.0.1") -> Server:
    """Start (making it first if needed) a private server in ``folder``; its URL is ``.url``."""
    folder = Path(folder)
    if port is None:
        recorded = folder / "port"
        port = int(recorded.read_text()) if recorded.exists() else _free_port()
    server = Server(folder, port, fast=fast, listen=listen)
    if (server.data / "postmaster.pid").exists() and _answers(port):
        return server
    return server.start()


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def stop(folder: Path) -> None:
    folder = Path(folder)
    port = int((folder / "port").read_text()) if (folder / "port").exists() else 0
    Server(folder, port).stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("--dir", type=Path, required=True, help="the server's folder (a durable one: not under /tmp)")
    parser.add_argument("--port", type=int, help="its port (default: a free one at the first start, then the same)")
    parser.add_argument(
        "--listen",
        default="127.0.0.1",
        help="addresses to listen on (default 127.0.0.1; 0.0.0.0 lets Ray workers on other machines connect)",
    )
    parser.add_argument("--fast", action="store_true", help="no fsync, no password on 127.0.0.1: for tests only")
    args = parser.parse_args(argv)
    try:
        if args.action == "start":
            server = start(args.dir, args.port, fast=args.fast, listen=args.listen)
            for _ in range(50):
                if _answers(server.port):
                    break
                time.sleep(0.1)
            print(f"export GENLAB_GRADEBOOK={server.url}")
            if not args.fast:
                print(f"export GENLAB_GRADEBOOK_PASSWORD_FILE={server.password_file.resolve()}")
        else:
            stop(args.dir)
            print(f"stopped the server in {args.dir}")
    except (PostgresMissing, RuntimeError) as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()
