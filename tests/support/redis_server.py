"""A real `redis-server` on a free loopback port, which a test can stop and restart."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import require_tool


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """One redis-server process without persistence; `stop` and `start` keep its port."""

    def __init__(self, directory: Path, *, password: str | None = None, cluster: bool = False) -> None:
        self.binary = require_tool("redis-server")
        self.directory = directory
        self.password = password
        self.cluster = cluster
        self.port = free_port()
        self.bus_port = free_port() if cluster else 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The URL alertd connects with (with the password, if any)."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        args += ["--dir", str(self.directory), "--daemonize", "no", "--loglevel", "warning"]
        if self.password:
            args += ["--requirepass", self.password]
        if self.cluster:
            args += ["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{self.port}.conf"]
            args += ["--cluster-port", str(self.bus_port)]  # PORT + 10000 may be past 65535
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(64):
                        return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        """Kill the server (SIGKILL: an abrupt outage) and wait for it to exit."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None


@contextmanager
def redis_server(directory: Path, *, password: str | None = None) -> Iterator[RedisServer]:
    """A started RedisServer, stopped on exit."""
    server = RedisServer(directory, password=password)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def redis_cluster(directory: Path, masters: int = 3) -> Iterator[list[RedisServer]]:
    """A Redis Cluster of `masters` real redis-server processes (no replicas), all slots assigned."""
    cli = require_tool("redis-cli")
    nodes = [RedisServer(directory, cluster=True) for _ in range(masters)]
    try:
        for node in nodes:
            node.start()
        # Slots and MEET by hand: `redis-cli --cluster create` waits whole seconds between its steps.
        per_node = 16384 // masters
        for i, node in enumerate(nodes):
            last = 16383 if i == masters - 1 else (i + 1) * per_node - 1
            _cli(cli, node, "cluster", "addslotsrange", str(i * per_node), str(last))
            if i:
                _cli(cli, nodes[0], "cluster", "meet", "127.0.0.1", str(node.port), str(node.bus_port))
        deadline = time.monotonic() + 15
        while True:
            states = [_cli(cli, node, "cluster", "info") for node in nodes]
            if all(b"cluster_state:ok" in state for state in states):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the Redis Cluster did not become ready")
            time.sleep(0.05)
        yield nodes
    finally:
        for node in nodes:
            node.stop()


def _cli(cli: str, node: RedisServer, *args: str) -> bytes:
    result = subprocess.run([cli, "-p", str(node.port), *args], check=True, capture_output=True, timeout=5)
    if result.stdout.startswith(b"ERR"):
        raise RuntimeError(result.stdout.decode())
    return result.stdout
