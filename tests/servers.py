"""Real servers for tests: redis-server and PostgreSQL on free loopback ports.

Each helper starts the server as a child process in a temporary directory, waits until it
answers (with a deadline), and stops it by PID. No mocks: these are Debian's own binaries.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02, what: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@dataclass
class RedisServer:
    """A redis-server child process; ``url`` points at it."""

    directory: Path
    port: int = 0
    extra: list[str] = field(default_factory=list)
    proc: subprocess.Popen | None = None
    password: str | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> "RedisServer":
        if not shutil.which("redis-server"):
            raise RuntimeError("redis-server not found: apt-get install -y redis-server")
        if not self.port:
            self.port = free_port()
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [
            "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.directory),
            "--save",
            "",
            "--appendonly",
            "no",
            "--maxmemory-policy",
            "noeviction",
        ]
        if self.password:
            args += ["--requirepass", self.password]
        args += self.extra
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self.ping, timeout, what=f"redis-server on port {self.port}")
        return self

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                if self.password:
                    s.sendall(f"AUTH {self.password}\r\n".encode())
                    s.recv(64)
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)

    def stop(self) -> None:
        self.kill(signal.SIGTERM)


class RedisClusterNodes:
    """Three redis-server masters with cluster mode on (``--cluster-enabled yes``), on free
    loopback ports (client and bus), slots split evenly with CLUSTER ADDSLOTSRANGE and the
    nodes joined with CLUSTER MEET (faster than ``redis-cli --cluster create``)."""

    def __init__(self, base: Path) -> None:
        self.servers = []
        self.bus: list[int] = []
        for i in range(3):
            port, bus = free_port(), free_port()
            d = base / f"n{i}"
            self.bus.append(bus)
            self.servers.append(
                RedisServer(
                    d,
                    port=port,
                    extra=[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        str(d / "nodes.conf"),
                        "--cluster-port",
                        str(bus),
                        "--cluster-node-timeout",
                        "5000",
                    ],
                )
            )

    def start(self) -> "RedisClusterNodes":
        import redis

        for s in self.servers:
            s.start()
        conns = [redis.Redis(port=s.port) for s in self.servers]
        bounds = [0, 5461, 10923, 16384]
        for i, c in enumerate(conns):
            c.execute_command("CLUSTER", "ADDSLOTSRANGE", bounds[i], bounds[i + 1] - 1)
        for s, bus in zip(self.servers[1:], self.bus[1:]):
            conns[0].execute_command("CLUSTER", "MEET", "127.0.0.1", s.port, bus)

        def ready() -> bool:
            for c in conns:
                info = c.execute_command("CLUSTER", "INFO").decode()
                if "cluster_state:ok" not in info or "cluster_known_nodes:3" not in info:
                    return False
            return True

        wait_for(ready, 20, interval=0.05, what="the 3-master cluster to be ok")
        for c in conns:
            c.close()
        return self

    def client(self):
        """A ``redis.cluster.RedisCluster`` on these nodes."""
        from redis.cluster import ClusterNode, RedisCluster

        return RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", s.port) for s in self.servers])

    def stop(self) -> None:
        for s in self.servers:
            s.kill()


@dataclass
class PostgresServer:
    """A PostgreSQL cluster made with initdb in a temp dir, served by pg_ctl on a free port."""

    directory: Path
    port: int = 0

    @property
    def dsn(self) -> str:
        return f"postgresql://plankton@127.0.0.1:{self.port}/postgres"

    @staticmethod
    def bindir() -> Path:
        base = Path("/usr/lib/postgresql")
        if base.exists():
            versions = sorted(base.iterdir(), key=lambda p: int(p.name) if p.name.isdigit() else 0)
            if versions:
                return versions[-1] / "bin"
        found = shutil.which("initdb")
        if found:
            return Path(found).parent
        raise RuntimeError("PostgreSQL not found: apt-get install -y postgresql")

    def _run(self, *args: str) -> None:
        cmd = [str(self.bindir() / args[0]), *args[1:]]
        if os.geteuid() == 0:
            # PostgreSQL refuses to run as root: run its tools as the 'postgres' user.
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr.strip()}")

    def start(self) -> "PostgresServer":
        if not self.port:
            self.port = free_port()
        if os.geteuid() == 0:
            # pytest's temp dirs are private to root; the postgres user needs its own.
            self.directory = Path(tempfile.mkdtemp(prefix="plankton-pg-"))
            shutil.chown(self.directory, "postgres", "postgres")
        self.directory.mkdir(parents=True, exist_ok=True)
        data = self.directory / "data"
        self._run("initdb", "-D", str(data), "-U", "plankton", "--auth=trust", "-E", "UTF8")
        self._run(
            "pg_ctl",
            "-D",
            str(data),
            "-l",
            str(self.directory / "pg.log"),
            "-w",
            "-o",
            f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off",
            "start",
        )
        return self

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.directory / "data"), "-m", "immediate", "stop")
        except RuntimeError:
            pass
        if os.geteuid() == 0:
            shutil.rmtree(self.directory, ignore_errors=True)
