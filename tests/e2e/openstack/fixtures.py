"""Idempotent cloud fixtures for the mini OpenStack (run by up.sh with /usr/bin/python3).

    fixtures.py identity   service users, catalog, project/user k8s-e2e   (needs Keystone only)
    fixtures.py resources  waits for compute hosts + agents, then image, flavors,
                           external network, keypair, quotas              (needs everything)

Admin credentials come from the OS_* environment; the passwords of the service
users and of the k8s-e2e user from the environment too (the secrets file).
"""
import os
import subprocess
import sys
import time

import openstack

BIND = "127.0.0.1"
REGION = os.environ.get("OS_REGION_NAME", "RegionOne")
STATE_DIR = os.environ.get("K8S_E2E_OS_STATE", "/var/lib/k8s-e2e-openstack")
PROJECT = "k8s-e2e"
USER = "k8s-e2e"
FAKE_HOSTS = [f"compute{i}" for i in range(1, 6)]  # as lib.sh

# service user -> (service name, type, endpoint URL)
SERVICES = {
    "glance": ("glance", "image", f"http://{BIND}:9292"),
    "placement": ("placement", "placement", f"http://{BIND}:8778"),
    "nova": ("nova", "compute", f"http://{BIND}:8774/v2.1"),
    "neutron": ("neutron", "network", f"http://{BIND}:9696"),
    "octavia": ("octavia", "load-balancer", f"http://{BIND}:9876"),
}
# Sizes fit the fake hosts many times over; names match the stacks' settings.
FLAVORS = {"m1.small": (1, 1024, 10), "m1.medium": (2, 2048, 20), "m1.large": (4, 4096, 40),
           # prod.yaml's flavors, so its plan resolves too.
           "m1.xlarge": (8, 8192, 80), "r1.2xlarge": (8, 16384, 80)}
IMAGE = "ubuntu-24.04"
KEYPAIR = "ops"
# Enough for a 3 control-plane + bastion + a few worker pools stack, plus the smoke test.
COMPUTE_QUOTAS = dict(instances=40, cores=200, ram=400 * 1024, key_pairs=20,
                      server_groups=20, server_group_members=20)
NETWORK_QUOTAS = dict(networks=20, subnets=40, ports=200, routers=10, floating_ips=20,
                      security_groups=50, security_group_rules=500)


def log(msg):
    print(f"{time.strftime('%H:%M:%S')} [fixtures] {msg}", file=sys.stderr, flush=True)


def admin():
    return openstack.connect(
        auth_url=os.environ["OS_AUTH_URL"], username=os.environ["OS_USERNAME"],
        password=os.environ["OS_PASSWORD"], project_name=os.environ["OS_PROJECT_NAME"],
        user_domain_name="Default", project_domain_name="Default", region_name=REGION)


def ensure_user(conn, name, password, project, roles):
    user = conn.identity.find_user(name, domain_id="default")
    if user is None:
        user = conn.identity.create_user(name=name, password=password, domain_id="default",
                                         default_project_id=project.id)
    else:
        # Secrets are the source of truth: a regenerated secrets file must win.
        conn.identity.update_user(user, password=password)
    for role_name in roles:
        role = conn.identity.find_role(role_name) or conn.identity.create_role(name=role_name)
        conn.identity.assign_project_role_to_user(project, user, role)


def ensure_project(conn, name, description):
    return conn.identity.find_project(name, domain_id="default") or conn.identity.create_project(
        name=name, domain_id="default", description=description)


def identity():
    conn = admin()
    service_project = ensure_project(conn, "service", "OpenStack service users")
    for user, (svc_name, svc_type, url) in SERVICES.items():
        ensure_user(conn, user, os.environ[f"{user.upper()}_PASS"], service_project, ["admin", "service"])
        service = conn.identity.find_service(svc_name) or conn.identity.create_service(
            name=svc_name, type=svc_type, description=f"{svc_name} ({svc_type})")
        have = {(e.interface, e.url) for e in conn.identity.endpoints(service_id=service.id)}
        for interface in ("public", "internal", "admin"):
            if (interface, url) not in have:
                conn.identity.create_endpoint(service_id=service.id, interface=interface,
                                              url=url, region_id=REGION)
    project = ensure_project(conn, PROJECT, "k8s-on-openstack end-to-end tests")
    # load-balancer_member: Octavia's default policy wants it for non-admin users.
    ensure_user(conn, USER, os.environ["USER_PASS"], project, ["member", "reader", "load-balancer_member"])
    log("identity ready")


