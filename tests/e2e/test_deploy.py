"""End-to-end: `cdktf deploy` / scale / `cdktf destroy` of dev and of prod's shape on the mini OpenStack.

Each stack lives in a private temp project (own cdktf.json, settings copy, output dir and local
state), so the repository's stacks/ and cdktf.out stay untouched. The engine is OpenTofu through
the `tofu-cdktf` wrapper; the cloud user is the non-admin `k8s-e2e`; only reading server hosts and
user-data needs the admin. Everything deployed is destroyed again, also when a check fails.

The run writes tests/e2e/results/e2e.json and docs/e2e-report.md (times, memory, counts).
"""
from __future__ import annotations

import copy
import datetime as dt
import json
import os
import platform
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from tests.e2e import deploy_helpers as h
from tests.e2e.conftest import ADMIN_CLOUD, STATE_DIR, USER_CLOUD
from tests.helpers import ROOT, require_tool

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.filterwarnings("ignore:::openstack.*"),
]

RESULTS_DIR = ROOT / "tests" / "e2e" / "results"
REPORT = ROOT / "docs" / "e2e-report.md"
BUILD_TIMES = ROOT / ".tools" / "tofu" / "build-times.json"
BRINGUP_TIMES = STATE_DIR / "bringup-times.json"
ENGINE_TIMEOUT = 480
RESULTS: dict = {"stacks": {}}

# prod.yaml adapted to the mini cloud: what it lacks, nothing else (see _prod_for_mini_cloud).
PROD_POOL_COUNTS = {"general": 2, "memory": 1}


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def engine():
    return {
        "cdktf": require_tool("cdktf", "node_modules/.bin/cdktf"),
        "tofu": require_tool("tofu", ".tools/tofu/bin/tofu"),
        "tofu-cdktf": require_tool("tofu-cdktf", ".tools/tofu/bin/tofu-cdktf"),
    }


@pytest.fixture(scope="module")
def user(clouds_file, os_user):
    """Like conftest's os_user (which proves the cloud answers, or skips/fails), but every request
    times out: the conftest connections have no timeout, and a wedged nova-api hung a run."""
    conn = h.connect(clouds_file, USER_CLOUD)
    yield conn
    conn.close()


@pytest.fixture(scope="module")
def admin(clouds_file, os_admin):
    conn = h.connect(clouds_file, ADMIN_CLOUD)
    yield conn
    conn.close()


@pytest.fixture(scope="module")
def os_env(clouds_file) -> dict[str, str]:
    """OS_* variables of the non-admin cloud for the provider (as an openrc would set them)."""
    auth_cloud = yaml.safe_load(Path(clouds_file).read_text())["clouds"][USER_CLOUD]
    auth = auth_cloud["auth"]
    return h.SecretEnv({
        "OS_AUTH_URL": auth["auth_url"], "OS_USERNAME": auth["username"], "OS_PASSWORD": auth["password"],
        "OS_PROJECT_NAME": auth["project_name"], "OS_USER_DOMAIN_NAME": auth["user_domain_name"],
        "OS_PROJECT_DOMAIN_NAME": auth["project_domain_name"], "OS_REGION_NAME": auth_cloud["region_name"],
        "OS_INTERFACE": auth_cloud.get("interface", "public"), "OS_IDENTITY_API_VERSION": "3",
    })


