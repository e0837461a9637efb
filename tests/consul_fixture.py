"""A real Consul agent for the formation, node and ops tests: ACLs on (default deny), loopback ports of its own.

Two shapes, as the suites need them:
- `-dev` (the default): state in memory, so a restart comes back empty, as after losing a single server;
- `persistent=True`: a single real server with its data on disk, so `restart()` keeps KV, sessions and ACLs
  (the formation suite restarts Consul mid-formation and expects the nodes to carry on).
"""
from __future__ import annotations

import base64
import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Optional

KV_PREFIX = "k8s-formation"
# A KV write with the master token only succeeds once a leader exists and ACLs are up.
READY_KEY = "consul-fixture/ready"
# Fixed so readiness can wait for the node in the catalog: sessions are refused until it is there.
PERSISTENT_NODE_NAME = "formation-test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ConsulHTTPError(Exception):
    def __init__(self, code: int, body: str) -> None:
        super().__init__(f"{code}: {body}")
        self.code = code


class ConsulServer:
    """`with ConsulServer(binary, workdir) as consul:` starts it and stops it; so do `start()` and `stop()`.

    bootstrap_acl=False configures no master token: the ACL system is left for the test (the bastion role)
    to bootstrap. bind, client_addrs, http_port and prefix_cmd let a test run it inside another network
    namespace (prefix_cmd `nsenter ...`) at a fixed address; the last client address is the one this
    process can reach.
    """

    def __init__(self, binary: str, workdir: Path, *, persistent: bool = False, master_token: Optional[str] = None,
                 bootstrap_acl: bool = True, bind: str = "127.0.0.1", client_addrs: tuple[str, ...] = (),
                 http_port: Optional[int] = None, prefix_cmd: tuple[str, ...] = ()) -> None:
        if master_token and not bootstrap_acl:
            raise ValueError("a master token bootstraps the ACL system")
        if persistent and not bootstrap_acl:
            raise ValueError("the persistent server's own agent token is the master token")
        self.binary = binary
        self.workdir = workdir
        self.persistent = persistent
        self.master_token = (master_token or str(uuid.uuid4())) if bootstrap_acl else ""
        self.bind = bind
        self.client_addrs = client_addrs or (bind,)
        self.prefix_cmd = prefix_cmd
        self.http_port = http_port or free_port()
        self.http_addr = f"{self.client_addrs[-1]}:{self.http_port}"
        # Chosen once, so a restart comes back where clients already point.
        self.ports = {"http": self.http_port, "dns": -1, "grpc": -1, "serf_lan": free_port(),
                      "serf_wan": free_port(), "server": free_port()}
        # The ops suite's read-only token for the tools under test, once it has made one.
        self.operator_token = ""
        self.proc: Optional[subprocess.Popen] = None
        self.log = workdir / "consul.log"
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "consul.json"
        self.config.write_text(json.dumps(self._config()))
        self.config.chmod(0o600)  # it holds the master token

    @property
    def url(self) -> str:
        return f"http://{self.http_addr}"

    def _config(self) -> dict:
        acl: dict = {"enabled": True, "default_policy": "deny"}
        if self.master_token:
            acl["tokens"] = {"master": self.master_token}
        config = {"bind_addr": self.bind, "client_addr": " ".join(self.client_addrs), "ports": self.ports,
                  "acl": acl, "log_level": "warn", "disable_update_check": True}
        if not self.persistent:
            acl["enable_token_persistence"] = False
            return config
        # Without an agent token default-deny keeps the server's own node out of the catalog.
        acl["tokens"]["agent"] = self.master_token
        acl.update(down_policy="extend-cache", enable_token_persistence=True)
        config.update(node_name=PERSISTENT_NODE_NAME, datacenter="dc1", server=True, bootstrap_expect=1,
                      data_dir=str(self.workdir / "data"), advertise_addr=self.bind,
                      performance={"raft_multiplier": 1})
        return config

    def _argv(self) -> list[str]:
        mode = [] if self.persistent else ["-dev"]
        return [*self.prefix_cmd, self.binary, "agent", *mode, "-config-file", str(self.config)]

    def __enter__(self) -> "ConsulServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self, timeout: float = 60.0) -> "ConsulServer":
        with self.log.open("ab") as log:
            # Own session: signals meant for the test's process group leave Consul alone.
            self.proc = subprocess.Popen(self._argv(), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"consul exited {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            if self._ready():
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"consul not ready after {timeout}s: {self.log.read_text()[-2000:]}")
            time.sleep(0.2)

    def _ready(self) -> bool:
        try:
            if not self.call("GET", "/v1/status/leader"):
                return False
            if not self.master_token:
                return True  # un-bootstrapped ACLs refuse anything more
            self.put(READY_KEY, "1")
            return not self.persistent or self.call("GET", f"/v1/catalog/node/{PERSISTENT_NODE_NAME}") is not None
        except (ConsulHTTPError, OSError):
            return False

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def call(self, method: str, path: str, body=None, token: Optional[str] = None):
        """The decoded JSON answer; a dict or list body is sent as JSON, bytes as they are."""
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

    # KV, with the master token -------------------------------------------------
    def put(self, key: str, value: dict | str) -> None:
        raw = value if isinstance(value, str) else json.dumps(value)
        assert self.call("PUT", f"/v1/kv/{key}", raw.encode()) is True

    def get(self, key: str) -> Optional[bytes]:
        try:
            items = self.call("GET", f"/v1/kv/{key}")
        except ConsulHTTPError as err:
            if err.code == 404:
                return None
            raise
        return base64.b64decode(items[0].get("Value") or "")

    def get_json(self, key: str):
        """None for a missing key or an empty value."""
        raw = self.get(key)
        return json.loads(raw) if raw else None

    def get_json_tree(self, prefix: str) -> dict:
        """key -> decoded value, None where a value is empty or not JSON."""
        try:
            items = self.call("GET", f"/v1/kv/{prefix}?recurse=true")
        except ConsulHTTPError as err:
            if err.code == 404:
                return {}
            raise
        tree = {}
        for item in items:
            raw = item.get("Value")
            try:
                tree[item["Key"]] = json.loads(base64.b64decode(raw)) if raw else None
            except ValueError:
                tree[item["Key"]] = None
        return tree

    def delete_tree(self, prefix: str) -> None:
        self.call("DELETE", f"/v1/kv/{prefix}?recurse=true")

    # ACL tokens ----------------------------------------------------------------
    def create_token(self, policy: str, rules: str, secret: Optional[str] = None, description: str = "") -> str:
        """A policy with these rules and a token holding it; returns the token's SecretID."""
        self.call("PUT", "/v1/acl/policy", {"Name": policy, "Rules": rules})
        token: dict = {"Policies": [{"Name": policy}]}
        if secret:
            token["SecretID"] = secret
        if description:
            token["Description"] = description
        return self.call("PUT", "/v1/acl/token", token)["SecretID"]

    def create_cluster_token(self, cluster: str, secret: Optional[str] = None) -> str:
        """What the bastion does: write on the cluster's KV prefix and on sessions, nothing else."""
        rules = (f'key_prefix "{KV_PREFIX}/{cluster}/" {{ policy = "write" }}\n'
                 'session_prefix "" { policy = "write" }\n')
        return self.create_token(f"k8s-formation-{cluster}", rules, secret or str(uuid.uuid4()),
                                 f"formation {cluster}")

    def create_read_token(self, prefix: str) -> str:
        """What an operator should hold: read on the cluster's prefix, nothing else."""
        return self.create_token(f"ops-read-{uuid.uuid4().hex[:8]}", f'key_prefix "{prefix}" {{ policy = "read" }}')
