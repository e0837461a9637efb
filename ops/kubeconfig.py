"""Fetch the admin kubeconfig from a control-plane node through the bastion and store it 0600.

The file's content is a cluster-admin credential: it only ever lives in this process's memory
and in the output file. It is never printed, logged, or put in an exception message.
"""
from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path
from typing import Optional

import yaml

from ops.access import AccessError, SshOptions, SshTarget

ADMIN_CONF = "/etc/kubernetes/admin.conf"


class KubeconfigError(RuntimeError):
    pass


def remote_command(path: str) -> str:
    """admin.conf is root-only: read it directly as root, else through passwordless sudo."""
    q = "'" + path.replace("'", "'\\''") + "'"
    return f'if [ "$(id -u)" = 0 ]; then cat -- {q}; else sudo -n cat -- {q}; fi'


def fetch(opts: SshOptions, bastion: SshTarget, node: SshTarget, path: str = ADMIN_CONF,
          timeout: float = 60.0) -> bytes:
    cmd = opts.base() + ["-J", bastion.jump_spec(), "-o", "ConnectTimeout=15"] + node.ssh_args() + [
        remote_command(path)]
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise KubeconfigError(f"ssh to {node.host} via {bastion.jump_spec()} timed out after {timeout:.0f}s") from None
    except OSError as exc:
        raise AccessError(f"cannot run {opts.ssh}: {exc.strerror}") from None
    if proc.returncode != 0:
        # stderr is ssh's or cat/sudo's own message, never the file's content.
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        raise KubeconfigError(f"could not read {path} on {node.host} via {bastion.jump_spec()}: "
                              f"{err[-1] if err else f'ssh exited {proc.returncode}'}")
    if not proc.stdout.strip():
        raise KubeconfigError(f"{path} on {node.host} is empty")
    return proc.stdout


def rewrite_server(content: bytes, server: str) -> bytes:
    """Point every cluster entry at the HA API endpoint (kubeadm writes the endpoint it was given,
    which may be an address only reachable inside the cloud)."""
    try:
        doc = yaml.safe_load(content)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        # The parser's own message quotes the document, so only the position is reported.
        raise KubeconfigError(f"fetched file is not valid YAML{where}") from None
    if not isinstance(doc, dict) or doc.get("kind", "Config") != "Config":
        raise KubeconfigError("fetched file is not a kubeconfig (kind is not Config)")
    clusters = doc.get("clusters")
    if not isinstance(clusters, list) or not clusters:
        raise KubeconfigError("fetched file is not a kubeconfig (no clusters)")
    for entry in clusters:
        cluster = entry.get("cluster") if isinstance(entry, dict) else None
        if not isinstance(cluster, dict) or "server" not in cluster:
            raise KubeconfigError("fetched file is not a kubeconfig (a cluster has no server)")
        cluster["server"] = server
    return yaml.safe_dump(doc, default_flow_style=False, sort_keys=False).encode()


def write_private(path: str, content: bytes) -> Path:
    """Create a new 0600 file beside the target and rename it over: an existing file's (possibly
    world-readable) mode is never reused, and no reader sees a partial file."""
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    if not directory.is_dir():
        raise KubeconfigError(f"directory {directory} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def control_plane_target(settings, outputs: dict, node: Optional[str], user: Optional[str]) -> SshTarget:
    """The node to read from: --node (a name or address), else the first control-plane node.

    Names are resolved by the bastion (ssh -J hands the name to the jump host), which knows the
    private network's names; an `control_plane_addresses` output ({name: ip}) is used when present.
    """
    cps = [n.name for n in settings.expected_nodes() if n.role == "control-plane"]
    name = node or (cps[0] if cps else None)
    if not name:
        raise KubeconfigError("the settings define no control-plane node; pass --node NAME")
    addresses = outputs.get("control_plane_addresses")
    host = addresses.get(name, name) if isinstance(addresses, dict) else name
    return SshTarget.parse(host, default_user=user)
