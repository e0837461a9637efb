"""`python main.py status|wait|timeline|kubeconfig ENV ...` (or `python -m ops.cli ...`).

Exit codes: 0 success (for `wait`: every node joined), 1 a node failed, 2 usage error,
3 cannot get there (settings, Consul, SSH, Terraform outputs), 4 `wait` timed out, 130 interrupted.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import contextmanager
from typing import Iterator, Optional, TextIO

from ops import access, kubeconfig, table, timeline
from ops.consul import ConsulClient, ConsulError, read_token
from ops.records import ClusterView, NodeStatus, must_join
from ops.watch import StatusSource, follow

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_ERROR, EXIT_TIMEOUT, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130


class OpsError(RuntimeError):
    pass


def _load_settings(args):
    # Imported here so `--help` and `timeline --from-json` work without the CDKTF side.
    from stacks.settings import SettingsError, load_settings

    try:
        return load_settings(args.settings or args.env)
    except SettingsError as exc:
        raise OpsError(str(exc)) from None


class Context:
    """Settings, Terraform outputs (read once, only if needed) and the ways to reach the cluster."""

    def __init__(self, args):
        self.args = args
        self.settings = _load_settings(args)
        self._outputs: Optional[dict] = None

    @property
    def outputs(self) -> dict:
        if self._outputs is None:
            self._outputs = access.terraform_outputs(self.args.env)
        return self._outputs

    @property
    def ssh(self) -> access.SshOptions:
        return access.SshOptions(ssh=self.args.ssh_binary, config=self.args.ssh_config, identity=self.args.identity)

    def bastion(self) -> access.SshTarget:
        spec = access.resolve_bastion(self.args.bastion, self.outputs, self.args.env)
        return access.SshTarget.parse(spec, default_user=self.args.ssh_user)

    @property
    def status_prefix(self) -> str:
        s = self.settings
        return f"{s.consul.kv_prefix}/{s.cluster.name}/status/"

    @contextmanager
    def consul(self) -> Iterator[ConsulClient]:
        token = read_token(self.args.token_file)
        if not token:
            # Without a token a default-deny Consul answers "no keys", which would show every node as pending.
            raise OpsError("no Consul token: set CONSUL_HTTP_TOKEN or pass --token-file FILE "
                           "(a token with read access to the cluster's KV prefix)")
        scheme = self.settings.consul.scheme
        if self.args.consul_addr:
            yield ConsulClient(f"{scheme}://{self.args.consul_addr}", token)
        elif self.settings.consul.mode == "external":
            yield _first_reachable([ConsulClient(f"{scheme}://{a}", token) for a in self.settings.consul.addresses],
                                   self.status_prefix)
        else:
            with access.ssh_tunnel(self.ssh, self.bastion(), access.consul_target(self.settings)) as local:
                yield ConsulClient(f"{scheme}://{local}", token)

    def source(self, client: ConsulClient) -> StatusSource:
        return StatusSource(client, self.status_prefix, tuple(self.settings.expected_nodes()))


def _first_reachable(clients: list[ConsulClient], prefix: str) -> ConsulClient:
    errors = []
    for client in clients:
        try:
            client.list_prefix(prefix)
            return client
        except ConsulError as exc:
            if not exc.retryable:
                raise
            errors.append(str(exc))
    raise ConsulError("; ".join(errors) or "no Consul address in the settings")


# ---------------------------------------------------------------- status

def _is_tty(stream: TextIO) -> bool:
    return hasattr(stream, "isatty") and stream.isatty()


def cmd_status(args, out: TextIO, err: TextIO) -> int:
    ctx = Context(args)
    colour = _is_tty(out) and not args.no_color
    with ctx.consul() as client:
        source = ctx.source(client)
        if args.json:
            view, _ = source.read()
            json.dump([_as_dict(n) for n in view.nodes], out, indent=2)
            out.write("\n")
            return EXIT_OK
        if not args.watch:
            view, _ = source.read()
            out.write("\n".join(table.render(view, time.time(), colour)) + "\n")
            return EXIT_OK
        return _watch(ctx, source, args.interval, out, err, colour)


def _watch(ctx: Context, source: StatusSource, interval: float, out: TextIO, err: TextIO, colour: bool) -> int:
    live = _is_tty(out)
    last_plain = None
    for view in follow(source, wait_s=interval, on_error=lambda e: err.write(f"status: {e}; retrying\n")):
        lines = table.render(view, time.time(), colour)
        head = f"cluster {ctx.settings.cluster.name}: {table.summary(view)}"
        if live:
            # Home + clear-to-end redraws in place without scrolling the terminal.
            stamp = time.strftime("%H:%M:%S")
            out.write("\x1b[H\x1b[J" + f"{head}   ({stamp}, Ctrl-C to quit)\n\n" + "\n".join(lines) + "\n")
        else:
            # Piped: a new block only when a phase changes, not every refresh.
            key = tuple((n.node, n.phase) for n in view.nodes)
            if key != last_plain:
                out.write(f"{head}\n" + "\n".join(lines) + "\n\n")
                last_plain = key
        out.flush()
        if view.all_terminal:
            return EXIT_FAILED if view.failed else EXIT_OK
    return EXIT_OK


def _as_dict(n: NodeStatus) -> dict:
    return {"node": n.node, "role": n.role, "pool": n.pool, "phase": n.phase, "since": n.since,
            "updated": n.updated, "history": [{"phase": h.phase, "at": h.at} for h in n.history],
            "last_error": n.last_error, "expected": n.expected}


# ---------------------------------------------------------------- wait

def _describe(n: NodeStatus, now: float) -> str:
    if n.phase == "pending":
        return f"{n.node} (pending: no status record yet)"
    text = f"{n.node} ({n.phase} for {table.duration(n.in_phase(now))}"
    if n.last_error:
        text += f", last error: {' '.join(n.last_error.split())}"
    return text + ")"


def cmd_wait(args, out: TextIO, err: TextIO) -> int:
    ctx = Context(args)
    start = time.monotonic()
    deadline = start + args.timeout
    seen: dict[str, str] = {}
    view: Optional[ClusterView] = None
    with ctx.consul() as client:
        source = ctx.source(client)
        for view in follow(source, wait_s=min(300.0, args.timeout), deadline=deadline,
                           on_error=lambda e: err.write(f"wait: {e}; retrying\n")):
            for n in view.nodes:
                if seen.get(n.node) != n.phase:
                    if n.node in seen or n.phase != "pending":
                        err.write(f"wait: {n.node}: {seen.get(n.node, 'pending')} -> {n.phase}\n")
                    seen[n.node] = n.phase
            err.flush()
            if view.failed:
                for n in view.failed:
                    during = n.failed_during()
                    reason = " ".join((n.last_error or "no reason recorded").split())
                    err.write(f"wait: node {n.node} failed" + (f" during {during}" if during else "")
                              + f": {reason}\n")
                return EXIT_FAILED
            if view.done:
                joined = [n for n in view.expected if must_join(n)]
                out.write(f"cluster {ctx.settings.cluster.name} formed: all {len(joined)} Kubernetes nodes joined "
                          f"(waited {table.duration(time.monotonic() - start)})\n")
                return EXIT_OK
    if view is None:
        err.write(f"wait: no answer from Consul within {table.duration(args.timeout)}\n")
        return EXIT_ERROR
    now = time.time()
    err.write(f"wait: timed out after {table.duration(args.timeout)}; not joined: "
              + "; ".join(_describe(n, now) for n in view.unfinished) + "\n")
    return EXIT_TIMEOUT


# ---------------------------------------------------------------- timeline

def cmd_timeline(args, out: TextIO, err: TextIO) -> int:
    if args.from_json:
        try:
            nodes = timeline.load_dump(args.from_json)
        except ValueError as exc:
            raise OpsError(str(exc)) from None
        tl = timeline.compute(nodes)
        name = args.env or "cluster"
    else:
        if not args.env:
            raise OpsError("timeline needs ENV (to read Consul) or --from-json FILE")
        ctx = Context(args)
        with ctx.consul() as client:
            view, _ = ctx.source(client).read()
        tl = timeline.compute(view.nodes, now=time.time())
        name = ctx.settings.cluster.name
    if not tl.bars:
        raise OpsError("no status record has any history yet: nothing to draw")
    rendered = timeline.render(tl, args.output, f"Formation of cluster {name}")
    out.write(f"wrote {rendered.path} ({len(tl.bars)} nodes, {tl.span:.0f}s)\n")
    return EXIT_OK


# ---------------------------------------------------------------- kubeconfig

def cmd_kubeconfig(args, out: TextIO, err: TextIO) -> int:
    ctx = Context(args)
    server = access.resolve_api_endpoint(args.api_endpoint, ctx.outputs if not args.api_endpoint else {},
                                         ctx.settings)
    bastion = ctx.bastion()
    node = kubeconfig.control_plane_target(ctx.settings, ctx.outputs if not args.node else {}, args.node,
                                           args.ssh_user)
    content = kubeconfig.fetch(ctx.ssh, bastion, node, path=args.remote_path)
    path = kubeconfig.write_private(args.output, kubeconfig.rewrite_server(content, server))
    out.write(f"wrote {path} (mode 0600) from {node.host} via {bastion.jump_spec()}; server: {server}\n")
    return EXIT_OK


# ---------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="main.py", description="Watch a cluster form and fetch its kubeconfig.")
    sub = parser.add_subparsers(dest="command", required=True)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--settings", metavar="FILE", help="settings file (default: stacks/ENV.yaml)")
    reach = argparse.ArgumentParser(add_help=False)
    reach.add_argument("--consul-addr", metavar="HOST:PORT",
                       help="talk to this Consul directly (default: settings; through the bastion in bastion mode)")
    reach.add_argument("--token-file", metavar="FILE",
                       help="file holding the Consul ACL token (default: $CONSUL_HTTP_TOKEN)")
    sshp = argparse.ArgumentParser(add_help=False)
    sshp.add_argument("--bastion", metavar="[USER@]HOST[:PORT]",
                      help="bastion address (default: Terraform output bastion_address)")
    sshp.add_argument("--ssh-user", metavar="USER", help="login user on the bastion and nodes (default: ssh config)")
    sshp.add_argument("--ssh-config", metavar="FILE", help="ssh_config file passed to ssh -F")
    sshp.add_argument("--identity", "-i", metavar="FILE", help="private key (default: ssh agent / ssh config)")
    sshp.add_argument("--ssh-binary", metavar="PATH", default="ssh", help=argparse.SUPPRESS)

    p = sub.add_parser("status", parents=[common, reach, sshp], help="one line per node")
    p.add_argument("env", metavar="ENV")
    p.add_argument("--watch", "-w", action="store_true", help="redraw live until every node joined or failed")
    p.add_argument("--interval", type=_positive, default=2.0, metavar="S", help="refresh at least every S seconds")
    p.add_argument("--json", action="store_true", help="print the records as JSON (for timeline --from-json)")
    p.add_argument("--no-color", action="store_true", help="no ANSI colours even on a terminal")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("wait", parents=[common, reach, sshp], help="exit 0 once every node has joined")
    p.add_argument("env", metavar="ENV")
    p.add_argument("--timeout", type=_positive, default=1800.0, metavar="S", help="give up after S seconds")
    p.set_defaults(func=cmd_wait)

    p = sub.add_parser("timeline", parents=[common, reach, sshp], help="PNG of the formation, one bar per node")
    p.add_argument("env", metavar="ENV", nargs="?")
    p.add_argument("-o", "--output", required=True, metavar="FILE.png")
    p.add_argument("--from-json", metavar="FILE", help="records from `status --json` or `consul kv export`")
    p.set_defaults(func=cmd_timeline)

    p = sub.add_parser("kubeconfig", parents=[common, sshp], help="fetch admin.conf through the bastion")
    p.add_argument("env", metavar="ENV")
    p.add_argument("-o", "--output", required=True, metavar="PATH")
    p.add_argument("--node", metavar="NAME", help="control-plane node name or address (default: first one)")
    p.add_argument("--api-endpoint", metavar="HOST[:PORT]",
                   help="API endpoint for `server:` (default: Terraform output api_endpoint, else the settings' VIP)")
    p.add_argument("--remote-path", default=kubeconfig.ADMIN_CONF, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_kubeconfig)
    return parser


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
    return value


def main(argv: list[str], out: Optional[TextIO] = None, err: Optional[TextIO] = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        return args.func(args, out, err)
    except KeyboardInterrupt:
        out.write("\n")
        return EXIT_INTERRUPTED
    except (OpsError, ConsulError, access.AccessError, kubeconfig.KubeconfigError) as exc:
        err.write(f"{args.command}: {exc}\n")
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
