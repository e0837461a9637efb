#!/usr/bin/env python3
"""Consul-locked kubeadm formation for one node (control plane or worker).

Stdlib only: it runs on the node's system python3 (Ubuntu 22.04/24.04) before anything else is installed.
The protocol is described in docs/formation.md; in short: a renewed Consul session per node, one init lock,
join material + `initialized` published in one transaction, a serialised control-plane join lock, blocking
queries for every wait, and bounded retries.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

PHASES = ("booting", "provisioning", "waiting-for-lock", "initializing", "waiting-for-initialized",
          "joining", "joined", "failed")
RESULT_CHANGED = "k8s-formation: result=changed"
RESULT_UNCHANGED = "k8s-formation: result=unchanged"

EXIT_FAILED = 1
EXIT_FORBIDDEN = 3
EXIT_UNAVAILABLE = 4

TOKEN_RE = re.compile(r"\b[a-z0-9]{6}\.[a-z0-9]{16}\b")
HASH_RE = re.compile(r"sha256:[a-fA-F0-9]{64}")
HEX64_RE = re.compile(r"\b[a-fA-F0-9]{64}\b")
UUID_RE = re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b")

_KNOWN_SECRETS: set[str] = set()


def scrub(text: str | None) -> str:
    """Removes anything shaped like a bootstrap token, CA hash, certificate key or Consul token."""
    if not text:
        return ""
    for secret in _KNOWN_SECRETS:
        if secret:
            text = text.replace(secret, "<redacted>")
    for pattern in (HASH_RE, TOKEN_RE, HEX64_RE, UUID_RE):
        text = pattern.sub("<redacted>", text)
    return text


def remember_secret(*values: str | None) -> None:
    for value in values:
        if value:
            _KNOWN_SECRETS.add(value)


class Log:
    def __init__(self, node: str) -> None:
        self.node = node

    def __call__(self, msg: str) -> None:
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
        print(f"{stamp} k8s-formation[{self.node}] {scrub(msg)}", file=sys.stderr, flush=True)


class FormationError(Exception):
    """The formation cannot complete on this node; recorded as phase `failed`."""


class ConsulError(Exception):
    pass


class ConsulForbidden(ConsulError):
    """403: the token is unknown or lacks a permission. Retrying cannot help."""


class ConsulUnavailable(ConsulError):
    """Consul unreachable or answering 5xx for longer than the retry budget."""


class LockLost(Exception):
    """Our session died while we held a lock: whatever we were doing under it must be undone."""


# --------------------------------------------------------------------------- Consul HTTP API

class Consul:
    def __init__(self, addresses: list[str], scheme: str, token: str, retries: int, backoff: float,
                 backoff_cap: float, log: Log) -> None:
        if not addresses:
            raise FormationError("no Consul address configured")
        self.addresses = list(addresses)
        self.scheme = scheme
        self.token = token
        self.retries = retries
        self.backoff = backoff
        self.backoff_cap = backoff_cap
        self.log = log
        self.last_outage = -1e9
        remember_secret(token)

    def recent_outage(self) -> bool:
        return time.monotonic() - self.last_outage < 120

    def request(self, method: str, path: str, query: dict | None = None, body: bytes | None = None,
                timeout: float = 10.0, retries: int | None = None) -> tuple[int, dict, bytes]:
        """Returns (status, headers, body) for 2xx/404/409; retries connection errors and 5xx."""
        retries = self.retries if retries is None else retries
        qs = ("?" + urllib.parse.urlencode(query)) if query else ""
        last = ""
        acl_retries = 0
        for attempt in range(retries + 1):
            addr = self.addresses[attempt % len(self.addresses)]
            req = urllib.request.Request(f"{self.scheme}://{addr}{path}{qs}", data=body, method=method)
            req.add_header("X-Consul-Token", self.token)
            try:
                with urllib.request.urlopen(req, timeout=timeout) as resp:
                    return resp.status, dict(resp.headers), resp.read()
            except urllib.error.HTTPError as err:
                payload = err.read()
                if err.code == 403:
                    detail = payload.decode(errors="replace").strip()
                    # A restarting server answers "ACL not found" until its state is restored: only that
                    # variant is retried (briefly, unless Consul was just unreachable); a token that lacks
                    # a permission ("Permission denied") fails at once.
                    budget = retries if self.recent_outage() else min(retries, 2)
                    if "ACL not found" not in detail or acl_retries >= budget:
                        raise ConsulForbidden(f"Consul rejected the token (HTTP 403: {detail}) "
                                              f"on {method} {path}") from None
                    acl_retries += 1
                    last = f"HTTP 403: {detail}"
                    time.sleep(acl_retries)
                    continue
                if err.code in (404, 409):
                    return err.code, dict(err.headers), payload
                if err.code < 500:
                    raise ConsulError(f"Consul {method} {path}: HTTP {err.code}: "
                                      f"{payload.decode(errors='replace').strip()}") from None
                last = f"HTTP {err.code}: {payload.decode(errors='replace').strip()}"
                self.last_outage = time.monotonic()
            except (urllib.error.URLError, ConnectionError, socket.timeout, TimeoutError, OSError) as err:
                last = str(getattr(err, "reason", err))
                self.last_outage = time.monotonic()
            if attempt < retries:
                delay = min(self.backoff_cap, self.backoff * (2 ** attempt)) * random.uniform(0.8, 1.2)
                self.log(f"consul {method} {path} failed ({last}); retry {attempt + 1}/{retries} in {delay:.1f}s")
                time.sleep(delay)
        raise ConsulUnavailable(f"Consul unreachable after {retries + 1} tries: {method} {path}: {last}")

    # KV ------------------------------------------------------------------
    def kv_get(self, key: str, index: int = 0, wait: float = 0.0) -> tuple[int, dict | None]:
        """Returns (X-Consul-Index, entry or None). With index>0 this is a blocking query."""
        query: dict = {}
        timeout = 10.0
        if index > 0 and wait > 0:
            query = {"index": str(index), "wait": f"{int(wait * 1000)}ms"}
            # Consul adds up to wait/16 of jitter to blocking queries.
            timeout = wait + wait / 16 + 10.0
        status, headers, body = self.request("GET", f"/v1/kv/{key}", query or None, timeout=timeout)
        new_index = int(headers.get("X-Consul-Index", "0") or 0)
        if status == 404:
            return new_index, None
        entries = json.loads(body)
        return new_index, entries[0] if entries else None

    def kv_keys(self, prefix: str) -> list[str]:
        status, _, body = self.request("GET", f"/v1/kv/{prefix}", {"keys": "true"})
        return [] if status == 404 else json.loads(body)

    def kv_put(self, key: str, value: bytes, **query: str) -> bool:
        status, _, body = self.request("PUT", f"/v1/kv/{key}", {k: str(v) for k, v in query.items()} or None,
                                       body=value)
        return status == 200 and body.strip() == b"true"

    def txn(self, ops: list[dict]) -> bool:
        status, _, body = self.request("PUT", "/v1/txn", body=json.dumps(ops).encode())
        if status == 200:
            return True
        if status == 409:
            return False
        raise ConsulError(f"txn failed: HTTP {status}: {body.decode(errors='replace')}")

    # Sessions --------------------------------------------------------------
    def session_create(self, name: str, ttl: int, lock_delay: float) -> str:
        payload = {"Name": name, "TTL": f"{ttl}s", "Behavior": "release", "LockDelay": f"{int(lock_delay * 1000)}ms"}
        status, _, body = self.request("PUT", "/v1/session/create", body=json.dumps(payload).encode())
        if status != 200:
            raise ConsulError(f"session create failed: HTTP {status}")
        return json.loads(body)["ID"]

    def session_renew(self, sid: str) -> bool:
        # One quick try: the renewer thread has its own cadence and must never block for long.
        status, _, _ = self.request("PUT", f"/v1/session/renew/{sid}", retries=0, timeout=3.0)
        return status == 200

    def session_destroy(self, sid: str) -> None:
        self.request("PUT", f"/v1/session/destroy/{sid}", retries=1, timeout=3.0)


def decode_value(entry: dict | None) -> dict | None:
    if not entry or not entry.get("Value"):
        return None
    try:
        return json.loads(base64.b64decode(entry["Value"]))
    except ValueError:
        return None


def encode(obj: dict) -> str:
    return base64.b64encode(json.dumps(obj, sort_keys=True).encode()).decode()


class Session:
    """A Consul session renewed by a background thread while this node works.

    `healthy()` is false once the session is gone or has not been renewed for `fence` seconds; Consul
    never invalidates a session earlier than its TTL after the last renewal, so work done under a lock
    is stopped (fenced) before another node can possibly take the lock over.
    """

    def __init__(self, consul: Consul, name: str, ttl: int, lock_delay: float, log: Log) -> None:
        self.consul, self.name, self.ttl, self.lock_delay, self.log = consul, name, ttl, lock_delay, log
        self.id: str | None = None
        self.last_ok = 0.0
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.fence = ttl * 0.75

    def ensure(self) -> str:
        if self.id is None or self.lost:
            started = time.monotonic()
            self.id = self.consul.session_create(self.name, self.ttl, self.lock_delay)
            self.last_ok = started
            self.lost = False
            self.log(f"consul session created (ttl {self.ttl}s)")
            if self._thread is None:
                self._thread = threading.Thread(target=self._renew_loop, daemon=True)
                self._thread.start()
        return self.id

    def healthy(self) -> bool:
        return self.id is not None and not self.lost and time.monotonic() - self.last_ok < self.fence

    def _renew_loop(self) -> None:
        interval = max(1.0, self.ttl / 5)
        while not self._stop.wait(interval):
            sid = self.id
            if sid is None or self.lost:
                continue
            started = time.monotonic()
            try:
                if self.consul.session_renew(sid):
                    self.last_ok = started
                    interval = max(1.0, self.ttl / 5)
                else:
                    self.log("consul session expired; locks held by it are gone")
                    self.lost = True
            except ConsulForbidden:
                self.lost = True
            except ConsulError:
                interval = 1.0  # renew quickly again while Consul is flaky

    def close(self) -> None:
        self._stop.set()
        if self.id and not self.lost:
            try:
                self.consul.session_destroy(self.id)
            except ConsulError:
                pass


# --------------------------------------------------------------------------- configuration

class Ctx:
    """Everything one run needs: node identity, paths, Consul handles, timing knobs."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.node = args.node or socket.gethostname()
        self.log = Log(self.node)
        with open(args.facts, encoding="utf-8") as fh:
            self.facts = json.load(fh)
        with open(args.secrets, encoding="utf-8") as fh:
            token = json.load(fh).get("consul_token", "")
        consul_facts = self.facts.get("consul", {})
        override = args.consul_addr or os.environ.get("K8S_FORMATION_CONSUL_ADDR", "")
        addresses = [a for a in override.split(",") if a] if override else list(consul_facts.get("addresses", []))
        self.consul = Consul(addresses, consul_facts.get("scheme", "http"), token, args.consul_retries,
                             args.backoff, args.backoff_cap, self.log)
        self.prefix = f"{consul_facts.get('kv_prefix', 'k8s-formation')}/{self.facts['cluster_name']}/"
        join = self.facts.get("join", {})
        self.token_ttl = float(join.get("token_ttl_hours", 24)) * 3600
        self.cert_key_ttl = float(join.get("certificate_key_ttl_hours", 2)) * 3600
        ep = self.facts["api_endpoint"]
        self.endpoint = f"{ep['host']}:{ep['port']}"
        self.kube_dir = args.kube_dir
        self.session = Session(self.consul, f"k8s-formation/{self.facts['cluster_name']}/{self.node}",
                               args.session_ttl, args.lock_delay, self.log)
        self.status = Status(self)
        self._polled = False

    def key(self, suffix: str) -> str:
        return self.prefix + suffix

    def joined(self) -> bool:
        return os.path.exists(os.path.join(self.kube_dir, "kubelet.conf"))

    def is_control_plane_member(self) -> bool:
        return os.path.exists(os.path.join(self.kube_dir, "admin.conf"))

    def wait_change(self, key: str, index: int, wait: float | None = None) -> int:
        """Waits until `key` changes after `index` (blocking query) or the wait elapses; returns the new index.

        --poll-interval N replaces this by the original write-up's sleep-and-poll loop (for comparison only).
        """
        wait = self.args.wait if wait is None else wait
        if self.args.poll_interval > 0:
            interval = self.args.poll_interval
            if not self._polled:
                # Real nodes boot at independent times, so their poll loops are out of phase.
                interval = random.uniform(0, interval)
                self._polled = True
            time.sleep(min(wait, interval))
            new_index, _ = self.consul.kv_get(key)
            return new_index
        new_index, _ = self.consul.kv_get(key, index=max(index, 1), wait=wait)
        # Consul's rule for blocking queries: an index that went backwards (e.g. after a snapshot
        # restore) resets the wait; 0 is never a valid wait index.
        return new_index if new_index >= index else 0


