#!/usr/bin/env python3
"""Node bootstrap, run once by cloud-init: server metadata -> `ansible-playbook <role>.yml` on localhost.

Stdlib only, for the system python3 of Ubuntu 22.04 (3.10) and 24.04 (3.12). Steps:
read the node's identity from the metadata service (bounded retries), check it against the facts file,
write /etc/k8s-node/node.json, unpack the Ansible bundle, record `booting` in Consul, build a venv with
pinned ansible-core, record `provisioning`, run the role's playbook. The formation engine records the
later phases. Every failure ends in one `FATAL:` log line, a `failed` status record when Consul can take
one, and a non-zero exit; no step waits without a bound.

Secrets stay in /etc/k8s-node/secrets.json: the playbook gets its path (never the values) and every
line written to the log or the console is scrubbed of the secret values first.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
import urllib.error
import urllib.request

ROLES = ("control-plane", "worker", "bastion")
PHASE_BOOTING = "booting"
PHASE_PROVISIONING = "provisioning"
PHASE_FAILED = "failed"

EXIT_FAILED = 1
EXIT_CONFIG = 2
# Same codes as k8s_formation.py, so callers can tell a bad token from an outage.
EXIT_FORBIDDEN = 3
EXIT_UNAVAILABLE = 4

# ansible-core 2.18+ needs Python 3.11; Ubuntu 22.04 has 3.10, so it gets the 2.17 line.
PINS = {
    (3, 10): ["ansible-core==2.17.14", "resolvelib==1.0.1", "Jinja2==3.1.6", "MarkupSafe==3.0.4",
              "PyYAML==6.0.4", "cryptography==50.0.2", "cffi==2.1.1", "packaging==26.4", "pycparser==3.11"],
    (3, 11): ["ansible-core==2.19.14", "resolvelib==1.2.1", "Jinja2==3.1.6", "MarkupSafe==3.0.4",
              "PyYAML==6.0.4", "cryptography==50.0.2", "cffi==2.1.1", "packaging==26.4", "pycparser==3.12"],
}


def env(name: str, default: str) -> str:
    return os.environ.get(name) or default


class Config:
    """Paths and knobs; every one can be overridden by the environment (the tests do)."""

    def __init__(self) -> None:
        self.metadata_url = env("K8S_NODE_METADATA_URL", "http://169.254.169.254/openstack/latest/meta_data.json")
        self.config_dir = env("K8S_NODE_CONFIG_DIR", "/etc/k8s-node")
        self.home = env("K8S_NODE_HOME", "/opt/k8s-node")
        self.log_file = env("K8S_NODE_LOG", "/var/log/k8s-node-bootstrap.log")
        self.python = env("K8S_NODE_PYTHON", sys.executable or "/usr/bin/python3")
        self.module_python = env("K8S_NODE_MODULE_PYTHON", "/usr/bin/python3")
        # A prebuilt ansible-playbook skips the venv (tests; images that ship Ansible).
        self.ansible_playbook = os.environ.get("K8S_NODE_ANSIBLE_PLAYBOOK", "")
        self.playbook_dir = env("K8S_NODE_PLAYBOOK_DIR", os.path.join(self.home, "ansible"))
        self.retries = int(env("K8S_NODE_RETRIES", "8"))
        self.backoff = float(env("K8S_NODE_BACKOFF", "1"))
        self.backoff_cap = float(env("K8S_NODE_BACKOFF_CAP", "30"))
        self.http_timeout = float(env("K8S_NODE_HTTP_TIMEOUT", "5"))
        self.phase_timeout = float(env("K8S_NODE_PHASE_TIMEOUT", "300"))
        self.playbook_timeout = float(env("K8S_NODE_PLAYBOOK_TIMEOUT", "7200"))

    @property
    def facts_file(self) -> str:
        return os.path.join(self.config_dir, "cluster.json")

    @property
    def secrets_file(self) -> str:
        return os.path.join(self.config_dir, "secrets.json")

    @property
    def node_file(self) -> str:
        return os.path.join(self.config_dir, "node.json")

    @property
    def bundle(self) -> str:
        return os.path.join(self.home, "ansible.tar")

    @property
    def formation_script(self) -> str:
        return os.path.join(self.home, "ansible", "roles", "k8s_formation", "files", "k8s_formation.py")


class Fatal(Exception):
    def __init__(self, message: str, code: int = EXIT_FAILED, record: bool = True) -> None:
        super().__init__(message)
        self.code = code
        self.record = record


class Log:
    """Appends to a root-only log file; the console (cloud-init-output.log) gets only the key lines."""

    def __init__(self, path: str) -> None:
        self.secrets: list[str] = []
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.fchmod(fd, 0o600)
        self.fh = os.fdopen(fd, "a", encoding="utf-8")

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "<redacted>")
        return text

    def __call__(self, message: str, console: bool = False) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        line = f"{stamp} k8s-node-bootstrap: {self.scrub(message.rstrip())}"
        self.fh.write(line + "\n")
        self.fh.flush()
        if console:
            print(line, file=sys.stderr, flush=True)


def backoff_delays(cfg: Config):
    """Exponential delays capped at backoff_cap, `retries` of them: the total wait is bounded."""
    for attempt in range(cfg.retries):
        yield min(cfg.backoff_cap, cfg.backoff * (2 ** attempt))


def fetch_metadata(cfg: Config, log: Log) -> dict:
    last = ""
    delays = list(backoff_delays(cfg)) + [None]
    for attempt, delay in enumerate(delays, start=1):
        try:
            with urllib.request.urlopen(cfg.metadata_url, timeout=cfg.http_timeout) as resp:
                return json.loads(resp.read().decode("utf-8"))
        except (urllib.error.URLError, OSError, ValueError) as err:
            last = str(getattr(err, "reason", err))
        if delay is None:
            break
        log(f"metadata service not ready (attempt {attempt}: {last}); retrying in {delay:.1f}s")
        time.sleep(delay)
    raise Fatal(f"metadata service {cfg.metadata_url} unreachable after {len(delays)} attempts: {last}",
                EXIT_CONFIG, record=False)


def read_json(path: str, what: str) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError) as err:
        raise Fatal(f"cannot read the {what} {path}: {err}", EXIT_CONFIG, record=False) from None
    if not isinstance(data, dict):
        raise Fatal(f"the {what} {path} is not a JSON object", EXIT_CONFIG, record=False)
    return data


def parse_json_meta(meta: dict, key: str, kind: type, default):
    raw = meta.get(key)
    if raw in (None, ""):
        return default
    try:
        value = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        raise Fatal(f"metadata `{key}` is not valid JSON") from None
    if not isinstance(value, kind):
        raise Fatal(f"metadata `{key}` must be a JSON {kind.__name__}")
    return value


class Node:
    def __init__(self, metadata: dict) -> None:
        meta = metadata.get("meta") or {}
        self.name = str(metadata.get("name") or metadata.get("hostname") or "").split(".")[0]
        self.role = str(meta.get("role") or "")
        self.pool = str(meta.get("pool") or "")
        self.cluster = str(meta.get("cluster") or "")
        self.meta = meta

    def as_vars(self) -> dict:
        return {
            "node_name": self.name,
            "node_role": self.role,
            "node_pool": self.pool,
            "node_cluster": self.cluster,
            "node_labels": parse_json_meta(self.meta, "labels", dict, {}),
            "node_taints": parse_json_meta(self.meta, "taints", list, []),
        }


class Phases:
    """Records phases through the formation engine (`k8s_formation.py record-phase`)."""

    def __init__(self, cfg: Config, log: Log, node: Node) -> None:
        self.cfg, self.log, self.node = cfg, log, node
        self.enabled = False

    def record(self, phase: str, error: str | None = None) -> None:
        """Raises Fatal when Consul refuses or cannot be reached; the script's own retries bound the wait."""
        if not self.enabled:
            return
        script = self.cfg.formation_script
        if not os.path.isfile(script):
            self.log(f"phase {phase}: {script} missing from the bundle, not recorded")
            return
        argv = [self.cfg.python, script, "record-phase", "--phase", phase, "--node", self.node.name,
                "--role", self.node.role, "--pool", self.node.pool,
                "--facts", self.cfg.facts_file, "--secrets", self.cfg.secrets_file]
        if error:
            argv += ["--error", self.log.scrub(error)]
        try:
            proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True, timeout=self.cfg.phase_timeout, check=False)
        except subprocess.TimeoutExpired:
            raise Fatal(f"recording phase {phase} in Consul timed out after {self.cfg.phase_timeout:.0f}s",
                        EXIT_UNAVAILABLE, record=False) from None
        for line in proc.stdout.splitlines():
            self.log(line)
        if proc.returncode == EXIT_FORBIDDEN:
            raise Fatal(f"Consul rejected the token from {self.cfg.secrets_file} (403) while recording {phase}",
                        EXIT_FORBIDDEN, record=False)
        if proc.returncode == EXIT_UNAVAILABLE:
            raise Fatal(f"Consul unreachable while recording {phase} (retries exhausted)", EXIT_UNAVAILABLE,
                        record=False)
        if proc.returncode != 0:
            raise Fatal(f"recording phase {phase} failed (exit {proc.returncode})", EXIT_FAILED, record=False)
        self.log(f"phase {phase} recorded")


