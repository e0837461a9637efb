"""Helpers of tests/e2e/test_deploy.py: a throw-away cdktf project per stack, measured engine runs,
state/synth readers and the per-resource existence lookups against the mini OpenStack.

Run as a script it is the measuring parent of one command:
    python deploy_helpers.py measure <rusage.json> -- <cmd> [args...]
It waits for the command and writes `resource.getrusage(RUSAGE_CHILDREN)` of the whole waited-for
process tree (ru_maxrss: the largest resident set of any process in it), so the test's own
interpreter does not pollute the figure.
"""
from __future__ import annotations

import base64
import gzip
import json
import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

if __name__ == "__main__":  # the measuring parent and the sweep command: make `tests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.proc_tree import descendants  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TOFU_HOME = ROOT / ".tools" / "tofu"
TOFU = TOFU_HOME / "bin" / "tofu"
TOFU_WRAPPER = TOFU_HOME / "bin" / "tofu-cdktf"
TOFURC = TOFU_HOME / "tofurc"
PYTHON = ROOT / ".venv" / "bin" / "python"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
API_TIMEOUT = 60  # seconds per OpenStack API request
REF = re.compile(r"^\$\{([a-z0-9_]+)\.([A-Za-z0-9_]+)\.id\}$")


# ----------------------------------------------------------------------------- checks


class Checks:
    """Every verified fact goes through `check`, so the report can say how many were verified."""

    def __init__(self) -> None:
        self.count = 0

    def check(self, condition: bool, message: str) -> None:
        assert condition, message
        self.count += 1

    def equal(self, actual, expected, message: str) -> None:
        assert actual == expected, f"{message}: expected {expected!r}, got {actual!r}"
        self.count += 1


# ----------------------------------------------------------------------------- memory


def machine_used_mib() -> int:
    """What `free` calls used: total minus available."""
    info = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, value = line.split(":", 1)
        info[key] = int(value.split()[0])
    return (info["MemTotal"] - info["MemAvailable"]) // 1024


def _tree_rss_kib(root_pid: int) -> int:
    total = 0
    for pid in descendants(root_pid):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        total += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    return total