class Status:
    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx
        self.key = ctx.key(f"status/{ctx.node}")
        self.current: str | None = None

    def set(self, phase: str, error: str | None = None) -> None:
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}")
        if phase == self.current and not error:
            return  # waiters re-enter their phase on every wake-up; one record is enough
        args = self.ctx.args
        for _ in range(20):
            index, entry = self.ctx.consul.kv_get(self.key)
            now = time.time()
            rec = decode_value(entry) or {"node": self.ctx.node, "role": args.role, "pool": args.pool or "",
                                          "phase": None, "since": now, "history": [], "last_error": None}
            rec["node"] = self.ctx.node
            rec["role"] = args.role or rec.get("role") or ""
            rec["pool"] = args.pool if args.pool is not None else rec.get("pool", "")
            if rec.get("phase") != phase:
                rec["phase"] = phase
                rec["since"] = now
                rec["history"] = (rec.get("history") or [])[-49:] + [{"phase": phase, "at": now}]
            rec["updated"] = now
            if error:
                rec["last_error"] = scrub(error)[-2000:]
            elif phase == "joined":
                rec["last_error"] = None
            if self.ctx.consul.kv_put(self.key, json.dumps(rec, sort_keys=True).encode(),
                                      cas=str(entry["ModifyIndex"] if entry else 0)):
                if self.current != phase:
                    self.ctx.log(f"phase {phase}" + (f": {scrub(error)}" if error else ""))
                self.current = phase
                return
        raise ConsulError(f"could not update {self.key}: concurrent writers")


