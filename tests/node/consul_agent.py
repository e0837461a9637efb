"""A real Consul agent (`consul agent -dev`) on loopback ports of its own, ACLs default-deny."""
from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Optional


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ConsulHTTPError(Exception):
    def __init__(self, code: int, body: str) -> None:
        super().__init__(f"{code}: {body}")
        self.code = code


@dataclass
class ConsulAgent:
    port: int
    proc: subprocess.Popen
    log: Path
    master_token: str = ""

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def call(self, method: str, path: str, body=None, token: Optional[str] = None):
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if token or self.master_token:
            req.add_header("X-Consul-Token", token or self.master_token)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as err:
            raise ConsulHTTPError(err.code, err.read().decode(errors="replace")) from None
        return json.loads(raw) if raw else None

    def kv_json(self, key: str, token: Optional[str] = None):
        import base64
        try:
            items = self.call("GET", f"/v1/kv/{key}", token=token)
        except ConsulHTTPError as err:
            if err.code == 404:
                return None
            raise
        return json.loads(base64.b64decode(items[0]["Value"]))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_agent(binary: str, workdir: Path, master_token: str = "", timeout: float = 60.0) -> ConsulAgent:
    """Without `master_token` the ACL system is left un-bootstrapped (the bastion role bootstraps it)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    acl: dict = {"enabled": True, "default_policy": "deny", "enable_token_persistence": False}
    if master_token:
        acl["tokens"] = {"master": master_token}
    config = {
        "bind_addr": "127.0.0.1",
        "client_addr": "127.0.0.1",
        "ports": {"http": port, "dns": -1, "grpc": -1, "serf_lan": free_port(), "serf_wan": free_port(),
                  "server": free_port()},
        "acl": acl,
        "log_level": "warn",
        "disable_update_check": True,
    }
    cfg = workdir / "consul.json"
    cfg.write_text(json.dumps(config))
    cfg.chmod(0o600)
    log = workdir / "consul.log"
    proc = subprocess.Popen([binary, "agent", "-dev", "-config-file", str(cfg)],
                            stdin=subprocess.DEVNULL, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    agent = ConsulAgent(port, proc, log, master_token)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"consul exited {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            leader = agent.call("GET", "/v1/status/leader")
            if leader:
                if not master_token:
                    return agent
                # With a master token: ready once ACLs accept writes.
                agent.call("PUT", "/v1/kv/node-test/ready", b"1")
                return agent
        except (ConsulHTTPError, urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            agent.stop()
            raise RuntimeError(f"consul not ready after {timeout}s: {log.read_text()[-2000:]}")
        time.sleep(0.2)
