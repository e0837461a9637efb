"""Formation test harness: simulated nodes, with per-node metadata servers, on a real Consul server
(tests/consul_fixture.py, persistent, ACLs on).

Each simulated node is a separate process group running either the project's playbook (`--tags formation`)
or the formation engine directly (the exact script the role installs), against its own facts/secrets/
/etc/kubernetes/state directories, with `kubeadm` replaced by tests/standins/kubeadm.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jinja2

from tests.consul_fixture import KV_PREFIX, ConsulServer
from tests.helpers import NODE_PYTHON
from tests.proc_tree import descendants

ROOT = Path(__file__).resolve().parents[2]
ENGINE = ROOT / "ansible/roles/k8s_formation/files/k8s_formation.py"
INIT_TEMPLATE = ROOT / "ansible/roles/k8s_formation/templates/kubeadm-init.yaml.j2"
STANDIN_KUBEADM = ROOT / "tests/standins/kubeadm"
VENV_BIN = Path(sys.executable).parent


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


class MetadataServer:
    """Serves one node's /openstack/latest/meta_data.json on loopback, like Nova's metadata service."""

    def __init__(self, document: dict) -> None:
        payload = json.dumps(document).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server API)
                if self.path.rstrip("/") != "/openstack/latest/meta_data.json":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/openstack/latest/meta_data.json"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Timing:
    """Stand-in durations and protocol knobs for one cluster."""
    init: float = 3.0
    join: float = 1.0
    cp_join: float = 2.0
    reset: float = 0.2
    fail_init: int = 0
    session_ttl: int = 10
    lock_delay: float = 1.0
    wait: float = 30.0
    retry_backoff: float = 2.0
    expiry_margin: float = 1.0
    token_ttl: float = 24 * 3600.0
    cert_key_ttl: float = 2 * 3600.0
    poll_interval: float = 0.0


@dataclass
class Node:
    cluster: "Cluster"
    name: str
    role: str
    pool: str
    dir: Path
    meta: MetadataServer | None = None
    proc: subprocess.Popen | None = None
    runs: list = field(default_factory=list)

    @property
    def labels(self) -> dict:
        return {"pool": self.pool} if self.role == "worker" else {}

    @property
    def kube_dir(self) -> Path:
        return self.dir / "etc-kubernetes"

    def paths(self) -> dict[str, Path]:
        d = self.dir
        return {"facts": d / "k8s-node/cluster.json", "secrets": d / "k8s-node/secrets.json",
                "init_config": d / "k8s-node/kubeadm-init.yaml", "state": d / "state", "lib": d / "lib",
                "systemd": d / "systemd", "tmp": d / "tmp"}

    def env(self) -> dict[str, str]:
        t = self.cluster.timing
        env = dict(os.environ)
        env.update({
            "PATH": f"{VENV_BIN}:{env.get('PATH', '/usr/bin:/bin')}",
            "KUBEADM_STANDIN_STATE": str(self.cluster.state_file),
            "KUBEADM_STANDIN_LOG": str(self.cluster.kubeadm_log),
            "KUBEADM_STANDIN_KUBE_DIR": str(self.kube_dir),
            "KUBEADM_STANDIN_NODE": self.name,
            "KUBEADM_STANDIN_INIT_SECONDS": str(t.init),
            "KUBEADM_STANDIN_JOIN_SECONDS": str(t.join),
            "KUBEADM_STANDIN_CP_JOIN_SECONDS": str(t.cp_join),
            "KUBEADM_STANDIN_RESET_SECONDS": str(t.reset),
            "KUBEADM_STANDIN_FAIL_INIT": str(t.fail_init),
            "KUBEADM_STANDIN_CERT_KEY_TTL": str(t.cert_key_ttl),
            "ANSIBLE_CONFIG": str(ROOT / "ansible/ansible.cfg"),
            "ANSIBLE_ROLES_PATH": str(ROOT / "ansible/roles"),
            "ANSIBLE_LOCAL_TEMP": str(self.paths()["tmp"]),
            "ANSIBLE_REMOTE_TEMP": str(self.paths()["tmp"]),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_PIPELINING": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_RETRY_FILES_ENABLED": "0",
            "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
        })
        return env

    def engine_argv(self, command: str) -> list[str]:
        t, p = self.cluster.timing, self.paths()
        return [NODE_PYTHON, str(ENGINE), command, f"--node={self.name}", f"--pool={self.pool}",
                f"--facts={p['facts']}", f"--secrets={p['secrets']}", f"--init-config={p['init_config']}",
                f"--kubeadm={STANDIN_KUBEADM}", f"--kube-dir={self.kube_dir}", f"--state-dir={p['state']}",
                f"--session-ttl={t.session_ttl}", f"--lock-delay={t.lock_delay}", f"--wait={t.wait}",
                f"--retry-backoff={t.retry_backoff}", f"--expiry-margin={t.expiry_margin}",
                f"--poll-interval={t.poll_interval}"]

    def playbook_vars(self) -> dict:
        t, p = self.cluster.timing, self.paths()
        user = os.getuid()
        import grp
        import pwd
        owner, group = pwd.getpwuid(user).pw_name, grp.getgrgid(os.getgid()).gr_name
        return {
            "k8s_formation_metadata_url": self.meta.url, "k8s_formation_facts_file": str(p["facts"]),
            "k8s_formation_secrets_file": str(p["secrets"]), "k8s_formation_lib_dir": str(p["lib"]),
            "k8s_formation_kubeadm_config": str(p["init_config"]), "k8s_formation_state_dir": str(p["state"]),
            "k8s_formation_python": NODE_PYTHON, "k8s_formation_kubeadm_bin": str(STANDIN_KUBEADM),
            "k8s_formation_kube_dir": str(self.kube_dir), "k8s_formation_session_ttl": t.session_ttl,
            "k8s_formation_lock_delay": t.lock_delay, "k8s_formation_wait": t.wait,
            "k8s_formation_retry_backoff": t.retry_backoff, "k8s_formation_expiry_margin": t.expiry_margin,
            "k8s_formation_owner": owner, "k8s_formation_group": group,
            "join_refresher_script": str(p["lib"] / "k8s_formation.py"), "join_refresher_python": NODE_PYTHON,
            "join_refresher_facts_file": str(p["facts"]), "join_refresher_secrets_file": str(p["secrets"]),
            "join_refresher_kubeadm_bin": str(STANDIN_KUBEADM), "join_refresher_kube_dir": str(self.kube_dir),
            "join_refresher_state_dir": str(p["state"]), "join_refresher_systemd_dir": str(p["systemd"]),
            "join_refresher_manage_systemd": False, "join_refresher_margin_seconds": 5,
            "join_refresher_owner": owner, "join_refresher_group": group,
            # What the bootstrap script passes from /etc/k8s-node/node.json.
            "node_name": self.name, "node_role": self.role, "node_pool": self.pool,
            "node_cluster": self.cluster.name, "node_labels": self.labels, "node_taints": [],
            "ansible_python_interpreter": sys.executable,
        }

    def start(self, mode: str = "playbook") -> None:
        """mode: "playbook" (the role via the node's playbook) or "engine" (the role's script directly)."""
        assert self.proc is None or self.proc.poll() is not None, f"{self.name} still running"
        n = len(self.runs)
        out = open(self.dir / f"run{n}.out", "wb")
        if mode == "playbook":
            varfile = self.dir / "vars.json"
            varfile.write_text(json.dumps(self.playbook_vars()))
            argv = [str(VENV_BIN / "ansible-playbook"), str(self.cluster.playbook(self.role)), "--tags", "formation",
                    "-c", "local", "-i", "localhost,", "-e", f"@{varfile}"]
        else:
            argv = self.engine_argv(self.role)
        # Own process group: a SIGKILL "power-off" takes ansible, the engine and kubeadm down together.
        self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=self.env(),
                                     start_new_session=True, cwd=self.dir)
        out.close()
        self.runs.append({"mode": mode, "argv": argv, "out": self.dir / f"run{n}.out", "started": time.time()})

    def run_engine(self, command: str, *extra: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(self.engine_argv(command) + list(extra), env=self.env(), capture_output=True,
                              text=True, timeout=timeout)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.name} did not finish in {timeout}s:\n{self.output()[-3000:]}") from None

    def kill(self) -> None:
        """Power loss: SIGKILL the node's whole process tree (ansible workers start their own sessions,
        so the process group alone would miss the engine and kubeadm)."""
        if self.proc and self.proc.poll() is None:
            tree = descendants(self.proc.pid)
            for pid in tree:  # freeze first so nothing forks or reparents while we kill
                _signal(pid, signal.SIGSTOP)
            for pid in {*descendants(self.proc.pid), *tree}:
                _signal(pid, signal.SIGKILL)
            self.proc.wait()

    def output(self) -> str:
        return "\n".join(r["out"].read_text(errors="replace") for r in self.runs if r["out"].exists())

    def status(self) -> dict | None:
        return self.cluster.consul.get_json(f"{self.cluster.prefix}status/{self.name}")


class Cluster:
    """One simulated cluster (own name, KV prefix, ACL token, stand-in state) on the shared Consul server."""

    def __init__(self, consul: ConsulServer, workdir: Path, name: str, timing: Timing | None = None,
                 playbooks: Path | None = None) -> None:
        self.consul, self.workdir, self.name = consul, workdir, name
        self.timing = timing or Timing()
        self.prefix = f"{KV_PREFIX}/{name}/"
        self.token = consul.create_cluster_token(name)
        workdir.mkdir(parents=True, exist_ok=True)
        self.state_file = workdir / "kubeadm-cluster.json"
        self.kubeadm_log = workdir / "kubeadm.jsonl"
        self.nodes: dict[str, Node] = {}
        self.playbooks = playbooks

    def playbook(self, role: str) -> Path:
        return (self.playbooks or ROOT / "ansible") / f"{role}.yml"

    def facts(self) -> dict:
        t = self.timing
        return {
            "cluster_name": self.name, "kubernetes_version": "1.34.2", "kubernetes_minor": "1.34",
            "api_endpoint": {"host": "10.20.0.10", "port": 6443}, "api_cert_sans": ["10.20.0.10", "k8s.example"],
            "node_cidr": "10.20.0.0/24", "pod_cidr": "10.244.0.0/16", "service_cidr": "10.96.0.0/12",
            "cni": {"name": "calico", "version": "v3.30.3"},
            "consul": {"mode": "external", "addresses": [self.consul.http_addr], "scheme": "http",
                       "kv_prefix": KV_PREFIX},
            "join": {"token_ttl_hours": t.token_ttl / 3600, "certificate_key_ttl_hours": t.cert_key_ttl / 3600},
        }

    def add_node(self, role: str, index: int, pool: str = "") -> Node:
        short = "cp" if role == "control-plane" else (pool or "general")
        name = f"{self.name}-{short}-{index}"
        node = Node(self, name, role, pool if role == "worker" else "", self.workdir / name)
        p = node.paths()
        for key in ("state", "lib", "systemd", "tmp"):
            p[key].mkdir(parents=True, exist_ok=True)
        p["facts"].parent.mkdir(parents=True, exist_ok=True)
        facts = self.facts()
        p["facts"].write_text(json.dumps(facts))
        fd = os.open(p["secrets"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"consul_token": self.token}, fh)
        # Engine-mode runs get the same init config the role renders, from the role's own template.
        template = jinja2.Template(INIT_TEMPLATE.read_text(), undefined=jinja2.StrictUndefined)
        p["init_config"].write_text(template.render(k8s_formation_facts=facts, k8s_formation_node_name=name))
        node.meta = MetadataServer({
            "uuid": str(uuid.uuid4()), "name": name, "hostname": name,
            "meta": {"cluster": self.name, "role": role, "pool": node.pool,
                     "labels": json.dumps(node.labels), "taints": "[]"}})
        self.nodes[name] = node
        return node

    def add_nodes(self, control_planes: int, workers: int) -> list[Node]:
        nodes = [self.add_node("control-plane", i + 1) for i in range(control_planes)]
        nodes += [self.add_node("worker", i + 1, "general") for i in range(workers)]
        return nodes

    def close(self) -> None:
        for node in self.nodes.values():
            node.kill()
            if node.meta:
                node.meta.close()

    # observations -----------------------------------------------------------
    def invocations(self) -> list[dict]:
        if not self.kubeadm_log.exists():
            return []
        return [json.loads(line) for line in self.kubeadm_log.read_text().splitlines() if line.strip()]

    def standin_state(self) -> dict:
        return json.loads(self.state_file.read_text()) if self.state_file.exists() else {}

    def kv(self) -> dict[str, dict | None]:
        return self.consul.get_json_tree(self.prefix)

    def wait_for(self, predicate, timeout: float, what: str, interval: float = 0.1):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")


# --------------------------------------------------------------------------- invariants

PHASE_ORDER = ["booting", "provisioning", "waiting-for-lock", "initializing", "waiting-for-initialized",
               "joining", "joined"]


def check_invariants(cluster: Cluster, expect_joined: list[Node], dead: tuple[str, ...] = (),
                     same_material: bool = True) -> dict:
    """Asserts the formation guarantees; returns a summary for further checks."""
    inv = cluster.invocations()
    ends = [r for r in inv if r["event"] == "end"]
    starts = [r for r in inv if r["event"] == "start"]
    ok_inits = [r for r in ends if r["cmd"] == "init" and r["rc"] == 0]
    assert len(ok_inits) == 1, f"expected exactly one successful kubeadm init, got {ok_inits}"
    state = cluster.standin_state()
    assert not state.get("extra_inits"), f"second cluster initialized by {state.get('extra_inits')}"
    assert not state.get("overlaps"), "a control-plane join started while another was running"
    init = ok_inits[0]

    kv = cluster.kv()
    initialized = kv.get(cluster.prefix + "initialized")
    assert initialized and initialized["node"] == init["node"], (initialized, init)
    assert initialized["at"] >= init["end"]

    # Control-plane joins (successful or not) never overlap; a join killed mid-way counts until "now".
    cp = []
    open_starts = {(r["pid"]): r for r in starts if r["cmd"] == "join" and r.get("control_plane")}
    for r in ends:
        if r["cmd"] == "join" and r.get("control_plane"):
            open_starts.pop(r["pid"], None)
            cp.append((r["start"], r["end"], r["node"]))
    for r in open_starts.values():
        cp.append((r["t"], time.time(), r["node"]))
    cp.sort()
    for (s1, e1, n1), (s2, e2, n2) in zip(cp, cp[1:]):
        assert s2 >= e1, f"control-plane joins overlap: {n1} [{s1:.3f},{e1:.3f}] and {n2} [{s2:.3f},{e2:.3f}]"

    # No join before `initialized`: every join started after the successful init ended and was published.
    joins = [r for r in starts if r["cmd"] == "join"]
    for r in joins:
        assert r["t"] >= init["end"] and r["t"] >= initialized["at"], f"join before initialized: {r}"

    ok_joins = [r for r in ends if r["cmd"] == "join" and r["rc"] == 0]
    rejected = [r for r in ends if r["cmd"] == "join" and r["rc"] != 0]
    assert not rejected, f"kubeadm rejected joins (bad/expired material or overlap): {rejected}"

    if same_material:
        assert {r["token_fp"] for r in ok_joins} <= {init["token_fp"]}, "joins used different tokens"
        assert {r["cert_key_fp"] for r in ok_joins if r.get("control_plane")} <= {init["cert_key_fp"]}

    joined_names = {r["node"] for r in ok_joins} | {init["node"]}
    for node in expect_joined:
        assert node.name in joined_names, f"{node.name} never joined"
        assert (node.kube_dir / "kubelet.conf").exists()
        st = node.status()
        assert st and st["phase"] == "joined", f"{node.name} status {st}"
        phases = [h["phase"] for h in st["history"]]
        assert phases[-1] == "joined" and "failed" not in phases, phases
    members = set(state.get("members", {}))
    assert {n.name for n in expect_joined} <= members
    assert not (members & set(dead) - {init["node"]}), "a killed node is still a member"

    material = kv.get(cluster.prefix + "join/material")
    assert material, "join material not published"
    check_no_secrets(cluster, material)
    return {"init": init, "ok_joins": ok_joins, "cp_joins": cp, "material": material, "kv": kv, "inv": inv}


def check_no_secrets(cluster: Cluster, material: dict) -> None:
    secrets = [material.get("token"), material.get("ca_cert_hash"), material.get("certificate_key"), cluster.token]
    secrets = [s for s in secrets if s]
    # The hash without its prefix and the token secret half are secrets on their own too.
    secrets += [s.split(":", 1)[1] for s in secrets if s.startswith("sha256:")]
    secrets += [s.split(".", 1)[1] for s in secrets if "." in s and len(s) == 23]
    texts = {f"{n.name} output": n.output() for n in cluster.nodes.values()}
    for key, value in cluster.kv().items():
        if "/status/" in key or "/init/attempts/" in key or key.endswith("initialized"):
            texts[key] = json.dumps(value)
    for where, text in texts.items():
        for secret in secrets:
            assert secret not in text, f"a secret leaked into {where}"