@pytest.fixture(scope="module", autouse=True)
def report():
    RESULTS["started_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    RESULTS["machine_used_mib_at_start"] = h.machine_used_mib()
    started = time.monotonic()
    yield RESULTS
    RESULTS["total_seconds"] = round(time.monotonic() - started, 1)
    _write_report(RESULTS)


def _project(tmp_path_factory, env_name: str, os_env: dict) -> h.StackProject:
    return h.StackProject(workdir=tmp_path_factory.mktemp(f"e2e-{env_name}"), env_name=env_name,
                          os_env=os_env, consul_token=str(uuid.uuid4()))


# ----------------------------------------------------------------------------- verification


def verify_stack(p: h.StackProject, settings_dir: Path, user, admin, checks: h.Checks) -> dict:
    """Everything the brief promises about a deployed stack; returns a few facts for the report."""
    from constructs.user_data import ROLES, render_cloud_config
    from stacks.node_facts import control_plane_ips, node_facts
    from stacks.settings import load_settings

    settings = load_settings(p.env_name, settings_dir)
    synth, state = p.synth_json(), p.state()
    instances = h.managed_instances(state)
    ids = h.resource_ids(state)

    # Every resource of the state exists in the cloud.
    for rtype, name, key, attrs in instances:
        checks.check(rtype in h.LOOKUPS, f"no existence lookup for resource type {rtype}")
        checks.check(h.exists(user, rtype, attrs), f"{rtype}.{name}[{key}] ({attrs['id']}) is not in the cloud")

    # Servers: the expected set, ACTIVE, metadata as synthesized, user-data as rendered.
    expected_nodes = {n.name: n for n in settings.expected_nodes()}
    servers = {a["name"]: (name, a) for t, name, _, a in instances if t == "openstack_compute_instance_v2"}
    checks.equal(sorted(servers), sorted(expected_nodes), "servers in the state")
    synth_servers = h.synth_resources(synth, "openstack_compute_instance_v2")
    api_host = urlparse(state["outputs"]["api_endpoint"]["value"]).hostname
    facts = node_facts(settings, api_public_address=api_host)
    rendered = {role: render_cloud_config(role, facts, {"consul_token": p.consul_token}) for role in ROLES}
    hosts: dict[str, str] = {}
    server_ports: dict[str, str] = {}
    for node_name, (resource_name, attrs) in servers.items():
        server = user.compute.get_server(attrs["id"])
        checks.equal(server.status, "ACTIVE", f"status of {node_name}")
        checks.equal(dict(server.metadata), synth_servers[resource_name]["metadata"], f"metadata of {node_name}")
        role = expected_nodes[node_name].role
        checks.equal(server.metadata.get("role"), role, f"role of {node_name}")
        checks.check("security_groups" not in synth_servers[resource_name],
                     f"{resource_name}: security groups belong on the ports, not the server")
        raw = admin.compute.get(f"/servers/{attrs['id']}", microversion="2.3")
        assert raw.status_code == 200, raw.text
        body = raw.json()["server"]
        checks.equal(h.decode_user_data(body["OS-EXT-SRV-ATTR:user_data"]), rendered[role],
                     f"user-data of {node_name} (read back through Nova)")
        hosts[node_name] = body["OS-EXT-SRV-ATTR:host"]
        checks.equal(len(attrs["network"]), 1, f"{node_name} has one port")
        server_ports[node_name] = attrs["network"][0]["port"]

    # Control plane: anti-affinity group, three (count) different hosts.
    cp_names = sorted(n for n, spec in expected_nodes.items() if spec.role == "control-plane")
    cp_ids = {servers[n][1]["id"] for n in cp_names}
    cp_group_ids = {servers[n][1]["scheduler_hints"][0]["group"] for n in cp_names}
    checks.equal(len(cp_group_ids), 1, "control-plane server groups")
    group = admin.compute.get_server_group(cp_group_ids.pop())
    policy = getattr(group, "policy", None) or (group.policies or [None])[0]
    checks.equal(policy, settings.control_plane.server_group_policy, "control-plane server group policy")
    checks.equal(set(group.member_ids), cp_ids, "control-plane server group members")
    checks.equal(len({hosts[n] for n in cp_names}), len(cp_names),
                 f"control-plane hosts all different ({ {n: hosts[n] for n in cp_names} })")

    # Security groups on the ports, as synthesized.
    synth_ports = h.synth_resources(synth, "openstack_networking_port_v2")
    state_ports = {a["id"]: name for t, name, _, a in instances if t == "openstack_networking_port_v2"}
    for node_name, port_id in server_ports.items():
        checks.check(port_id in state_ports, f"{node_name}'s port {port_id} is a port of the stack")
    for port_id, resource_name in state_ports.items():
        port = user.network.get_port(port_id)
        want = sorted(h.resolve_ref(ref, ids) for ref in synth_ports[resource_name]["security_group_ids"])
        checks.equal(sorted(port.security_group_ids), want, f"security groups on port {port.name}")

    # Rules: exactly the synthesized for_each maps, plus Neutron's default egress.
    expected_rules: dict[str, set] = {}
    for rule_resource in h.synth_resources(synth, "openstack_networking_secgroup_rule_v2").values():
        by_group = "remote_group_id" in rule_resource
        for rule in rule_resource["for_each"].values():
            source = h.resolve_ref(rule["source"], ids)
            expected_rules.setdefault(h.resolve_ref(rule["security_group_id"], ids), set()).add((
                rule["protocol"], rule["port_range_min"] or None, rule["port_range_max"] or None,
                source if by_group else None, None if by_group else source))
    groups = [a["id"] for t, _, _, a in instances if t == "openstack_networking_secgroup_v2"]
    checks.equal(sorted(expected_rules), sorted(groups), "security groups with rules")
    rule_count = 0
    for group_id in groups:
        rules = list(user.network.security_group_rules(security_group_id=group_id))
        ingress = [(r.protocol, r.port_range_min, r.port_range_max, r.remote_group_id, r.remote_ip_prefix)
                   for r in rules if r.direction == "ingress"]
        checks.check(all(r.ether_type == "IPv4" for r in rules if r.direction == "ingress"), "ingress is IPv4")
        checks.equal(len(ingress), len(set(ingress)), f"no duplicate ingress rules in {group_id}")
        checks.equal(set(ingress), expected_rules[group_id], f"ingress rules of group {group_id}")
        egress = sorted((r.ether_type, r.protocol, r.port_range_min, r.port_range_max, r.remote_group_id,
                         r.remote_ip_prefix) for r in rules if r.direction == "egress")
        checks.equal(egress, [("IPv4", None, None, None, None, None), ("IPv6", None, None, None, None, None)],
                     f"egress rules of group {group_id} (Neutron's defaults)")
        rule_count += len(ingress)

    # API endpoint.
    endpoint: dict = {"type": settings.kubernetes.api_endpoint.type, "public": api_host}
    if settings.kubernetes.api_endpoint.type == "octavia":
        lbs = [a for t, _, _, a in instances if t == "openstack_lb_loadbalancer_v2"]
        checks.equal(len(lbs), 1, "load balancers")
        lb = user.load_balancer.get_load_balancer(lbs[0]["id"])
        checks.equal(lb.provisioning_status, "ACTIVE", "load balancer provisioning status")
        checks.equal(lb.vip_address, settings.network.api_vip, "load balancer VIP")
        listeners = list(user.load_balancer.listeners(load_balancer_id=lb.id))
        checks.equal(len(listeners), 1, "listeners")
        listener = listeners[0]
        checks.equal((listener.protocol, listener.protocol_port), ("TCP", 6443), "listener")
        checks.check(listener.timeout_client_data >= 3_600_000, f"client timeout {listener.timeout_client_data}")
        checks.check(listener.timeout_member_data >= 3_600_000, f"member timeout {listener.timeout_member_data}")
        pools = list(user.load_balancer.pools(loadbalancer_id=lb.id))
        checks.equal(len(pools), 1, "pools")
        members = list(user.load_balancer.members(pools[0].id))
        checks.equal(sorted(m.address for m in members), sorted(control_plane_ips(settings).values()),
                     "load balancer members = control-plane fixed addresses")
        checks.check(all(m.protocol_port == 6443 for m in members), "members on 6443")
        fip = next(user.network.ips(floating_ip_address=api_host))
        checks.equal(fip.port_id, lb.vip_port_id, "API floating IP sits on the VIP port")
        endpoint.update(listener_timeouts_ms=[listener.timeout_client_data, listener.timeout_member_data],
                        members=sorted(m.address for m in members))

    # The token: nowhere in state, outputs, synth output or cdktf's console.
    token = p.consul_token
    checks.check(token not in p.state_file.read_text(), "consul token in the state file")
    out = p.tofu(settings_dir, "output", "-json")
    assert out.returncode == 0, out.stderr
    checks.check(token not in out.stdout + out.stderr, "consul token in `tofu output -json`")
    for path in p.output_dir.rglob("*"):
        if path.is_file() and ".terraform" not in path.parts and not path.name.endswith(".tfplan"):
            checks.check(token.encode() not in path.read_bytes(), f"consul token in {path.name}")
    for run in p.runs:
        checks.check(token not in run.output, f"consul token in the output of cdktf {run.argv[1]}")

    return {"resources": len(instances), "servers": len(servers), "security_group_rules": rule_count,
            "control_plane_hosts": {n: hosts[n] for n in cp_names}, "api_endpoint": endpoint}


def assert_gone(p: h.StackProject, user, checks: h.Checks, state_ids: set[str], cluster: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        left = h.project_leftovers(user, cluster, state_ids)
        if not left or time.monotonic() > deadline:
            break
        time.sleep(3)
    checks.equal(left, {}, "left in the project after destroy")
    checks.equal(h.managed_instances(p.state()), [], "resources in the state after destroy")


# ----------------------------------------------------------------------------- steps


def _run_ok(result: h.RunResult, what: str) -> h.RunResult:
    tail = result.output[-6000:]
    errors = [line.strip(" │") for line in result.output.splitlines() if "Error:" in line]
    if result.returncode != 0 and errors:
        what = f"{what} ({errors[0][:200]})"
    assert result.returncode == 0, f"{what} failed (rc {result.returncode}):\n{tail}"
    return result


def _engine_entry(result: h.RunResult) -> dict:
    return {"seconds": result.seconds, "max_rss_mib": result.max_rss_mib,
            "tree_rss_peak_mib": result.tree_rss_peak_mib, "machine_used_peak_mib": result.machine_used_peak_mib}


def _cleanup(p: h.StackProject, settings_dir: Path) -> None:
    """Best-effort destroy after a failure: cdktf first, the engine directly if that fails."""
    if not p.state_file.exists() or not h.managed_instances(p.state()):
        return
    result = p.cdktf(settings_dir, "destroy", "--auto-approve", timeout=ENGINE_TIMEOUT)
    if result.returncode != 0 and p.stack_dir.is_dir():
        p.tofu(settings_dir, "destroy", "-auto-approve", "-input=false", timeout=ENGINE_TIMEOUT)


def deploy_verify_destroy(p: h.StackProject, settings: dict, user, admin, *, scale_pool: str | None,
                          adaptations: list[str]) -> None:
    checks = h.Checks()
    entry: dict = {"adaptations": adaptations, "status": "failed", "steps": {}}
    RESULTS["stacks"][p.env_name] = entry
    settings_dir = p.settings_dir("initial", settings)
    state_ids: set[str] = set()
    destroyed = False
    try:
        deployed = _run_ok(p.cdktf(settings_dir, "deploy", "--auto-approve", timeout=ENGINE_TIMEOUT), "cdktf deploy")
        entry["steps"]["deploy"] = _engine_entry(deployed)
        checks.check("OpenTofu" in deployed.output, "cdktf drove OpenTofu")
        facts = verify_stack(p, settings_dir, user, admin, checks)
        entry.update(resources_created=facts["resources"], facts=facts)
        state_ids = {a["id"] for *_, a in h.managed_instances(p.state())}

        if scale_pool:
            scaled = copy.deepcopy(settings)
            pool = next(pl for pl in scaled["worker_pools"] if pl["name"] == scale_pool)
            pool["count"] += 1
            new_node = f"{scaled['cluster']['name']}-{scale_pool}-{pool['count']}"
            settings_dir = p.settings_dir("scaled", scaled)
            entry["steps"]["scale_plan"] = check_scale_plan(p, settings_dir, new_node, checks)
            redeployed = _run_ok(p.cdktf(settings_dir, "deploy", "--auto-approve", timeout=ENGINE_TIMEOUT),
                                 "cdktf deploy (scaled)")
            entry["steps"]["redeploy"] = _engine_entry(redeployed)
            checks.check("2 added, 0 changed, 0 destroyed" in redeployed.output, "re-deploy added exactly 2")
            facts = verify_stack(p, settings_dir, user, admin, checks)
            new = [a for t, _, k, a in h.managed_instances(p.state())
                   if t == "openstack_compute_instance_v2" and k == new_node]
            checks.equal(len(new), 1, f"{new_node} in the state")
            checks.equal(user.compute.get_server(new[0]["id"]).status, "ACTIVE", f"{new_node} status")
            entry.update(resources_after_scale=facts["resources"], scaled_node=new_node)
            state_ids = {a["id"] for *_, a in h.managed_instances(p.state())}

        destroyed_run = _run_ok(p.cdktf(settings_dir, "destroy", "--auto-approve", timeout=ENGINE_TIMEOUT),
                                "cdktf destroy")
        destroyed = True
        entry["steps"]["destroy"] = _engine_entry(destroyed_run)
        assert_gone(p, user, checks, state_ids, settings["cluster"]["name"])
        for run in p.runs:
            checks.check(p.consul_token not in run.output, f"consul token in the output of cdktf {run.argv[1]}")
        entry["status"] = "passed"
    except BaseException as exc:
        # First line only: enough to see which step broke (outputs are checked to be token-free).
        entry["error"] = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0][:300]
        raise
    finally:
        entry["checks"] = checks.count
        entry["max_rss_mib"] = max((r.max_rss_mib for r in p.runs), default=0)
        entry["tree_rss_peak_mib"] = max((r.tree_rss_peak_mib for r in p.runs), default=0)
        entry["machine_used_peak_mib"] = max((r.machine_used_peak_mib for r in p.runs), default=0)
        if not destroyed:
            _cleanup(p, settings_dir)
        cluster = settings["cluster"]["name"]
        if h.project_leftovers(user, cluster, state_ids):
            # Only after a failure: the engine could not remove everything (or lost its state).
            errors = h.sweep_project(user, cluster, state_ids)
            entry["swept"] = True
            assert not errors, f"sweep after a failed run left: {errors}"


def check_scale_plan(p: h.StackProject, settings_dir: Path, new_node: str, checks: h.Checks) -> dict:
    """Plan the scaled settings before applying: only the new worker's port and server appear."""
    started = time.monotonic()
    _run_ok(p.cdktf(settings_dir, "synth", stack=False), "cdktf synth (scaled)")
    for args in (("init", "-input=false"), ("plan", "-input=false", "-out=scale.tfplan")):
        result = p.tofu(settings_dir, *args)
        assert result.returncode == 0, f"tofu {args[0]}: {result.stderr[-4000:]}"
    shown = p.tofu(settings_dir, "show", "-json", "scale.tfplan")
    assert shown.returncode == 0, shown.stderr[-4000:]
    # A saved plan carries the sensitive variable's value: it must not outlive this check.
    (p.stack_dir / "scale.tfplan").unlink()
    plan = json.loads(shown.stdout)
    del shown
    changes = sorted((rc["change"]["actions"], rc["type"], rc.get("index")) for rc in plan["resource_changes"]
                     if rc["change"]["actions"] != ["no-op"])
    checks.equal(changes, [(["create"], "openstack_compute_instance_v2", new_node),
                           (["create"], "openstack_networking_port_v2", new_node)], "planned changes")
    kept = [rc for rc in plan["resource_changes"] if rc["change"]["actions"] == ["no-op"]]
    checks.check(any(rc["type"] == "openstack_compute_instance_v2" and str(rc.get("index", "")).startswith(
        f"{p.env_name}-cp-") for rc in kept), "control-plane servers are in the plan, unchanged")
    checks.check(all(oc["actions"] == ["no-op"] for oc in plan.get("output_changes", {}).values()),
                 "outputs unchanged")
    return {"seconds": round(time.monotonic() - started, 1), "planned_creates": [f"{t}[{i}]" for _, t, i in changes],
            "unchanged": len(kept)}


# ----------------------------------------------------------------------------- the tests


def test_dev_deploy_scale_destroy(engine, os_env, user, admin, tmp_path_factory):
    settings = yaml.safe_load((ROOT / "stacks" / "dev.yaml").read_text())
    missing = _cloud_gaps(user, settings)
    assert not missing, f"the cloud lacks what dev.yaml needs (dev must deploy unchanged): {missing}"
    p = _project(tmp_path_factory, "dev", os_env)
    deploy_verify_destroy(p, settings, user, admin, scale_pool=settings["worker_pools"][0]["name"],
                          adaptations=["none: stacks/dev.yaml deployed unchanged"])


def test_prod_shape_deploy_destroy(engine, os_env, user, admin, tmp_path_factory):
    settings, adaptations = _prod_for_mini_cloud(user, yaml.safe_load((ROOT / "stacks" / "prod.yaml").read_text()))
    missing = _cloud_gaps(user, settings)
    assert not missing, f"adapted prod settings still need: {missing}"
    p = _project(tmp_path_factory, "prod", os_env)
    deploy_verify_destroy(p, settings, user, admin, scale_pool=None, adaptations=adaptations)


# ----------------------------------------------------------------------------- settings vs. the cloud


def _cloud_gaps(conn, settings: dict) -> list[str]:
    gaps = []
    osettings = settings["openstack"]
    if conn.image.find_image(osettings["image"]) is None:
        gaps.append(f"image {osettings['image']}")
    if conn.compute.find_keypair(osettings["key_pair"]) is None:
        gaps.append(f"keypair {osettings['key_pair']}")
    external = conn.network.find_network(osettings["external_network"])
    if external is None or not external.is_router_external:
        gaps.append(f"external network {osettings['external_network']}")
    flavors = {f.name for f in conn.compute.flavors()}
    wanted = {settings.get("bastion", {}).get("flavor", "m1.small"),
              settings.get("control_plane", {}).get("flavor", "m1.large")}
    wanted |= {pool["flavor"] for pool in settings["worker_pools"]}
    gaps += [f"flavor {f}" for f in sorted(wanted - flavors)]
    zones = {z.name for z in conn.compute.availability_zones()}
    gaps += [f"availability zone {z}" for z in osettings.get("availability_zones", ["nova"]) if z not in zones]
    if any(osettings.get("boot_volume_size_gb", {}).values()) and not conn.has_service("block-storage"):
        gaps.append("cinder (boot volumes)")
    if settings.get("consul", {}).get("token", {}).get("type") == "barbican" and not conn.has_service("key-manager"):
        gaps.append("barbican (consul token)")
    return gaps


def _prod_for_mini_cloud(conn, prod: dict) -> tuple[dict, list[str]]:
    """prod.yaml with only what the mini cloud lacks changed; every change is listed."""
    s = copy.deepcopy(prod)
    notes = []
    zones = {z.name for z in conn.compute.availability_zones()}
    if not set(s["openstack"].get("availability_zones", [])) <= zones:
        notes.append(f"openstack.availability_zones {s['openstack']['availability_zones']} -> [nova] "
                     f"(the mini cloud has only {sorted(zones)})")
        s["openstack"]["availability_zones"] = ["nova"]
    if any(s["openstack"].get("boot_volume_size_gb", {}).values()) and not conn.has_service("block-storage"):
        notes.append(f"openstack.boot_volume_size_gb {s['openstack']['boot_volume_size_gb']} -> removed "
                     "(boot from the image: no Cinder)")
        s["openstack"].pop("boot_volume_size_gb")
    if s["consul"]["token"]["type"] == "barbican" and not conn.has_service("key-manager"):
        notes.append("consul.token barbican secret -> {type: variable, variable: consul_token} (no Barbican)")
        s["consul"]["token"] = {"type": "variable", "variable": "consul_token"}
    if s["state_backend"]["type"] != "local":
        notes.append(f"state_backend {s['state_backend']['type']} -> local (no S3 endpoint here)")
        s["state_backend"] = {"type": "local"}
    for pool in s["worker_pools"]:
        if pool["name"] in PROD_POOL_COUNTS and pool["count"] != PROD_POOL_COUNTS[pool["name"]]:
            notes.append(f"worker_pools[{pool['name']}].count {pool['count']} -> {PROD_POOL_COUNTS[pool['name']]} "
                         "(fake compute hosts on 2 shared cores: keep the run short)")
            pool["count"] = PROD_POOL_COUNTS[pool["name"]]
    flavors = {f.name for f in conn.compute.flavors()}
    for where, holder in [("bastion", s.get("bastion", {})), ("control_plane", s.get("control_plane", {}))] + \
            [(f"worker_pools[{pl['name']}]", pl) for pl in s["worker_pools"]]:
        if holder.get("flavor") and holder["flavor"] not in flavors:
            notes.append(f"{where}.flavor {holder['flavor']} -> m1.large (missing in the mini cloud)")
            holder["flavor"] = "m1.large"
    if not any("flavor" in n for n in notes):
        notes.append("flavors kept: " + ", ".join(sorted({pl["flavor"] for pl in s["worker_pools"]}
                                                         | {s["control_plane"]["flavor"], s["bastion"]["flavor"]}))
                     + " all exist in the mini cloud")
    return s, notes


# ----------------------------------------------------------------------------- report


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_report(results: dict) -> None:
    results["engine_build"] = _read_json(BUILD_TIMES)
    results["openstack_bringup"] = _read_json(BRINGUP_TIMES)
    results["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform(),
                          "load_average_at_end": list(os.getloadavg())}
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "e2e.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")

    def num(value, unit=""):
        return "n/a" if value is None else f"{value}{unit}"

    build = results["engine_build"] or {}
    bringup = results["openstack_bringup"] or {}
    lines = [
        "# End-to-end run: deploy, scale, destroy on the mini OpenStack",
        "",
        "Generated by `.venv/bin/pytest -m e2e tests/e2e/test_deploy.py` (do not edit; raw data in",
        "`tests/e2e/results/e2e.json`). Engine: OpenTofu via `tofu-cdktf`; cloud: docs/mini-openstack.md.",
        f"Run started {results.get('started_at')}, whole module {num(results.get('total_seconds'), ' s')}, "
        f"{results['machine']['cpus']} cores, load average at end "
        f"{' '.join(f'{x:.1f}' for x in results['machine']['load_average_at_end'])}.",
        "",
        "## Setup times (read from the tools' own records)",
        "",
        "| what | wall time |",
        "| --- | --- |",
        f"| engine + provider build, last build (`go_build_cache`: {build.get('go_build_cache', 'n/a')}) "
        f"| {num(build.get('total_seconds'), ' s')} (tofu {num(build.get('tofu_build_seconds'), ' s')}, "
        f"provider {num(build.get('provider_build_seconds'), ' s')}) |",
    ]
    for kind in ("from_scratch", "cold_start", "rerun"):
        if kind in bringup:
            lines.append(f"| OpenStack bring-up, {kind.replace('_', ' ')} "
                         f"| {num(bringup[kind].get('bringup_total_seconds'), ' s')} |")
    lines += [
        "",
        "## Stacks",
        "",
        "| stack | status | resources | deploy | re-deploy (+1 worker) | destroy | checks | max RSS (largest process) "
        "| peak RSS of the cdktf process tree | machine used memory, peak |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for env, entry in results["stacks"].items():
        steps = entry.get("steps", {})
        resources = num(entry.get("resources_created"))
        if entry.get("resources_after_scale"):
            resources += f" -> {entry['resources_after_scale']}"
        lines.append(
            f"| {env} | {entry['status']} | {resources} | {num(steps.get('deploy', {}).get('seconds'), ' s')} "
            f"| {num(steps.get('redeploy', {}).get('seconds'), ' s')} "
            f"| {num(steps.get('destroy', {}).get('seconds'), ' s')} | {entry.get('checks')} "
            f"| {num(entry.get('max_rss_mib'), ' MiB')} | {num(entry.get('tree_rss_peak_mib'), ' MiB')} "
            f"| {num(entry.get('machine_used_peak_mib'), ' MiB')} |")
    lines += ["", f"Machine used memory at the start of the run: {results['machine_used_mib_at_start']} MiB.", ""]
    for env, entry in results["stacks"].items():
        if entry.get("error"):
            lines += [f"{env} failed: `{entry['error']}`", ""]
        lines.append(f"Adaptations for {env}:")
        lines += [f"- {note}" for note in entry.get("adaptations", [])]
        lines.append("")
    REPORT.write_text("\n".join(lines))
