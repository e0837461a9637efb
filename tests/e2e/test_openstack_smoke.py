"""Smoke test of the mini OpenStack: everything the cluster stacks need, as the non-admin user.

Network, subnet, router to `public`, floating IP, ports with security groups and
allowed address pairs, a hard anti-affinity server group whose 3 servers land on
3 different hosts while a 4th fails with "No valid host", and an Octavia load
balancer with listener, pool, member and health monitor reaching ACTIVE, with a
floating IP on its VIP port.
Everything created is deleted again, also when an assertion fails.
"""
from __future__ import annotations

import base64
import uuid

import pytest

pytestmark = [
    pytest.mark.e2e,
    # openstacksdk warns about its own internals on every call.
    pytest.mark.filterwarnings("ignore:::openstack.*"),
]

IMAGE = "ubuntu-24.04"
FLAVOR = "m1.small"
KEYPAIR = "ops"
WAIT = 300


class Cleanup:
    """Deletes in reverse creation order; one failing delete does not stop the rest."""

    def __init__(self):
        self._steps = []

    def add(self, what, fn, *args, **kwargs):
        self._steps.append((what, fn, args, kwargs))

    def run(self):
        errors = []
        for what, fn, args, kwargs in reversed(self._steps):
            try:
                fn(*args, **kwargs)
            except Exception as exc:  # keep cleaning; report at the end
                errors.append(f"{what}: {exc}")
        return errors


@pytest.fixture
def cleanup():
    c = Cleanup()
    yield c
    errors = c.run()
    assert not errors, f"cleanup failed: {errors}"


def _delete_server(conn, server):
    conn.compute.delete_server(server, ignore_missing=True)
    conn.compute.wait_for_delete(server, wait=WAIT)


def _delete_lb(conn, lb):
    conn.load_balancer.delete_load_balancer(lb, ignore_missing=True, cascade=True)
    conn.load_balancer.wait_for_delete(lb, wait=WAIT)


