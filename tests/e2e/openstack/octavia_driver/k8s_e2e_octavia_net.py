"""Octavia network driver for the mini OpenStack: no-op, except that the VIP is a real Neutron port.

Octavia's `network_noop_driver` invents a random VIP port id. The stacks attach
a floating IP to the load balancer's `vip_port_id`, which Neutron rejects for a
port that does not exist. This driver creates (and on delete removes) a real
port for the VIP, shaped like the one Octavia's allowed-address-pairs driver
makes: owned by the load balancer's project, device_owner "Octavia",
admin-state down. Amphorae stay fake, so nothing else touches Neutron.

Loaded by name through the `octavia.network.drivers` entry point declared in
the dist-info beside this file; up.sh puts this directory on the Python path
of octavia-api and octavia-worker.
"""
import openstack
from octavia.common import data_models
from octavia.common import keystone
from octavia.network.drivers.noop_driver import driver as noop
from oslo_log import log as logging

LOG = logging.getLogger(__name__)
OWNER = "Octavia"


class RealVipPortNoopDriver(noop.NoopNetworkDriver):
    _conn = None

    def _net(self):
        if RealVipPortNoopDriver._conn is None:
            session = keystone.KeystoneSession().get_session()
            RealVipPortNoopDriver._conn = openstack.connection.Connection(session=session)
        return RealVipPortNoopDriver._conn.network

    @staticmethod
    def _vip(load_balancer, port):
        first = port.fixed_ips[0]
        return data_models.Vip(
            load_balancer_id=load_balancer.id, port_id=port.id, network_id=port.network_id,
            subnet_id=first["subnet_id"], ip_address=first["ip_address"],
            qos_policy_id=getattr(load_balancer.vip, "qos_policy_id", None))

    def allocate_vip(self, load_balancer):
        net = self._net()
        vip = load_balancer.vip
        # The API allocates first; the worker's flow asks again with the port id stored.
        if vip is not None and vip.port_id:
            port = net.find_port(vip.port_id, ignore_missing=True)
            if port is not None:
                return self._vip(load_balancer, port), []
        fixed_ip = {}
        network_id = None
        if vip is not None and vip.subnet_id:
            subnet = net.get_subnet(vip.subnet_id)
            network_id = subnet.network_id
            fixed_ip["subnet_id"] = subnet.id
        elif vip is not None and vip.network_id:
            network_id = vip.network_id
        if vip is not None and vip.ip_address:
            fixed_ip["ip_address"] = vip.ip_address
        port = net.create_port(
            name=f"octavia-lb-{load_balancer.id}", network_id=network_id,
            fixed_ips=[fixed_ip] if fixed_ip else None, device_owner=OWNER,
            device_id=f"lb-{load_balancer.id}", project_id=load_balancer.project_id,
            admin_state_up=False)
        LOG.info("created VIP port %s for load balancer %s", port.id, load_balancer.id)
        # (vip, additional_vips): additional VIPs are not supported here.
        return self._vip(load_balancer, port), []

    def deallocate_vip(self, vip):
        port = self._net().find_port(vip.port_id, ignore_missing=True) if vip.port_id else None
        # Only ports this driver made: a user-supplied vip_port_id stays.
        if port is not None and port.device_owner == OWNER:
            self._net().delete_port(port, ignore_missing=True)
            LOG.info("deleted VIP port %s", port.id)