def write_node_file(cfg: Config, node: Node) -> None:
    tmp = cfg.node_file + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(node.as_vars(), fh, indent=2, sort_keys=True)
        fh.write("\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, cfg.node_file)


def extract_bundle(cfg: Config) -> None:
    dest = os.path.join(cfg.home, "ansible")
    if not os.path.isfile(cfg.bundle):
        raise Fatal(f"Ansible bundle {cfg.bundle} missing (user-data not applied?)", EXIT_CONFIG, record=False)
    if os.path.isdir(dest):
        shutil.rmtree(dest)
    os.makedirs(dest, mode=0o755)
    with tarfile.open(cfg.bundle) as tar:
        for member in tar.getmembers():
            target = os.path.realpath(os.path.join(dest, member.name))
            if not (member.isfile() or member.isdir()) or not target.startswith(os.path.realpath(dest) + os.sep):
                raise Fatal(f"refusing bundle member {member.name!r}", EXIT_CONFIG, record=False)
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, filter="data")
        else:
            tar.extractall(dest)


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run_logged(argv: list[str], log: Log, timeout: float, **kwargs) -> int:
    """Runs a command with its output going, scrubbed, to the log only; returns its exit code.

    A watchdog kills its whole process group at the deadline, even when it hangs without printing
    (Ansible's workers and their commands would otherwise keep the output pipe open).
    """
    with subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, start_new_session=True, **kwargs) as proc:
        watchdog = threading.Timer(timeout, kill_group, args=(proc,))
        watchdog.daemon = True
        watchdog.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                log(line)
            code = proc.wait()
        finally:
            watchdog.cancel()
    if code < 0:
        log(f"{os.path.basename(argv[0])} killed after {timeout:.0f}s")
    return code