def test_cluster_building_blocks(os_user, os_admin, cleanup):
    conn = os_user
    name = f"smoke-{uuid.uuid4().hex[:6]}"

    image = conn.image.find_image(IMAGE, ignore_missing=False)
    flavor = conn.compute.find_flavor(FLAVOR, ignore_missing=False)
    conn.compute.find_keypair(KEYPAIR, ignore_missing=False)
    public = conn.network.find_network("public", ignore_missing=False)
    assert public.is_router_external

    # --- network, subnet, router to public
    net = conn.network.create_network(name=name)
    cleanup.add("network", conn.network.delete_network, net)
    subnet = conn.network.create_subnet(name=name, network_id=net.id, ip_version=4,
                                        cidr="10.77.0.0/24", dns_nameservers=["192.0.2.53"],
                                        # Fixed addresses below the pool (VIPs) never collide.
                                        allocation_pools=[{"start": "10.77.0.100", "end": "10.77.0.200"}])
    cleanup.add("subnet", conn.network.delete_subnet, subnet)
    router = conn.network.create_router(name=name, external_gateway_info={"network_id": public.id})
    cleanup.add("router", conn.network.delete_router, router)
    conn.network.add_interface_to_router(router, subnet=subnet.id)
    cleanup.add("router interface", conn.network.remove_interface_from_router, router, subnet=subnet.id)
    assert conn.network.get_router(router.id).external_gateway_info["network_id"] == public.id

    # --- security group on ports (nova ignores --security-group for pre-made ports)
    sg = conn.network.create_security_group(name=name, description="smoke")
    cleanup.add("security group", conn.network.delete_security_group, sg)
    conn.network.create_security_group_rule(security_group_id=sg.id, direction="ingress",
                                            ethertype="IPv4", protocol="tcp",
                                            port_range_min=6443, port_range_max=6443,
                                            remote_ip_prefix="10.77.0.0/24")
    vip = conn.network.create_port(name=f"{name}-vip", network_id=net.id,
                                   fixed_ips=[{"subnet_id": subnet.id, "ip_address": "10.77.0.10"}],
                                   security_group_ids=[sg.id])
    cleanup.add("vip port", conn.network.delete_port, vip)

    ports = []
    for i in range(3):
        port = conn.network.create_port(
            name=f"{name}-cp-{i}", network_id=net.id, security_group_ids=[sg.id],
            # The API VIP may move between control-plane nodes.
            allowed_address_pairs=[{"ip_address": "10.77.0.10"}])
        cleanup.add("port", conn.network.delete_port, port)
        assert port.security_group_ids == [sg.id]
        assert [p["ip_address"] for p in port.allowed_address_pairs] == ["10.77.0.10"]
        ports.append(port)

    # --- floating IP on a port behind the router
    fip = conn.network.create_ip(floating_network_id=public.id, port_id=ports[0].id)
    cleanup.add("floating ip", conn.network.delete_ip, fip)
    fip = conn.network.get_ip(fip.id)
    assert fip.port_id == ports[0].id
    assert fip.fixed_ip_address == ports[0].fixed_ips[0]["ip_address"]
    assert fip.floating_ip_address.startswith("203.0.113.")

    # --- hard anti-affinity: 3 servers on 3 hosts
    group = conn.compute.create_server_group(name=name, policy="anti-affinity")
    cleanup.add("server group", conn.compute.delete_server_group, group)
    user_data = base64.b64encode(b"#cloud-config\n{}\n").decode()
    servers = []
    for i, port in enumerate(ports):
        server = conn.compute.create_server(
            name=f"{name}-cp-{i}", image_id=image.id, flavor_id=flavor.id, key_name=KEYPAIR,
            networks=[{"port": port.id}], user_data=user_data,
            metadata={"cluster": name, "role": "control-plane", "pool": ""},
            scheduler_hints={"group": group.id})
        cleanup.add("server", _delete_server, conn, server)
        servers.append(server)
    for i, server in enumerate(servers):
        servers[i] = conn.compute.wait_for_server(server, status="ACTIVE", failures=["ERROR"], wait=WAIT)
        assert servers[i].metadata["role"] == "control-plane"

    hosts = {os_admin.compute.get_server(s.id).compute_host for s in servers}
    assert len(hosts) == 3, f"anti-affinity violated: {hosts}"

    # The heartbeat process marks bound compute ports UP (nova's vif-plugged path).
    for port in ports:
        conn.network.wait_for_status(conn.network.get_port(port.id), status="ACTIVE",
                                     failures=["ERROR"], interval=2, wait=60)

    # Fill the remaining hosts one server at a time; the next one has nowhere to go.
    total_hosts = len(list(os_admin.compute.hypervisors()))
    for i in range(3, total_hosts):
        server = conn.compute.create_server(
            name=f"{name}-cp-{i}", image_id=image.id, flavor_id=flavor.id,
            networks=[{"uuid": net.id}], scheduler_hints={"group": group.id})
        cleanup.add("server", _delete_server, conn, server)
        servers.append(conn.compute.wait_for_server(server, status="ACTIVE", failures=["ERROR"], wait=WAIT))
    assert len({os_admin.compute.get_server(s.id).compute_host for s in servers}) == total_hosts
    fourth = conn.compute.create_server(
        name=f"{name}-cp-{total_hosts}", image_id=image.id, flavor_id=flavor.id,
        networks=[{"uuid": net.id}], scheduler_hints={"group": group.id})
    cleanup.add("server", _delete_server, conn, fourth)
    fourth = conn.compute.wait_for_server(fourth, status="ERROR", failures=["ACTIVE"], wait=WAIT)
    assert "No valid host" in (fourth.fault or {}).get("message", ""), fourth.fault

    # --- Octavia: LB + listener + pool + member + health monitor
    lb_api = conn.load_balancer
    lb = lb_api.create_load_balancer(name=name, vip_subnet_id=subnet.id, vip_address="10.77.0.20")
    cleanup.add("load balancer", _delete_lb, conn, lb)

    def settle():
        return lb_api.wait_for_load_balancer(lb.id, status="ACTIVE", failures=["ERROR"], wait=WAIT)

    lb = settle()
    # The stacks give the API a public address: a floating IP on the VIP port,
    # which must therefore be a real Neutron port of the user's project.
    vip_port = conn.network.get_port(lb.vip_port_id)
    assert vip_port.device_owner == "Octavia"
    assert [ip["ip_address"] for ip in vip_port.fixed_ips] == ["10.77.0.20"]
    lb_fip = conn.network.create_ip(floating_network_id=public.id, port_id=lb.vip_port_id)
    cleanup.add("load balancer floating ip", conn.network.delete_ip, lb_fip)
    assert conn.network.get_ip(lb_fip.id).fixed_ip_address == "10.77.0.20"
    listener = lb_api.create_listener(name=name, load_balancer_id=lb.id, protocol="TCP",
                                      protocol_port=6443)
    settle()
    pool = lb_api.create_pool(name=name, listener_id=listener.id, protocol="TCP",
                              lb_algorithm="ROUND_ROBIN")
    settle()
    member = lb_api.create_member(pool, address=ports[0].fixed_ips[0]["ip_address"],
                                  protocol_port=6443, subnet_id=subnet.id)
    settle()
    lb_api.create_health_monitor(pool_id=pool.id, type="TCP", delay=5, timeout=3, max_retries=3)
    lb = settle()

    assert lb.provisioning_status == "ACTIVE"
    assert lb_api.get_listener(listener.id).provisioning_status == "ACTIVE"
    assert lb_api.get_pool(pool.id).provisioning_status == "ACTIVE"
    assert lb_api.get_member(member.id, pool).provisioning_status == "ACTIVE"