# --------------------------------------------------------------------------- kubeadm

class Kubeadm:
    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx
        self.bin = ctx.args.kubeadm
        self._child: subprocess.Popen | None = None

    def run(self, args: list[str], fenced: bool = False, timeout: float | None = None,
            on_start=None) -> tuple[int, str]:
        """Runs kubeadm; returns (rc, combined output). Output is never logged unscrubbed.

        fenced=True: the command runs under a lock; if our session dies it is killed and LockLost raised.
        """
        ctx = self.ctx
        timeout = timeout or ctx.args.kubeadm_timeout
        ctx.log(f"running kubeadm {' '.join(a for a in args if not a.startswith('/'))[:120]}")
        proc = subprocess.Popen([self.bin, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        self._child = proc
        if on_start:
            # Status bookkeeping overlaps kubeadm instead of delaying it.
            on_start()
        deadline = time.monotonic() + timeout
        chunks: list[bytes] = []
        try:
            while True:
                try:
                    out, _ = proc.communicate(timeout=0.2)
                    chunks.append(out or b"")
                    break
                except subprocess.TimeoutExpired:
                    if fenced and not ctx.session.healthy():
                        proc.kill()
                        proc.communicate()
                        raise LockLost("consul session lost while running kubeadm under a lock; killed it")
                    if time.monotonic() > deadline:
                        proc.kill()
                        proc.communicate()
                        return 124, f"kubeadm {args[0]} timed out after {timeout:.0f}s"
        finally:
            self._child = None
        return proc.returncode, b"".join(chunks).decode(errors="replace")

    def kill_child(self) -> None:
        if self._child is not None and self._child.poll() is None:
            self._child.kill()

    def reset(self) -> None:
        rc, out = self.run(["reset", "-f"])
        if rc != 0:
            self.ctx.log(f"kubeadm reset -f failed (rc {rc}): {tail(out)}")


def tail(text: str, lines: int = 6) -> str:
    return scrub(" | ".join(line.strip() for line in text.strip().splitlines()[-lines:] if line.strip()))


def parse_join_command(text: str) -> dict:
    material = {}
    match = re.search(r"--token\s+(\S+)", text)
    if match and TOKEN_RE.fullmatch(match.group(1)):
        material["token"] = match.group(1)
    match = re.search(r"--discovery-token-ca-cert-hash\s+(sha256:[a-fA-F0-9]{64})", text)
    if match:
        material["ca_cert_hash"] = match.group(1)
    match = (re.search(r"--certificate-key\s+([a-fA-F0-9]{64})", text)
             or re.search(r"Using certificate key:\s*\n\s*([a-fA-F0-9]{64})", text))
    if match:
        material["certificate_key"] = match.group(1)
    remember_secret(*material.values())
    return material


def parse_certificate_key(text: str) -> str | None:
    match = re.search(r"Using certificate key:\s*\n\s*([a-fA-F0-9]{64})", text)
    keys = [match.group(1)] if match else HEX64_RE.findall(text)
    remember_secret(*keys)
    return keys[-1] if keys else None


def duration(seconds: float) -> str:
    return f"{max(1, int(seconds))}s"


# --------------------------------------------------------------------------- protocol steps

def read_material(ctx: Ctx) -> tuple[int, dict | None]:
    index, entry = ctx.consul.kv_get(ctx.key("join/material"))
    material = decode_value(entry)
    if material:
        remember_secret(material.get("token"), material.get("ca_cert_hash"), material.get("certificate_key"))
    return index, material


def material_usable(material: dict | None, need_cert_key: bool, margin: float) -> bool:
    if not material or not material.get("token") or not material.get("ca_cert_hash"):
        return False
    now = time.time()
    if material.get("token_expires_at", 0) - now <= margin:
        return False
    if need_cert_key and (not material.get("certificate_key")
                          or material.get("certificate_key_expires_at", 0) - now <= margin):
        return False
    return True


def acquire_lock(ctx: Ctx, lock: str, phase: str | None) -> None:
    """Blocks until this node's session holds `lock`."""
    key = ctx.key(lock)
    while True:
        sid = ctx.session.ensure()
        holder = json.dumps({"node": ctx.node, "at": time.time()}).encode()
        if ctx.consul.kv_put(key, holder, acquire=sid):
            return
        if phase:
            ctx.status.set(phase)
        index, entry = ctx.consul.kv_get(key)
        if entry and entry.get("Session"):
            ctx.wait_change(key, index)
        else:
            # Free but not acquirable: Consul's lock-delay after the previous holder's session died.
            # Nothing in the KV changes when it ends, so wait for the delay itself.
            ctx.wait_change(key, index, wait=min(ctx.args.wait, ctx.args.lock_delay + 0.5))


def release_lock(ctx: Ctx, lock: str) -> None:
    if ctx.session.id and not ctx.session.lost:
        ctx.consul.kv_put(ctx.key(lock), b"", release=ctx.session.id)


def wait_for_material(ctx: Ctx, need_cert_key: bool) -> dict:
    """Waits (blocking queries) until join material usable for this kind of join is published."""
    margin = ctx.args.expiry_margin
    while True:
        index, material = read_material(ctx)
        if material_usable(material, need_cert_key, margin):
            return material
        ctx.status.set("waiting-for-initialized")
        ctx.log("join material missing or about to expire; waiting for a control-plane node to refresh it")
        ctx.wait_change(ctx.key("join/material"), index)


def write_join_config(ctx: Ctx, material: dict, control_plane: bool) -> str:
    cfg: dict = {
        "apiVersion": "kubeadm.k8s.io/v1beta4",
        "kind": "JoinConfiguration",
        "discovery": {"bootstrapToken": {"apiServerEndpoint": ctx.endpoint, "token": material["token"],
                                         "caCertHashes": [material["ca_cert_hash"]]}},
        "nodeRegistration": {"name": ctx.node},
    }
    if control_plane:
        cfg["controlPlane"] = {"certificateKey": material["certificate_key"]}
    else:
        labels = json.loads(ctx.args.labels or "{}")
        taints = json.loads(ctx.args.taints or "[]")
        if labels:
            cfg["nodeRegistration"]["kubeletExtraArgs"] = [
                {"name": "node-labels", "value": ",".join(f"{k}={v}" for k, v in sorted(labels.items()))}]
        if taints:
            cfg["nodeRegistration"]["taints"] = [parse_taint(t) for t in taints]
    os.makedirs(ctx.args.state_dir, mode=0o700, exist_ok=True)
    path = os.path.join(ctx.args.state_dir, "kubeadm-join.json")
    if os.path.exists(path):
        os.unlink(path)
    # The token and certificate key go to kubeadm through a 0600 file, not the command line (visible in ps).
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(cfg, fh)
    return path


def parse_taint(text: str) -> dict:
    match = re.fullmatch(r"([^=:]+)(?:=([^:]*))?:(NoSchedule|PreferNoSchedule|NoExecute)", text)
    if not match:
        raise FormationError(f"bad taint {text!r}: want key=value:Effect")
    taint = {"key": match.group(1), "effect": match.group(3)}
    if match.group(2):
        taint["value"] = match.group(2)
    return taint


def run_join(ctx: Ctx, kubeadm: Kubeadm, material: dict, control_plane: bool, fenced: bool) -> tuple[bool, str]:
    path = write_join_config(ctx, material, control_plane)
    try:
        rc, out = kubeadm.run(["join", "--config", path], fenced=fenced,
                              on_start=lambda: ctx.status.set("joining"))
    finally:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    return rc == 0, f"kubeadm join exited {rc}: {tail(out)}"


def next_attempt(ctx: Ctx) -> tuple[int, int]:
    """Returns (next attempt number, attempts that already failed or were abandoned); marks dead ones."""
    keys = ctx.consul.kv_keys(ctx.key("init/attempts/"))
    numbers, failures = [], 0
    for key in keys:
        tail_part = key.rsplit("/", 1)[-1]
        if not tail_part.isdigit():
            continue
        numbers.append(int(tail_part))
        _, entry = ctx.consul.kv_get(key)
        rec = decode_value(entry) or {}
        if rec.get("result") == "running":
            # We hold the init lock, so a `running` attempt belongs to a holder whose session died.
            rec.update(result="abandoned", reason="holder lost its Consul session before init finished")
            ctx.consul.kv_put(key, json.dumps(rec).encode(), cas=str(entry["ModifyIndex"]))
        if rec.get("result") in ("failed", "abandoned"):
            failures += 1
    return (max(numbers) + 1 if numbers else 1), failures


def try_init(ctx: Ctx, kubeadm: Kubeadm) -> bool:
    """Runs kubeadm init while holding the init lock. Returns True when the cluster got initialized."""
    number, failures = next_attempt(ctx)
    if failures >= ctx.args.max_init_attempts:
        release_lock(ctx, "locks/init")
        raise FormationError(f"kubeadm init failed {failures} times in this cluster "
                             f"(limit {ctx.args.max_init_attempts}); see {ctx.key('init/attempts/')}")
    attempt_key = ctx.key(f"init/attempts/{number}")
    attempt = {"node": ctx.node, "at": time.time(), "result": "running", "reason": None}
    if not ctx.consul.kv_put(attempt_key, json.dumps(attempt).encode(), cas="0"):
        release_lock(ctx, "locks/init")
        return False
    started = time.time()
    reason = None
    try:
        rc, out = kubeadm.run(["init", "--config", ctx.args.init_config, "--upload-certs"], fenced=True,
                              on_start=lambda: ctx.status.set("initializing"))
        if rc != 0:
            reason = f"kubeadm init exited {rc}: {tail(out)}"
    except LockLost as err:
        reason = str(err)
    if reason is None:
        material = parse_join_command(out)
        if not {"token", "ca_cert_hash", "certificate_key"} <= material.keys():
            ctx.log("could not read the join material from kubeadm init output; creating it explicitly")
            material = create_material(ctx, kubeadm, token=True, cert_key=True)
        material["token_expires_at"] = started + ctx.token_ttl
        material["certificate_key_expires_at"] = started + ctx.cert_key_ttl
        now = time.time()
        attempt.update(result="succeeded", reason=None)
        sid = ctx.session.id
        ops = [
            {"KV": {"Verb": "check-session", "Key": ctx.key("locks/init"), "Session": sid}},
            {"KV": {"Verb": "check-not-exists", "Key": ctx.key("initialized")}},
            {"KV": {"Verb": "set", "Key": ctx.key("join/material"), "Value": encode(material)}},
            {"KV": {"Verb": "set", "Key": ctx.key("initialized"), "Value": encode({"node": ctx.node, "at": now})}},
            {"KV": {"Verb": "set", "Key": attempt_key, "Value": encode(attempt)}},
            {"KV": {"Verb": "unlock", "Key": ctx.key("locks/init"), "Session": sid}},
        ]
        if ctx.session.healthy() and ctx.consul.txn(ops):
            ctx.log("cluster initialized; join material and `initialized` published, init lock released")
            return True
        reason = "lost the init lock before publishing the join material"
    ctx.log(f"init attempt {number} failed: {reason}; resetting")
    kubeadm.reset()
    attempt.update(result="failed", reason=scrub(reason)[-1000:])
    ctx.consul.kv_put(attempt_key, json.dumps(attempt).encode())
    release_lock(ctx, "locks/init")
    ctx.status.set("waiting-for-lock", error=reason)
    return False


def create_material(ctx: Ctx, kubeadm: Kubeadm, token: bool, cert_key: bool,
                    base: dict | None = None) -> dict:
    material = dict(base or {})
    now = time.time()
    if token:
        rc, out = kubeadm.run(["token", "create", "--ttl", duration(ctx.token_ttl), "--print-join-command"])
        fresh = parse_join_command(out)
        if rc != 0 or "token" not in fresh or "ca_cert_hash" not in fresh:
            raise FormationError(f"kubeadm token create failed (rc {rc}): {tail(out)}")
        material.update(token=fresh["token"], ca_cert_hash=fresh["ca_cert_hash"], token_expires_at=now + ctx.token_ttl)
    if cert_key:
        rc, out = kubeadm.run(["init", "phase", "upload-certs", "--upload-certs"])
        key = parse_certificate_key(out)
        if rc != 0 or not key:
            raise FormationError(f"kubeadm init phase upload-certs failed (rc {rc}): {tail(out)}")
        material.update(certificate_key=key, certificate_key_expires_at=now + ctx.cert_key_ttl)
    return material


def wait_until_initialized_or_lock(ctx: Ctx, kubeadm: Kubeadm) -> bool:
    """Control-plane race for the init lock. Returns True if this node initialized the cluster."""
    backoff_until = 0.0
    while True:
        _, init_entry = ctx.consul.kv_get(ctx.key("initialized"))
        if init_entry:
            return False
        lock_index, lock = ctx.consul.kv_get(ctx.key("locks/init"))
        now = time.monotonic()
        if (not lock or not lock.get("Session")) and now >= backoff_until:
            # The status write comes after the attempt: a node that gets the lock at once never waited,
            # and the race winner's path to `kubeadm init` stays short.
            sid = ctx.session.ensure()
            holder = json.dumps({"node": ctx.node, "at": time.time()}).encode()
            if ctx.consul.kv_put(ctx.key("locks/init"), holder, acquire=sid):
                if ctx.consul.kv_get(ctx.key("initialized"))[1]:
                    release_lock(ctx, "locks/init")
                    return False
                if try_init(ctx, kubeadm):
                    return True
                # Give the other control-plane nodes the first go at the next attempt.
                backoff_until = time.monotonic() + ctx.args.retry_backoff
                continue
            ctx.status.set("waiting-for-lock")
            ctx.wait_change(ctx.key("locks/init"), lock_index, wait=min(ctx.args.wait, ctx.args.lock_delay + 0.5))
        elif now < backoff_until:
            ctx.wait_change(ctx.key("initialized"), ctx.consul.kv_get(ctx.key("initialized"))[0],
                            wait=backoff_until - now)
        else:
            ctx.status.set("waiting-for-initialized")
            ctx.wait_change(ctx.key("locks/init"), lock_index)


def wait_initialized(ctx: Ctx) -> None:
    while True:
        index, entry = ctx.consul.kv_get(ctx.key("initialized"))
        if entry:
            return
        ctx.status.set("waiting-for-initialized")
        ctx.wait_change(ctx.key("initialized"), index)


def control_plane_join(ctx: Ctx, kubeadm: Kubeadm) -> None:
    failures = 0
    while True:
        wait_for_material(ctx, need_cert_key=True)
        acquire_lock(ctx, "locks/cp-join", "waiting-for-lock")
        _, material = read_material(ctx)
        if not material_usable(material, True, ctx.args.expiry_margin):
            release_lock(ctx, "locks/cp-join")
            continue
        try:
            ok, reason = run_join(ctx, kubeadm, material, control_plane=True, fenced=True)
        except LockLost as err:
            ok, reason = False, str(err)
        if ok:
            release_lock(ctx, "locks/cp-join")
            return
        failures += 1
        kubeadm.reset()
        release_lock(ctx, "locks/cp-join")
        if failures >= ctx.args.max_join_attempts:
            raise FormationError(f"control-plane join failed {failures} times; last: {reason}")
        ctx.status.set("waiting-for-lock", error=reason)
        time.sleep(ctx.args.retry_backoff)


def worker_join(ctx: Ctx, kubeadm: Kubeadm) -> None:
    failures = 0
    while True:
        material = wait_for_material(ctx, need_cert_key=False)
        ok, reason = run_join(ctx, kubeadm, material, control_plane=False, fenced=False)
        if ok:
            return
        failures += 1
        kubeadm.reset()
        if failures >= ctx.args.max_join_attempts:
            raise FormationError(f"worker join failed {failures} times; last: {reason}")
        ctx.status.set("waiting-for-initialized", error=reason)
        time.sleep(ctx.args.retry_backoff)


# --------------------------------------------------------------------------- subcommands

def cmd_control_plane(ctx: Ctx) -> bool:
    if ctx.joined():
        ctx.log("already part of the cluster (kubelet.conf present); nothing to do")
        if ctx.status.current != "joined":
            ctx.status.set("joined")
        return False
    if not ctx.args.init_config or not os.path.exists(ctx.args.init_config):
        raise FormationError(f"kubeadm init config {ctx.args.init_config!r} not found")
    kubeadm = Kubeadm(ctx)
    install_signal_handlers(kubeadm)
    ctx.session.ensure()
    try:
        if not wait_until_initialized_or_lock(ctx, kubeadm):
            control_plane_join(ctx, kubeadm)
    finally:
        ctx.session.close()
    ctx.status.set("joined")
    return True


def cmd_worker(ctx: Ctx) -> bool:
    if ctx.joined():
        ctx.log("already part of the cluster (kubelet.conf present); nothing to do")
        ctx.status.set("joined")
        return False
    kubeadm = Kubeadm(ctx)
    install_signal_handlers(kubeadm)
    ctx.session.ensure()
    try:
        wait_initialized(ctx)
        worker_join(ctx, kubeadm)
    finally:
        ctx.session.close()
    ctx.status.set("joined")
    return True


def cmd_refresh(ctx: Ctx) -> bool:
    if not ctx.is_control_plane_member():
        ctx.log("not a joined control-plane node (no admin.conf); nothing to refresh")
        return False
    margin = ctx.args.refresh_margin

    def needs(material: dict | None) -> tuple[bool, bool]:
        now = time.time()
        if not material:
            return True, True
        return (material.get("token_expires_at", 0) - now <= margin,
                material.get("certificate_key_expires_at", 0) - now <= margin)

    _, material = read_material(ctx)
    if not any(needs(material)) and not ctx.args.force:
        ctx.log("join material still valid; nothing to refresh")
        return False
    kubeadm = Kubeadm(ctx)
    install_signal_handlers(kubeadm)
    # Uploading new certs replaces the key a joining control-plane node may be using: share its lock.
    try:
        acquire_lock(ctx, "locks/cp-join", None)
        index, material = read_material(ctx)
        token, cert_key = needs(material)
        if ctx.args.force:
            token = cert_key = True
        if not (token or cert_key):
            release_lock(ctx, "locks/cp-join")
            return False
        fresh = create_material(ctx, kubeadm, token=token, cert_key=cert_key, base=material)
        ops = [{"KV": {"Verb": "check-session", "Key": ctx.key("locks/cp-join"), "Session": ctx.session.id}},
               {"KV": {"Verb": "cas", "Key": ctx.key("join/material"), "Value": encode(fresh), "Index": index}},
               {"KV": {"Verb": "unlock", "Key": ctx.key("locks/cp-join"), "Session": ctx.session.id}}]
        if not ctx.consul.txn(ops):
            release_lock(ctx, "locks/cp-join")
            raise FormationError("join material changed or lock lost while refreshing; will retry next run")
        ctx.log(f"join material refreshed (token: {'new' if token else 'kept'}, "
                f"certificate key: {'new' if cert_key else 'kept'})")
        return True
    finally:
        ctx.session.close()


def install_signal_handlers(kubeadm: Kubeadm) -> None:
    def handler(signum, _frame):
        kubeadm.kill_child()
        sys.exit(128 + signum)
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def cmd_record_phase(ctx: Ctx) -> bool:
    ctx.status.set(ctx.args.phase, error=ctx.args.error)
    return False


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="k8s_formation.py", description=__doc__.splitlines()[0])
    p.add_argument("command", choices=["control-plane", "worker", "record-phase", "refresh-join-material"])
    p.add_argument("--facts", default=env("K8S_FORMATION_FACTS", "/etc/k8s-node/cluster.json"))
    p.add_argument("--secrets", default=env("K8S_FORMATION_SECRETS", "/etc/k8s-node/secrets.json"))
    p.add_argument("--node", default=env("K8S_FORMATION_NODE", ""))
    p.add_argument("--role", default=None)
    p.add_argument("--pool", default=None)
    p.add_argument("--labels", default="{}", help="worker labels, JSON object")
    p.add_argument("--taints", default="[]", help='worker taints, JSON list of "key=value:Effect"')
    p.add_argument("--phase", choices=PHASES)
    p.add_argument("--error", default=None)
    p.add_argument("--force", action="store_true", help="refresh-join-material even if still valid")
    p.add_argument("--init-config", default=env("K8S_FORMATION_INIT_CONFIG", "/etc/k8s-node/kubeadm-init.yaml"))
    p.add_argument("--kubeadm", default=env("K8S_FORMATION_KUBEADM", "/usr/bin/kubeadm"))
    p.add_argument("--kube-dir", default=env("K8S_FORMATION_KUBE_DIR", "/etc/kubernetes"))
    p.add_argument("--state-dir", default=env("K8S_FORMATION_STATE_DIR", "/var/lib/k8s-node"))
    p.add_argument("--consul-addr", default="", help="comma-separated host:port list; overrides the facts file")
    p.add_argument("--session-ttl", type=int, default=int(env("K8S_FORMATION_SESSION_TTL", "30")))
    p.add_argument("--lock-delay", type=float, default=float(env("K8S_FORMATION_LOCK_DELAY", "15")))
    p.add_argument("--wait", type=float, default=float(env("K8S_FORMATION_WAIT", "60")),
                   help="blocking query wait, seconds")
    p.add_argument("--poll-interval", type=float, default=float(env("K8S_FORMATION_POLL_INTERVAL", "0")),
                   help="poll every N seconds instead of blocking queries (comparison only)")
    p.add_argument("--consul-retries", type=int, default=int(env("K8S_FORMATION_CONSUL_RETRIES", "8")))
    p.add_argument("--backoff", type=float, default=0.5)
    p.add_argument("--backoff-cap", type=float, default=10.0)
    p.add_argument("--max-init-attempts", type=int, default=3)
    p.add_argument("--max-join-attempts", type=int, default=3)
    p.add_argument("--retry-backoff", type=float, default=float(env("K8S_FORMATION_RETRY_BACKOFF", "5")))
    p.add_argument("--expiry-margin", type=float, default=float(env("K8S_FORMATION_EXPIRY_MARGIN", "300")),
                   help="join material expiring within this many seconds is not used")
    p.add_argument("--refresh-margin", type=float, default=float(env("K8S_FORMATION_REFRESH_MARGIN", "1800")),
                   help="refresh-join-material renews material expiring within this many seconds")
    p.add_argument("--kubeadm-timeout", type=float, default=float(env("K8S_FORMATION_KUBEADM_TIMEOUT", "900")))
    return p


COMMANDS = {"control-plane": cmd_control_plane, "worker": cmd_worker, "record-phase": cmd_record_phase,
            "refresh-join-material": cmd_refresh}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "record-phase" and not args.phase:
        print("record-phase needs --phase", file=sys.stderr)
        return 2
    if args.role is None:
        args.role = {"control-plane": "control-plane", "worker": "worker",
                     "refresh-join-material": "control-plane"}.get(args.command)
    os.umask(0o077)
    try:
        ctx = Ctx(args)
    except (OSError, ValueError, KeyError, FormationError) as err:
        print(f"k8s-formation: cannot load configuration: {scrub(str(err))}", file=sys.stderr)
        return EXIT_FAILED
    try:
        changed = COMMANDS[args.command](ctx)
    except ConsulForbidden as err:
        ctx.log(f"FATAL: {err}. Check the consul_token in {args.secrets} and the cluster's ACL policy.")
        return EXIT_FORBIDDEN
    except (ConsulError, FormationError) as err:
        ctx.log(f"FATAL: {err}")
        try:
            ctx.status.set("failed", error=str(err))
        except ConsulError:
            ctx.log("could not record phase `failed` in Consul either")
        return EXIT_UNAVAILABLE if isinstance(err, ConsulUnavailable) else EXIT_FAILED
    print(RESULT_CHANGED if changed else RESULT_UNCHANGED, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
