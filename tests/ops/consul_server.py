"""A real Consul 1.8.7 agent for the ops tests: dev mode, ACLs on (default deny), own ports."""
from __future__ import annotations

import base64
import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Optional


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ConsulServer:
    http_addr: str  # host:port as the operator tools are given it
    master_token: str
    proc: subprocess.Popen
    log: Path
    operator_token: str = ""

    @property
    def url(self) -> str:
        return f"http://{self.http_addr}"

    def call(self, method: str, path: str, body: Optional[bytes] = None, token: Optional[str] = None):
        req = urllib.request.Request(self.url + path, data=body, method=method)
        req.add_header("X-Consul-Token", token or self.master_token)
        with urllib.request.urlopen(req, timeout=10) as resp:
            data = resp.read()
        return json.loads(data) if data else None

    def put(self, key: str, value: dict | str) -> None:
        raw = value if isinstance(value, str) else json.dumps(value)
        assert self.call("PUT", f"/v1/kv/{key}", raw.encode()) is True

    def delete_tree(self, prefix: str) -> None:
        self.call("DELETE", f"/v1/kv/{prefix}?recurse=true")

    def get(self, key: str):
        try:
            items = self.call("GET", f"/v1/kv/{key}")
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise
        return base64.b64decode(items[0]["Value"])

    def make_read_token(self, prefix: str) -> str:
        """What an operator should hold: read on the cluster's prefix, nothing else."""
        name = f"ops-read-{uuid.uuid4().hex[:8]}"
        rules = f'key_prefix "{prefix}" {{ policy = "read" }}'
        self.call("PUT", "/v1/acl/policy", json.dumps({"Name": name, "Rules": rules}).encode())
        token = self.call("PUT", "/v1/acl/token", json.dumps({"Policies": [{"Name": name}]}).encode())
        return token["SecretID"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_consul(binary: str, workdir: Path, bind: str = "127.0.0.1", http_port: Optional[int] = None,
                 prefix_cmd: tuple[str, ...] = (), timeout: float = 60.0,
                 master_token: Optional[str] = None, client_addrs: tuple[str, ...] = ()) -> ConsulServer:
    """Start `consul agent -dev` with every port chosen here, so parallel suites never collide."""
    workdir.mkdir(parents=True, exist_ok=True)
    master = master_token or str(uuid.uuid4())
    http_port = http_port or free_port()
    config = {
        "bind_addr": bind,
        "client_addr": " ".join(client_addrs or (bind,)),
        "ports": {"http": http_port, "dns": -1, "grpc": -1, "serf_lan": free_port(),
                  "serf_wan": free_port(), "server": free_port()},
        "acl": {"enabled": True, "default_policy": "deny", "enable_token_persistence": False,
                "tokens": {"master": master}},
        "log_level": "warn",
    }
    cfg = workdir / "consul.json"
    cfg.write_text(json.dumps(config))
    cfg.chmod(0o600)
    log = workdir / "consul.log"
    proc = subprocess.Popen([*prefix_cmd, binary, "agent", "-dev", "-config-file", str(cfg)],
                            stdin=subprocess.DEVNULL, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    # The last client address is the one this test process can reach.
    server = ConsulServer(f"{(client_addrs or (bind,))[-1]}:{http_port}", master, proc, log)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"consul exited {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            # A KV write with the master token only succeeds once a leader exists and ACLs are up.
            server.put("ops-test/ready", "1")
            return server
        except (urllib.error.URLError, OSError):
            if time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(f"consul not ready after {timeout}s: {log.read_text()[-2000:]}")
            time.sleep(0.2)