class MemorySampler(threading.Thread):
    """Peaks of the machine's used memory and of the summed RSS of one process tree."""

    def __init__(self, root_pid: int, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.root_pid, self.interval = root_pid, interval
        self.machine_peak_mib = machine_used_mib()
        self.tree_peak_mib = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.machine_peak_mib = max(self.machine_peak_mib, machine_used_mib())
            self.tree_peak_mib = max(self.tree_peak_mib, _tree_rss_kib(self.root_pid) // 1024)
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()


@dataclass
class RunResult:
    argv: list[str]
    returncode: int
    output: str
    seconds: float
    max_rss_mib: float
    tree_rss_peak_mib: int
    machine_used_peak_mib: int


def measured_run(argv: list[str], *, cwd: Path, env: dict, timeout: float) -> RunResult:
    """Run argv under the measuring parent; stdout+stderr captured (merged), ANSI stripped."""
    rusage_file = cwd / f".rusage-{time.monotonic_ns()}.json"
    started = time.monotonic()
    proc = subprocess.Popen([str(PYTHON), __file__, "measure", str(rusage_file), "--", *argv], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sampler = MemorySampler(proc.pid)
    sampler.start()
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # An interrupted OpenTofu stops cleanly and writes its state; a killed one forgets
        # what it created. So SIGINT the tree first, SIGKILL only what is still there later.
        signal_tree(proc.pid, signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            signal_tree(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
        out += f"\n[timed out after {timeout} s]"
    finally:
        sampler.stop()
    seconds = time.monotonic() - started
    maxrss = 0.0
    if rusage_file.exists():
        maxrss = json.loads(rusage_file.read_text())["ru_maxrss_kib"] / 1024
        rusage_file.unlink()
    return RunResult(argv=argv, returncode=proc.returncode, output=ANSI.sub("", out), seconds=round(seconds, 1),
                     max_rss_mib=round(maxrss, 1), tree_rss_peak_mib=sampler.tree_peak_mib,
                     machine_used_peak_mib=sampler.machine_peak_mib)


def signal_tree(pid: int, sig: int) -> None:
    """Signal a process we started and all its descendants (by pid, never by name), children first."""
    for target in reversed(descendants(pid)):
        try:
            os.kill(target, sig)
        except ProcessLookupError:
            pass


# ----------------------------------------------------------------------------- project


class SecretEnv(dict):
    """Environment variables holding credentials: usable as a dict, never printed."""

    def __repr__(self) -> str:
        return f"SecretEnv(keys={sorted(self)})"

    __str__ = __repr__


@dataclass
class StackProject:
    """A cdktf project in a private temp dir: its own cdktf.json, settings dirs and state."""

    workdir: Path
    env_name: str
    # Kept out of repr(): pytest prints arguments of failing frames.
    os_env: dict[str, str] = field(repr=False)
    consul_token: str = field(repr=False)
    runs: list[RunResult] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.workdir, 0o700)  # state, plans and user-data hold the token
        (self.workdir / "cdktf.json").write_text(json.dumps({
            "language": "python", "app": f"{PYTHON} {ROOT / 'main.py'}", "projectId": f"e2e-{self.env_name}",
            "sendCrashReports": "false", "terraformProviders": [], "terraformModules": [], "context": {},
        }))

    @property
    def output_dir(self) -> Path:
        return self.workdir / "cdktf.out"

    @property
    def stack_dir(self) -> Path:
        return self.output_dir / "stacks" / self.env_name

    @property
    def state_file(self) -> Path:
        # LocalBackend path ../../../terraform.<env>.tfstate from <output>/stacks/<env>.
        return (self.stack_dir / "../../.." / f"terraform.{self.env_name}.tfstate").resolve()

    def settings_dir(self, label: str, settings: dict) -> Path:
        import yaml

        directory = self.workdir / f"stacks-{label}"
        directory.mkdir(exist_ok=True)
        (directory / f"{self.env_name}.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
        return directory

    def env(self, settings_dir: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OS_", "TF_"))}
        env.update(self.os_env)
        env.update(
            PATH=os.pathsep.join([str(ROOT / "node_modules" / ".bin"), str(TOFU_HOME / "bin"), env.get("PATH", "")]),
            TERRAFORM_BINARY_NAME=str(TOFU_WRAPPER), TF_CLI_CONFIG_FILE=str(TOFURC), CHECKPOINT_DISABLE="1",
            CI="1",  # cdktf: no prompts, no spinner
            CLUSTER_STACKS_DIR=str(settings_dir), CLUSTER_ENVS=self.env_name,
            TF_VAR_consul_token=self.consul_token,
        )
        env.pop("OS_CLOUD", None)
        return env

    def cdktf(self, settings_dir: Path, *args: str, stack: bool = True, timeout: float = 600) -> RunResult:
        """`cdktf <args> [<env>] --output <workdir>/cdktf.out` (synth takes no stack argument)."""
        cdktf = str(ROOT / "node_modules" / ".bin" / "cdktf")
        target = [self.env_name] if stack else []
        result = measured_run([cdktf, *args, *target, "--output", str(self.output_dir)],
                              cwd=self.workdir, env=self.env(settings_dir), timeout=timeout)
        self.runs.append(result)
        return result

    def tofu(self, settings_dir: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([str(TOFU), *args], cwd=self.stack_dir, env=self.env(settings_dir), text=True,
                              capture_output=True, timeout=timeout, check=False)

    def synth_json(self) -> dict:
        return json.loads((self.stack_dir / "cdk.tf.json").read_text())

    def state(self) -> dict:
        return json.loads(self.state_file.read_text())


# ----------------------------------------------------------------------------- state and synth readers


def managed_instances(state: dict) -> list[tuple[str, str, object, dict]]:
    """(type, name, index_key, attributes) of every managed resource instance in a v4 state."""
    out = []
    for res in state.get("resources", []):
        if res["mode"] != "managed":
            continue
        for inst in res["instances"]:
            out.append((res["type"], res["name"], inst.get("index_key"), inst["attributes"]))
    return out


def resource_ids(state: dict) -> dict[str, str]:
    """`type.name` -> id, for resources without for_each (what `${type.name.id}` refers to)."""
    return {f"{t}.{n}": a["id"] for t, n, key, a in managed_instances(state) if key is None}


def resolve_ref(value: str, ids: dict[str, str]) -> str:
    match = REF.match(value)
    if not match:
        return value
    return ids[f"{match.group(1)}.{match.group(2)}"]


def synth_resources(synth: dict, rtype: str) -> dict[str, dict]:
    return synth.get("resource", {}).get(rtype, {})


def decode_user_data(b64: str) -> str:
    """What Terraform's base64gzip produced, back to the cloud-config text."""
    return gzip.decompress(base64.b64decode(b64)).decode("utf-8")


# ----------------------------------------------------------------------------- existence lookups


def _member(conn, attrs):
    return conn.load_balancer.get_member(attrs["id"], attrs["pool_id"])


LOOKUPS = {
    "openstack_networking_network_v2": lambda c, a: c.network.get_network(a["id"]),
    "openstack_networking_subnet_v2": lambda c, a: c.network.get_subnet(a["id"]),
    "openstack_networking_router_v2": lambda c, a: c.network.get_router(a["id"]),
    # The interface's id is the router port's id.
    "openstack_networking_router_interface_v2": lambda c, a: c.network.get_port(a["id"]),
    "openstack_networking_secgroup_v2": lambda c, a: c.network.get_security_group(a["id"]),
    "openstack_networking_secgroup_rule_v2": lambda c, a: c.network.get_security_group_rule(a["id"]),
    "openstack_networking_port_v2": lambda c, a: c.network.get_port(a["id"]),
    "openstack_networking_floatingip_v2": lambda c, a: c.network.get_ip(a["id"]),
    # The association's id is the floating IP's id; it exists when the IP sits on the port.
    "openstack_networking_floatingip_associate_v2": lambda c, a: c.network.get_ip(a["id"]),
    "openstack_compute_instance_v2": lambda c, a: c.compute.get_server(a["id"]),
    "openstack_compute_servergroup_v2": lambda c, a: c.compute.get_server_group(a["id"]),
    "openstack_lb_loadbalancer_v2": lambda c, a: c.load_balancer.get_load_balancer(a["id"]),
    "openstack_lb_listener_v2": lambda c, a: c.load_balancer.get_listener(a["id"]),
    "openstack_lb_pool_v2": lambda c, a: c.load_balancer.get_pool(a["id"]),
    "openstack_lb_monitor_v2": lambda c, a: c.load_balancer.get_health_monitor(a["id"]),
    "openstack_lb_member_v2": _member,
}


def exists(conn, rtype: str, attrs: dict) -> bool:
    from openstack import exceptions

    try:
        LOOKUPS[rtype](conn, attrs)
        return True
    except exceptions.NotFoundException:
        return False


def project_leftovers(conn, cluster: str, state_ids: set[str]) -> dict[str, list[str]]:
    """Everything in the project that belongs to the stack: by id from the state, or by the
    cluster's name prefix (servers, ports, networks, ... named `<cluster>` / `<cluster>-*`)."""
    def ours(res) -> bool:
        name = getattr(res, "name", None) or ""
        return res.id in state_ids or name == cluster or name.startswith(f"{cluster}-")

    project = conn.current_project_id
    networks = [n for n in conn.network.networks(project_id=project) if ours(n)]
    net_ids = {n.id for n in networks} | state_ids
    found = {
        "servers": [s for s in conn.compute.servers() if ours(s)],
        "ports": [p for p in conn.network.ports(project_id=project)
                  if ours(p) or p.network_id in net_ids or p.device_id in state_ids],
        "networks": networks,
        "subnets": [s for s in conn.network.subnets(project_id=project) if ours(s)],
        "routers": [r for r in conn.network.routers(project_id=project) if ours(r)],
        "security_groups": [g for g in conn.network.security_groups(project_id=project)
                            if g.name != "default" and ours(g)],
        "server_groups": [g for g in conn.compute.server_groups() if ours(g)],
        "floating_ips": [f for f in conn.network.ips(project_id=project)
                         if ours(f) or (f.description or "").startswith(f"{cluster}-")],
        "load_balancers": [lb for lb in conn.load_balancer.load_balancers(project_id=project) if ours(lb)],
    }
    return {kind: [f"{getattr(r, 'name', '') or ''}({r.id})" for r in items] for kind, items in found.items() if items}


def sweep_project(conn, cluster: str, state_ids: set[str], wait: float = 300) -> list[str]:
    """Last resort after a failed destroy (e.g. an engine killed before it wrote its state):
    delete what `project_leftovers` finds, in dependency order. Returns the errors."""
    from openstack import exceptions

    errors: list[str] = []

    def attempt(what, fn, *args, **kwargs):
        try:
            fn(*args, **kwargs)
        except exceptions.NotFoundException:
            pass
        except Exception as exc:  # keep sweeping; report at the end
            errors.append(f"{what}: {exc.__class__.__name__}: {exc}")

    project = conn.current_project_id

    def ours(res) -> bool:
        name = getattr(res, "name", None) or ""
        return res.id in state_ids or name == cluster or name.startswith(f"{cluster}-")

    def listed(what, fn, *args, **kwargs) -> list:
        try:
            return list(fn(*args, **kwargs))
        except Exception as exc:  # an API that does not answer: sweep the others anyway
            errors.append(f"listing {what}: {exc.__class__.__name__}: {exc}")
            return []

    for lb in [lb for lb in listed("load balancers", conn.load_balancer.load_balancers, project_id=project) if ours(lb)]:
        attempt(f"load balancer {lb.name}", conn.load_balancer.delete_load_balancer, lb, cascade=True)
        attempt(f"wait load balancer {lb.name}", conn.load_balancer.wait_for_delete, lb, wait=wait)
    servers = [s for s in listed("servers", conn.compute.servers) if ours(s)]
    for server in servers:
        attempt(f"server {server.name}", conn.compute.delete_server, server)
    for server in servers:
        attempt(f"wait server {server.name}", conn.compute.wait_for_delete, server, wait=wait)
    networks = [n for n in listed("networks", conn.network.networks, project_id=project) if ours(n)]
    net_ids = {n.id for n in networks} | state_ids
    for fip in listed("floating ips", conn.network.ips, project_id=project):
        if fip.id in state_ids or (fip.description or "").startswith(f"{cluster}-"):
            attempt(f"floating ip {fip.floating_ip_address}", conn.network.delete_ip, fip)
    for router in [r for r in listed("routers", conn.network.routers, project_id=project) if ours(r)]:
        for port in listed("router ports", conn.network.ports, device_id=router.id):
            if port.device_owner == "network:router_interface":
                attempt(f"router interface {port.id}", conn.network.remove_interface_from_router, router,
                        port_id=port.id)
        attempt(f"router {router.name}", conn.network.delete_router, router)
    for port in listed("ports", conn.network.ports, project_id=project):
        if ours(port) or port.network_id in net_ids:
            attempt(f"port {port.name}", conn.network.delete_port, port)
    for subnet in [s for s in listed("subnets", conn.network.subnets, project_id=project)
                   if ours(s) or s.network_id in net_ids]:
        attempt(f"subnet {subnet.name}", conn.network.delete_subnet, subnet)
    for network in networks:
        attempt(f"network {network.name}", conn.network.delete_network, network)
    for group in listed("security groups", conn.network.security_groups, project_id=project):
        if group.name != "default" and ours(group):
            attempt(f"security group {group.name}", conn.network.delete_security_group, group)
    for group in [g for g in listed("server groups", conn.compute.server_groups) if ours(g)]:
        attempt(f"server group {group.name}", conn.compute.delete_server_group, group)
    return errors


# ----------------------------------------------------------------------------- measuring parent


def _measure(argv: list[str]) -> int:
    out_file, sep, *cmd = argv
    assert sep == "--" and cmd, "usage: deploy_helpers.py measure <rusage.json> -- <cmd> [args...]"
    child = subprocess.Popen(cmd)
    # The test interrupts the whole tree on a timeout; this parent must survive to report.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    rc = child.wait()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    Path(out_file).write_text(json.dumps({"ru_maxrss_kib": usage.ru_maxrss, "user_s": usage.ru_utime,
                                          "system_s": usage.ru_stime, "returncode": rc}))
    return rc


def connect(clouds_file: str, cloud: str, api_timeout: float = API_TIMEOUT):
    """An openstacksdk connection whose requests give up after api_timeout seconds (a wedged
    API must fail the run, not hang it)."""
    import openstack
    from openstack.config import loader

    config = loader.OpenStackConfig(config_files=[str(clouds_file)], load_envvars=False)
    return openstack.connection.Connection(config=config.get_one(cloud=cloud, api_timeout=api_timeout))


def _sweep_cli(argv: list[str]) -> int:
    clouds_file, cloud, cluster = argv
    conn = connect(clouds_file, cloud)
    print("left before:", project_leftovers(conn, cluster, set()))
    errors = sweep_project(conn, cluster, set())
    print("errors:", errors)
    print("left after:", project_leftovers(conn, cluster, set()))
    return 1 if errors else 0


USAGE = ("usage: deploy_helpers.py measure <rusage.json> -- <cmd> [args...]\n"
         "       deploy_helpers.py sweep <clouds.yaml> <cloud> <cluster>   (delete a failed run's leftovers)")

if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "measure":
        sys.exit(_measure(sys.argv[2:]))
    if len(sys.argv) == 5 and sys.argv[1] == "sweep":
        sys.exit(_sweep_cli(sys.argv[2:]))
    sys.exit(USAGE)