def ensure_ansible(cfg: Config, log: Log) -> str:
    if cfg.ansible_playbook:
        return cfg.ansible_playbook
    venv = os.path.join(cfg.home, "venv")
    binary = os.path.join(venv, "bin", "ansible-playbook")
    if os.access(binary, os.X_OK):
        return binary
    pins = PINS[(3, 10)] if sys.version_info < (3, 11) else PINS[(3, 11)]
    if run_logged([cfg.python, "-m", "venv", venv], log, 600) != 0:
        raise Fatal("cannot create the Ansible venv (is python3-venv installed?)")
    pip = [os.path.join(venv, "bin", "pip"), "install", "--disable-pip-version-check", "--no-input",
           "--only-binary=:all:", *pins]
    for attempt, delay in enumerate(list(backoff_delays(cfg))[:4] + [None], start=1):
        if run_logged(pip, log, 900) == 0:
            return binary
        if delay is None:
            break
        log(f"pip install failed (attempt {attempt}); retrying in {delay:.1f}s")
        time.sleep(delay)
    raise Fatal(f"cannot install {pins[0]} into {venv}")


def run_playbook(cfg: Config, log: Log, node: Node, ansible_playbook: str) -> None:
    playbook = os.path.join(cfg.playbook_dir, f"{node.role}.yml")
    if not os.path.isfile(playbook):
        raise Fatal(f"playbook {playbook} missing from the bundle")
    argv = [ansible_playbook, playbook,
            "--extra-vars", f"@{cfg.facts_file}",
            "--extra-vars", f"@{cfg.node_file}",
            "--extra-vars", f"ansible_python_interpreter={cfg.module_python}"]
    child_env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(cfg.playbook_dir, "ansible.cfg"),
                     ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", PYTHONUNBUFFERED="1")
    log(f"running {os.path.basename(ansible_playbook)} {playbook}", console=True)
    started = time.monotonic()
    code = run_logged(argv, log, cfg.playbook_timeout, cwd=cfg.playbook_dir, env=child_env)
    if code != 0:
        raise Fatal(f"playbook {node.role}.yml failed (exit {code}); details in {cfg.log_file}")
    log(f"playbook {node.role}.yml done in {time.monotonic() - started:.0f}s", console=True)