def wait_for(what, check, timeout=300, every=3):
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except openstack.exceptions.SDKException as exc:  # API still starting
            log(f"waiting for {what}: {exc.__class__.__name__}")
        if time.monotonic() > deadline:
            sys.exit(f"timed out waiting for {what}")
        time.sleep(every)


def compute_hosts_ready(conn):
    up = {s.host for s in conn.compute.services(binary="nova-compute") if s.state == "up"}
    if not set(FAKE_HOSTS) <= up:
        return False
    hypervisors = {h.name for h in conn.compute.hypervisors()}
    if not set(FAKE_HOSTS) <= hypervisors:
        # Map new compute hosts into cell1 now rather than waiting for the
        # scheduler's periodic discovery.
        subprocess.run(["runuser", "-u", "nova", "--", "nova-manage", "cell_v2", "discover_hosts"],
                       check=False, capture_output=True)
        return False
    return True


def agents_ready(conn):
    alive = {a.host for a in conn.network.agents(agent_type="OFA driver agent") if a.is_alive}
    return set(FAKE_HOSTS) <= alive


def ensure_image(conn):
    if conn.image.find_image(IMAGE):
        return
    # Nothing boots it (fake hypervisor): any small file is a valid raw image.
    data = b"k8s-e2e fake image\n" * 4096
    conn.image.create_image(name=IMAGE, data=data, disk_format="raw", container_format="bare",
                            visibility="public", allow_duplicates=False)


def ensure_flavors(conn):
    for name, (vcpus, ram, disk) in FLAVORS.items():
        if not conn.compute.find_flavor(name):
            conn.compute.create_flavor(name=name, vcpus=vcpus, ram=ram, disk=disk, is_public=True)


def ensure_public_network(conn):
    net = conn.network.find_network("public")
    if net is None:
        net = conn.network.create_network(
            name="public", is_router_external=True, provider_network_type="flat",
            provider_physical_network="physnet1", is_shared=False)
    if not list(conn.network.subnets(network_id=net.id)):
        # TEST-NET-3: documentation range, never routed anywhere.
        conn.network.create_subnet(
            name="public-subnet", network_id=net.id, ip_version=4, cidr="203.0.113.0/24",
            gateway_ip="203.0.113.1", is_dhcp_enabled=False,
            allocation_pools=[{"start": "203.0.113.10", "end": "203.0.113.250"}])


def ensure_keypair():
    key_path = os.path.join(STATE_DIR, "ops_ed25519")
    if not os.path.exists(key_path):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ops@k8s-e2e",
                        "-f", key_path], check=True)
    os.chmod(key_path, 0o600)
    public_key = open(key_path + ".pub").read().strip()
    user = openstack.connect(auth_url=os.environ["OS_AUTH_URL"], username=USER,
                             password=os.environ["USER_PASS"], project_name=PROJECT,
                             user_domain_name="Default", project_domain_name="Default",
                             region_name=REGION)
    existing = user.compute.find_keypair(KEYPAIR)
    if existing is not None and existing.public_key.strip() != public_key:
        user.compute.delete_keypair(existing)
        existing = None
    if existing is None:
        user.compute.create_keypair(name=KEYPAIR, public_key=public_key)


def ensure_quotas(conn):
    project = conn.identity.find_project(PROJECT, domain_id="default")
    conn.set_compute_quotas(project.id, **COMPUTE_QUOTAS)
    conn.set_network_quotas(project.id, **{
        "network": NETWORK_QUOTAS["networks"], "subnet": NETWORK_QUOTAS["subnets"],
        "port": NETWORK_QUOTAS["ports"], "router": NETWORK_QUOTAS["routers"],
        "floatingip": NETWORK_QUOTAS["floating_ips"],
        "security_group": NETWORK_QUOTAS["security_groups"],
        "security_group_rule": NETWORK_QUOTAS["security_group_rules"]})


def resources():
    conn = admin()
    wait_for(f"{len(FAKE_HOSTS)} nova-compute hosts up and mapped", lambda: compute_hosts_ready(conn))
    wait_for(f"{len(FAKE_HOSTS)} fake neutron agents alive", lambda: agents_ready(conn))
    ensure_image(conn)
    ensure_flavors(conn)
    ensure_public_network(conn)
    ensure_keypair()
    ensure_quotas(conn)
    log("resources ready")


if __name__ == "__main__":
    {"identity": identity, "resources": resources}[sys.argv[1]]()
