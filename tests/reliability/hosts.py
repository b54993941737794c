"""A multi-host test bed: network-namespace "hosts" on one bridge, and Redis HA across them.

Each :class:`Host` is a network namespace joined to a bridge in the root namespace by a veth
pair, with a loopback-range address (127.79.X.0/24, ``route_localnet`` per interface, as the
partition test and RELIABILITY §7's harness notes do: no Docker, root only). Processes run on
a host through ``ip netns exec``; a worker also gets its own PID and UTS namespace (its own
host name; SIGKILL of its ``unshare`` kills all of it). :meth:`Host.cut` downs the bridge's
end of the host's veth: the host's packets are silently dropped, as in a real partition.

:class:`RedisHA` puts a master, a replica and three sentinels on the hosts (password on every
Redis, ``masterauth`` so a restarted old master can follow the new one) and gives the
``redis+sentinel://`` URL every Plankton process takes. Used by
``tests/reliability/test_failover.py`` and ``benchmarks/scale_hosts.py``.

Needs root, iproute2, util-linux (``unshare``) and procps (``sysctl``): :func:`skip_reason`.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from tests.cluster import FAST, ROOT, kill_groups
from tests.servers import free_port, wait_for

SERVICE = "pkmaster"


def skip_reason() -> str | None:
    """Why the bed cannot be built here, or None."""
    if os.geteuid() != 0:
        return "the multi-host bed needs root (ip netns, bridge, veth)"
    for tool in ("ip", "unshare", "sysctl", "redis-server"):
        if not shutil.which(tool):
            return f"the multi-host bed needs `{tool}`"
    return None


def _run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(list(cmd), capture_output=True, text=True, timeout=20)
    if check and done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


@dataclass
class Host:
    """One network namespace on the bridge."""

    name: str
    ip: str
    dev_root: str
    dev_ns: str

    def cmd(self, *args: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *args]

    def cut(self) -> None:
        """Partition the host: its packets are dropped (no reset, no refusal)."""
        _run("ip", "link", "set", self.dev_root, "down")

    def heal(self) -> None:
        _run("ip", "link", "set", self.dev_root, "up")


@dataclass
class Bed:
    """``n`` hosts on a bridge; every process started through it is killed at close()."""

    n: int
    log_dir: Path
    tag: str = field(default_factory=lambda: str(os.getpid()))
    hosts: list[Host] = field(default_factory=list)
    procs: list[subprocess.Popen] = field(default_factory=list)
    files: list = field(default_factory=list)

    @property
    def bridge(self) -> str:
        return f"pkb{self.tag}"

    @property
    def gateway(self) -> str:
        """The root namespace's address on the bridge (the test process talks through it)."""
        return f"{self.prefix}.1"

    @property
    def prefix(self) -> str:
        return f"127.79.{int(self.tag) % 250 + 1}"

    def open(self) -> "Bed":
        self.close_net()
        _run("ip", "link", "add", self.bridge, "type", "bridge")
        _run("ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _run("ip", "link", "set", self.bridge, "up")
        _run("sysctl", "-qw", f"net.ipv4.conf.{self.bridge}.route_localnet=1")
        for i in range(self.n):
            host = Host(
                f"pkh{self.tag}-{i}",
                f"{self.prefix}.{10 + i}",
                f"pk{self.tag}h{i}r",
                f"pk{self.tag}h{i}n",
            )
            _run("ip", "netns", "add", host.name)
            _run("ip", "link", "add", host.dev_root, "type", "veth", "peer", "name", host.dev_ns)
            _run("ip", "link", "set", host.dev_root, "master", self.bridge)
            _run("ip", "link", "set", host.dev_root, "up")
            _run("sysctl", "-qw", f"net.ipv4.conf.{host.dev_root}.route_localnet=1")
            _run("ip", "link", "set", host.dev_ns, "netns", host.name)
            _run(*host.cmd("ip", "addr", "add", f"{host.ip}/24", "dev", host.dev_ns))
            _run(*host.cmd("ip", "link", "set", host.dev_ns, "up"))
            _run(*host.cmd("ip", "link", "set", "lo", "up"))
            _run(*host.cmd("sysctl", "-qw", "net.ipv4.conf.all.route_localnet=1"))
            _run(*host.cmd("sysctl", "-qw", f"net.ipv4.conf.{host.dev_ns}.route_localnet=1"))
            self.hosts.append(host)
        return self

    def start(
        self, host: Host | None, args: list[str], name: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen:
        """Start ``args`` on ``host`` (None: the root namespace), output to ``name``.log."""
        out = open(self.log_dir / f"{name}.log", "ab")
        self.files.append(out)
        cmd = host.cmd(*args) if host else list(args)
        proc = subprocess.Popen(
            cmd, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.procs.append(proc)
        return proc

    def plankton_env(self, url: str, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PLANKTON_")}
        env.update(FAST)
        env.update(extra)
        env["PLANKTON_REDIS_URL"] = url
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        return env

    def worker(
        self, host: Host, url: str, name: str, imports: list[str], *args: str, **extra: str
    ) -> subprocess.Popen:
        """``python -m workers`` on ``host``, as PID 1 of its own PID namespace, with the
        host's name as its host name."""
        rehost = (
            "import os, socket, sys; socket.sethostname(sys.argv[1]); "
            "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])"
        )
        imp = [a for m in imports for a in ("--import", m)]
        return self.start(
            host,
            [
                "unshare",
                "--pid",
                "--uts",
                "--fork",
                "--kill-child",
                sys.executable,
                "-c",
                rehost,
                host.name,
                "-m",
                "workers",
                *imp,
                "--name",
                name,
                *args,
            ],
            name,
            self.plankton_env(url, **extra),
        )

    def scheduler(
        self, host: Host, url: str, name: str, imports: list[str], **extra: str
    ) -> subprocess.Popen:
        imp = [a for m in imports for a in ("--import", m)]
        return self.start(
            host,
            [sys.executable, "-m", "scheduler", *imp, "--name", name],
            name,
            self.plankton_env(url, **extra),
        )

    def close_net(self) -> None:
        for i in range(max(self.n, len(self.hosts))):
            _run("ip", "link", "del", f"pk{self.tag}h{i}r", check=False)
            _run("ip", "netns", "del", f"pkh{self.tag}-{i}", check=False)
        _run("ip", "link", "del", self.bridge, check=False)

    def close(self) -> None:
        kill_groups(self.procs)
        for fh in self.files:
            fh.close()
        self.close_net()


@dataclass
class Node:
    """One redis-server or redis-sentinel of the bed."""

    host: Host
    port: int
    proc: subprocess.Popen | None = None

    @property
    def addr(self) -> str:
        return f"{self.host.ip}:{self.port}"


@dataclass
class RedisHA:
    """Master on hosts[0], replica on hosts[1], sentinels on hosts[0..2] (quorum 2)."""

    bed: Bed
    password: str = field(default_factory=lambda: f"pw{os.getpid()}")
    #: Sentinel's down-after-milliseconds: how long a silent master takes to be voted down.
    down_after_ms: int = 1000
    nodes: list[Node] = field(default_factory=list)
    sentinels: list[Node] = field(default_factory=list)

    @property
    def url(self) -> str:
        hosts = ",".join(s.addr for s in self.sentinels)
        return f"redis+sentinel://:{self.password}@{hosts}/{SERVICE}/0"

    def node_url(self, node: Node) -> str:
        return f"redis://:{self.password}@{node.addr}/0"

    def start(self) -> "RedisHA":
        h = self.bed.hosts
        master, replica = Node(h[0], free_port()), Node(h[1], free_port())
        self.nodes = [master, replica]
        self.start_node(master)
        self.start_node(replica, replica_of=master)
        wait_for(lambda: self.link_up(replica), 15, what="the replica to sync")
        for i in range(3):
            node = Node(h[i], free_port())
            conf = self.bed.log_dir / f"sentinel{i}.conf"
            conf.write_text(
                "\n".join(
                    [
                        f"port {node.port}",
                        f"bind {node.host.ip}",
                        "protected-mode no",
                        f"dir {self.bed.log_dir}",
                        f"sentinel monitor {SERVICE} {master.host.ip} {master.port} 2",
                        f"sentinel auth-pass {SERVICE} {self.password}",
                        f"sentinel down-after-milliseconds {SERVICE} {self.down_after_ms}",
                        f"sentinel failover-timeout {SERVICE} 4000",
                        f"sentinel parallel-syncs {SERVICE} 1",
                        "",
                    ]
                )
            )
            node.proc = self.bed.start(
                node.host, ["redis-server", str(conf), "--sentinel"], f"sentinel{i}"
            )
            self.sentinels.append(node)
        for s in self.sentinels:
            wait_for(
                lambda s=s: self._sentinel_ready(s),
                15,
                what=f"sentinel {s.addr} to see the master and its replica",
            )
        return self

    def start_node(self, node: Node, replica_of: Node | None = None) -> None:
        args = [
            "redis-server",
            "--bind",
            node.host.ip,
            "--port",
            str(node.port),
            "--requirepass",
            self.password,
            "--masterauth",
            self.password,
            "--save",
            "",
            "--appendonly",
            "no",
            "--maxmemory-policy",
            "noeviction",
            "--repl-diskless-sync-delay",
            "0",
            "--dir",
            str(self.bed.log_dir),
            "--dbfilename",
            f"dump-{node.port}.rdb",
        ]
        if replica_of is not None:
            args += ["--replicaof", replica_of.host.ip, str(replica_of.port)]
        node.proc = self.bed.start(node.host, args, f"redis-{node.port}")
        wait_for(lambda: self._ping(node), 10, what=f"redis-server {node.addr}")

    def conn(self, node: Node) -> redis.Redis:
        return redis.Redis(
            node.host.ip,
            node.port,
            password=self.password,
            socket_timeout=2,
            socket_connect_timeout=2,
        )

    def _ping(self, node: Node) -> bool:
        try:
            with self.conn(node) as c:
                return bool(c.ping())
        except redis.RedisError:
            return False

    def link_up(self, node: Node) -> bool:
        try:
            with self.conn(node) as c:
                info = c.info("replication")
        except redis.RedisError:
            return False
        return info.get("role") == "slave" and info.get("master_link_status") == "up"

    def _sentinel_ready(self, s: Node) -> bool:
        try:
            with redis.Redis(s.host.ip, s.port, socket_timeout=2) as c:
                state = c.sentinel_master(SERVICE)
        except redis.RedisError:
            return False
        return (
            int(state.get("num-slaves", 0)) >= 1 and int(state.get("num-other-sentinels", 0)) >= 2
        )

    def master_addr(self) -> str | None:
        """The master as the sentinels report it (``ip:port``)."""
        for s in self.sentinels:
            try:
                with redis.Redis(s.host.ip, s.port, socket_timeout=1) as c:
                    ip, port = c.sentinel_get_master_addr_by_name(SERVICE)
                return f"{ip.decode() if isinstance(ip, bytes) else ip}:{int(port)}"
            except (redis.RedisError, TypeError):
                continue
        return None

    def master(self) -> Node:
        addr = self.master_addr()
        return next(n for n in self.nodes if n.addr == addr)

    def kill(self, node: Node) -> None:
        """SIGKILL one redis-server, by PID."""
        if node.proc and node.proc.poll() is None:
            node.proc.send_signal(signal.SIGKILL)
            node.proc.wait(10)

    def wait_failover(self, old: Node, timeout: float = 30) -> Node:
        """Wait until the sentinels name another master and it answers as one."""

        def moved() -> Node | None:
            addr = self.master_addr()
            if addr and addr != old.addr:
                node = next(n for n in self.nodes if n.addr == addr)
                try:
                    with self.conn(node) as c:
                        if c.info("replication").get("role") == "master":
                            return node
                except redis.RedisError:
                    return None
            return None

        return wait_for(moved, timeout, interval=0.01, what="the sentinels to fail over")


def now_ms() -> int:
    return int(time.time() * 1000)