def bootstrap(cfg: Config, log: Log, phases_holder: list) -> None:
    metadata = fetch_metadata(cfg, log)
    node = Node(metadata)
    phases = Phases(cfg, log, node)
    phases_holder.append(phases)
    if not node.name:
        raise Fatal("metadata has no `name`", EXIT_CONFIG, record=False)
    facts = read_json(cfg.facts_file, "facts file")
    secrets = read_json(cfg.secrets_file, "secrets file")
    log.secrets = [str(v) for v in secrets.values() if isinstance(v, str) and v]
    log(f"node {node.name}: role={node.role or '-'} pool={node.pool or '-'} cluster={node.cluster or '-'}",
        console=True)
    extract_bundle(cfg)
    consul = facts.get("consul") or {}
    # In bastion mode this node is about to become the Consul server: nothing to record into yet.
    hosts_consul = node.role == "bastion" and consul.get("mode") == "bastion" and bool(
        facts.get("bastion_consul_server"))
    phases.enabled = not hosts_consul
    if not node.role:
        raise Fatal(f"metadata has no `role` (expected one of {', '.join(ROLES)})", EXIT_CONFIG)
    if node.role not in ROLES:
        raise Fatal(f"unknown role {node.role!r} in metadata (expected one of {', '.join(ROLES)})", EXIT_CONFIG)
    if node.cluster != facts.get("cluster_name"):
        raise Fatal(f"metadata cluster {node.cluster!r} does not match facts cluster_name "
                    f"{facts.get('cluster_name')!r}", EXIT_CONFIG)
    write_node_file(cfg, node)
    phases.record(PHASE_BOOTING)
    ansible_playbook = ensure_ansible(cfg, log)
    phases.record(PHASE_PROVISIONING)
    run_playbook(cfg, log, node, ansible_playbook)
    if hosts_consul:
        # The bastion's own Consul now exists: recording proves the cluster token works there.
        phases.enabled = True
        phases.record(PHASE_PROVISIONING)


def main() -> int:
    os.umask(0o022)
    cfg = Config()
    try:
        log = Log(cfg.log_file)
    except OSError as err:
        print(f"k8s-node-bootstrap: FATAL: cannot open {cfg.log_file}: {err}", file=sys.stderr)
        return EXIT_FAILED
    log("bootstrap starting")
    phases_holder: list[Phases] = []
    try:
        try:
            bootstrap(cfg, log, phases_holder)
        except Fatal:
            raise
        except Exception as err:  # a bug must still end in one FATAL line and a `failed` record
            raise Fatal(f"unexpected {type(err).__name__}: {err}") from err
    except Fatal as err:
        log(f"FATAL: {err}", console=True)
        if err.record and phases_holder:
            try:
                phases_holder[0].record(PHASE_FAILED, error=str(err))
            except Fatal as again:
                log(f"could not record phase failed: {again}")
        return err.code
    return 0


if __name__ == "__main__":
    sys.exit(main())
