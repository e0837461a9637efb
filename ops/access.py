"""How the operator's machine reaches the cluster: Terraform outputs, the bastion, SSH tunnels."""
from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

ROOT = Path(__file__).resolve().parent.parent
CONSUL_PORT = 8500


class AccessError(RuntimeError):
    pass


def stack_dir(env: str) -> Path:
    return ROOT / "cdktf.out" / "stacks" / env


def terraform_outputs(env: str, runner: Optional[str] = None) -> dict:
    """`tofu|terraform output -json` of the synthesized stack, as {name: value}; {} when there is none.

    Missing outputs are not an error here: each caller says which value it needed and how to give it.
    """
    directory = stack_dir(env)
    if not directory.is_dir():
        return {}
    exe = runner or shutil.which("tofu") or shutil.which("terraform")
    if not exe:
        return {}
    try:
        proc = subprocess.run([exe, "output", "-json"], cwd=directory, capture_output=True, text=True,
                              timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    if proc.returncode != 0:
        return {}
    try:
        raw = json.loads(proc.stdout or "{}")
    except ValueError:
        return {}
    # Sensitive outputs are never used here: nothing the operator needs is secret.
    return {k: v.get("value") for k, v in raw.items() if isinstance(v, dict) and not v.get("sensitive")}


def resolve_bastion(flag: Optional[str], outputs: dict, env: str) -> str:
    """--bastion wins, then the Terraform output `bastion_address`."""
    if flag:
        return flag
    value = outputs.get("bastion_address")
    if isinstance(value, str) and value:
        return value
    raise AccessError(
        f"no bastion address: pass --bastion HOST, or deploy the stack first so that "
        f"`tofu output -json` in {_shown(stack_dir(env))} has `bastion_address`")


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def resolve_api_endpoint(flag: Optional[str], outputs: dict, settings) -> str:
    """https://host:port of the API: --api-endpoint, the `api_endpoint` output, else the settings' VIP."""
    value = flag or outputs.get("api_endpoint") or getattr(getattr(settings, "network", None), "api_vip", None)
    if not value or not isinstance(value, str):
        raise AccessError("no API endpoint: pass --api-endpoint HOST[:PORT] or deploy the stack first "
                          "(Terraform output `api_endpoint`)")
    return api_url(value)


def api_url(value: str) -> str:
    value = value.strip().rstrip("/")
    if value.startswith("https://"):
        return value if re.search(r":\d+$", value.removeprefix("https://")) else value + ":6443"
    if value.startswith("http://"):
        raise AccessError(f"API endpoint {value!r} is not https")
    return f"https://{value}" if re.search(r":\d+$", value) else f"https://{value}:6443"


@dataclass(frozen=True)
class SshTarget:
    """`[user@]host[:port]`, as ssh -J takes it."""

    host: str
    user: Optional[str] = None
    port: Optional[int] = None

    @classmethod
    def parse(cls, text: str, default_user: Optional[str] = None) -> "SshTarget":
        user, _, hostport = text.rpartition("@")
        m = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?|([^:\[\]]+)(?::(\d+))?", hostport)
        if not m or not hostport:
            raise AccessError(f"{text!r} is not [user@]host[:port]")
        host = m.group(1) or m.group(3)
        port = m.group(2) or m.group(4)
        return cls(host=host, user=user or default_user, port=int(port) if port else None)

    def jump_spec(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return (f"{self.user}@" if self.user else "") + host + (f":{self.port}" if self.port else "")

    def ssh_args(self) -> list[str]:
        """Options + destination for a direct connection to this target."""
        args = []
        if self.port:
            args += ["-p", str(self.port)]
        if self.user:
            args += ["-l", self.user]
        return args + [self.host]


@dataclass(frozen=True)
class SshOptions:
    ssh: str = "ssh"
    config: Optional[str] = None  # -F: the tests' and CI's own ssh_config; operators usually rely on ~/.ssh/config
    identity: Optional[str] = None

    def base(self) -> list[str]:
        args = [self.ssh, "-o", "BatchMode=yes"]
        if self.config:
            args += ["-F", self.config]
        if self.identity:
            args += ["-i", self.identity]
        return args


def free_local_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@contextmanager
def ssh_tunnel(opts: SshOptions, bastion: SshTarget, remote: str, ready_timeout: float = 20.0) -> Iterator[str]:
    """`ssh -N -L 127.0.0.1:<port>:<remote>` through the bastion; yields `127.0.0.1:<port>`.

    The forward listens on loopback only, and ssh exits if it cannot set it up
    (ExitOnForwardFailure), so a port taken in the meantime fails loudly instead of hanging.
    """
    port = free_local_port()
    cmd = opts.base() + ["-N", "-o", "ExitOnForwardFailure=yes", "-o", "ServerAliveInterval=15",
                         "-L", f"127.0.0.1:{port}:{remote}"] + bastion.ssh_args()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + ready_timeout
        while not _port_open(port):
            if proc.poll() is not None:
                err = (proc.stderr.read() if proc.stderr else b"").decode(errors="replace").strip()
                raise AccessError(f"SSH tunnel to {remote} via {bastion.jump_spec()} failed: "
                                  f"{err.splitlines()[-1] if err else f'ssh exited {proc.returncode}'}")
            if time.monotonic() > deadline:
                raise AccessError(f"SSH tunnel to {remote} via {bastion.jump_spec()} not ready after {ready_timeout:.0f}s")
            time.sleep(0.1)  # only while ssh sets the forward up
        yield f"127.0.0.1:{port}"
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stderr:
            proc.stderr.close()


def consul_target(settings) -> str:
    """host:port of Consul as the cluster sees it (external servers, or the bastion's own server)."""
    if settings.consul.mode == "external":
        return settings.consul.addresses[0]
    return f"{settings.network.bastion_ip}:{CONSUL_PORT}"
