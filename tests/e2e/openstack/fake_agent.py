"""Heartbeat for neutron's ML2 `fake_agent` mechanism driver on fake compute hosts.

Run with Debian's /usr/bin/python3 (neutron's libraries):
    fake_agent.py --config-file neutron.conf --config-file ml2_conf.ini [--log-file F] -- HOST...

`fake_agent` binds a port only on a host with a live agent of type
"OFA driver agent". Nothing real plugs those ports, so this process:
  * reports the agent state of every fake host every 20 s, and
  * every 2 s marks DOWN compute ports bound to those hosts UP through the same
    RPC a real L2 agent uses, so neutron sends nova `network-vif-plugged`.
"""
import sys
import time

from neutron_lib.agent import topics
from neutron_lib import constants
from neutron_lib import context as n_context
from oslo_config import cfg
from oslo_db import options as db_options
from oslo_log import log as logging
import sqlalchemy

from neutron.agent import rpc as agent_rpc
from neutron.common import config as common_config
from neutron.conf.agent import common as agent_conf
from neutron.conf.agent.database import agents_db

LOG = logging.getLogger("fake-agent")
REPORT_EVERY = 20.0
PLUG_EVERY = 2.0
BINARY = "neutron-fake-agent"

DOWN_PORTS = sqlalchemy.text(
    "SELECT p.id FROM ports p JOIN ml2_port_bindings b ON b.port_id = p.id "
    "WHERE p.status = 'DOWN' AND p.device_owner LIKE 'compute:%' "
    "AND b.host = :host AND b.vif_type NOT IN ('unbound', 'binding_failed')")


def agent_state(host, first):
    return {
        "binary": BINARY,
        "host": host,
        "topic": "N/A",
        "agent_type": constants.AGENT_TYPE_OFA,
        "start_flag": first,
        # The driver allows local/flat/vlan plus these tunnel types, and flat/vlan
        # only on mapped physical networks.
        "configurations": {"tunnel_types": ["vxlan"], "interface_mappings": {"physnet1": "fake0"}},
    }


def main(argv):
    hosts = argv[argv.index("--") + 1:] if "--" in argv else []
    args = argv[:argv.index("--")] if "--" in argv else argv
    if not hosts:
        sys.exit("usage: fake_agent.py --config-file ... -- HOST...")
    common_config.register_common_config_options()
    agent_conf.register_agent_state_opts_helper(cfg.CONF)
    agents_db.register_db_agents_opts(cfg.CONF)
    db_options.set_defaults(cfg.CONF)
    common_config.init(args)
    common_config.setup_logging()

    ctx = n_context.get_admin_context_without_session()
    reports = agent_rpc.PluginReportStateAPI(topics.REPORTS)
    plugin = agent_rpc.PluginApi(topics.PLUGIN)
    # Reading the port table is the cheapest way to find ports nova bound to our
    # hosts; the status change itself goes through neutron's RPC API.
    engine = sqlalchemy.create_engine(cfg.CONF.database.connection, pool_pre_ping=True)

    first = {h: True for h in hosts}
    next_report = 0.0
    while True:
        now = time.monotonic()
        if now >= next_report:
            for host in hosts:
                try:
                    reports.report_state(ctx, agent_state(host, first[host]), use_call=True)
                    first[host] = False
                except Exception:  # a restarting neutron-server must not kill the heartbeat
                    LOG.exception("report_state failed for %s", host)
            next_report = now + REPORT_EVERY
        for host in hosts:
            try:
                with engine.connect() as conn:
                    ports = [r[0] for r in conn.execute(DOWN_PORTS, {"host": host})]
                if ports:
                    plugin.update_device_list(ctx, ports, [], f"fake-agent-{host}", host)
                    LOG.info("marked up on %s: %s", host, ports)
            except Exception:
                LOG.exception("port update failed for %s", host)
        time.sleep(PLUG_EVERY)


if __name__ == "__main__":
    main(sys.argv[1:])
