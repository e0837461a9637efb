"""Typed settings for one environment (stacks/<env>.yaml): validated, defaults filled.

Every field carries its default and a description; the README's settings reference is
generated from this model (`python -m stacks.settings_doc`), so it cannot drift.
Bad input raises SettingsError with exactly one line: file, field path, what is allowed.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional, Union

import netaddr
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

STACKS_DIR = Path(__file__).resolve().parent

# Versions the node side knows how to install; anything else is refused up front.
SUPPORTED_KUBERNETES_MINORS = ("1.32", "1.33", "1.34")
SUPPORTED_CNI_VERSIONS = {
    "calico": ("v3.29.5", "v3.30.3"),
    "cilium": ("1.17.8", "1.18.2"),
}

DNS_LABEL = r"^[a-z]([a-z0-9-]{0,30}[a-z0-9])?$"
WORLD = netaddr.IPNetwork("0.0.0.0/0")


class SettingsError(ValueError):
    """A one-line, user-facing settings error."""


FIELD_MARK = "@field:"


def _field_error(field: str, message: str) -> ValueError:
    """A model-level check's error, pointed at the field it is about."""
    return ValueError(f"{FIELD_MARK}{field}:{message}")


class _Model(BaseModel):
    # Unknown keys are errors: a misspelt key must never be silently ignored.
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def _cidr(value: str) -> str:
    try:
        net = netaddr.IPNetwork(value)
    except (netaddr.AddrFormatError, ValueError, TypeError):
        raise ValueError(f"{value!r} is not a valid CIDR (e.g. 10.0.0.0/24)") from None
    if net.version != 4:
        raise ValueError(f"{value!r}: only IPv4 CIDRs are supported")
    if str(net.cidr) != value:
        raise ValueError(f"{value!r} has host bits set; use {net.cidr}")
    return value


class ClusterSettings(_Model):
    name: str = Field(
        pattern=DNS_LABEL,
        description="Cluster name: DNS label, 1-32 chars; prefixes every resource and node name.",
    )


class BootVolumes(_Model):
    bastion: int = Field(0, ge=0, le=2000, description="Boot volume size in GiB for the bastion; 0 boots from the image.")
    control_plane: int = Field(0, ge=0, le=2000, description="Boot volume size in GiB per control-plane node; 0 boots from the image.")
    worker: int = Field(0, ge=0, le=2000, description="Boot volume size in GiB per worker; 0 boots from the image.")


class OpenStackSettings(_Model):
    cloud: Optional[str] = Field(None, description="Entry of clouds.yaml to use; unset: the OS_* environment variables.")
    external_network: str = Field(min_length=1, description="Name of the external (provider) network for the router and floating IPs.")
    image: str = Field(min_length=1, description="Glance image name for every server (Ubuntu 24.04 or 22.04).")
    key_pair: str = Field(min_length=1, description="Nova key pair installed on every server.")
    availability_zones: list[str] = Field(
        default_factory=lambda: ["nova"], min_length=1,
        description="Availability zones; nodes are spread over them round-robin.",
    )
    boot_volume_size_gb: BootVolumes = Field(default_factory=BootVolumes, description="Boot-from-volume sizes per role.")


class NetworkSettings(_Model):
    node_cidr: str = Field("10.20.0.0/24", description="Subnet for all servers. Needs room for the fixed addresses (.5 bastion, .10 API VIP) and a /28 at least.")
    dns_servers: list[str] = Field(default_factory=lambda: ["1.1.1.1", "9.9.9.9"], min_length=1, description="DNS resolvers handed out by the subnet.")
    pod_cidr: str = Field("10.244.0.0/16", description="Kubernetes pod network (kubeadm podSubnet).")
    service_cidr: str = Field("10.96.0.0/12", description="Kubernetes service network (kubeadm serviceSubnet).")

    @field_validator("node_cidr", "pod_cidr", "service_cidr")
    @classmethod
    def _valid_cidr(cls, v: str) -> str:
        return _cidr(v)

    @field_validator("node_cidr")
    @classmethod
    def _node_cidr_size(cls, v: str) -> str:
        if netaddr.IPNetwork(v).prefixlen > 28:
            raise ValueError(f"{v!r} is too small; use a /28 or larger")
        return v

    @field_validator("dns_servers")
    @classmethod
    def _dns(cls, v: list[str]) -> list[str]:
        for item in v:
            try:
                ipaddress.IPv4Address(item)
            except ValueError:
                raise ValueError(f"{item!r} is not an IPv4 address") from None
        return v

    @model_validator(mode="after")
    def _no_overlap(self) -> "NetworkSettings":
        nets = {"node_cidr": self.node_cidr, "pod_cidr": self.pod_cidr, "service_cidr": self.service_cidr}
        names = list(nets)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                na, nb = netaddr.IPNetwork(nets[a]), netaddr.IPNetwork(nets[b])
                if na.first <= nb.last and nb.first <= na.last:
                    raise _field_error(b, f"{nets[b]} overlaps {a} {nets[a]}; node, pod and service networks must be disjoint")
        return self

    @property
    def bastion_ip(self) -> str:
        return str(netaddr.IPNetwork(self.node_cidr)[5])

    @property
    def api_vip(self) -> str:
        return str(netaddr.IPNetwork(self.node_cidr)[10])

    @property
    def dhcp_pool(self) -> tuple[str, str]:
        """DHCP range: above the fixed addresses so they are never handed out."""
        net = netaddr.IPNetwork(self.node_cidr)
        return str(net[16]), str(net[-2])


class CniSettings(_Model):
    name: Literal["calico", "cilium"] = Field("calico", description="CNI plugin.")
    version: str = Field("v3.30.3", description="Pinned CNI version; supported: "
                         + "; ".join(f"{k}: {', '.join(v)}" for k, v in SUPPORTED_CNI_VERSIONS.items()) + ".")
    calico_encapsulation: Literal["ipip", "vxlan"] = Field("ipip", description="Calico encapsulation (ipip opens IP protocol 4 between nodes; vxlan opens 4789/udp).")

    @model_validator(mode="after")
    def _version_supported(self) -> "CniSettings":
        allowed = SUPPORTED_CNI_VERSIONS[self.name]
        if self.version not in allowed:
            raise _field_error("version", f"{self.name} version {self.version!r} is not supported; allowed: {', '.join(allowed)}")
        return self


class ApiEndpointSettings(_Model):
    type: Literal["octavia", "vip"] = Field("octavia", description="`octavia`: a load balancer in front of the control plane; `vip`: a reserved Neutron port whose address the control-plane ports may carry (allowed-address-pairs), for clouds without Octavia.")
    floating_ip: bool = Field(True, description="Attach a floating IP from the external network to the API endpoint.")
    idle_timeout_ms: int = Field(3_600_000, ge=3_600_000, le=86_400_000, description="Octavia client/member data timeouts in ms; at least 1 h so API watches survive.")


class KubernetesSettings(_Model):
    version: str = Field("1.34.2", description="Pinned Kubernetes patch version (x.y.z); minors supported: " + ", ".join(SUPPORTED_KUBERNETES_MINORS) + ".")
    cni: CniSettings = Field(default_factory=CniSettings, description="CNI plugin and version.")
    api_endpoint: ApiEndpointSettings = Field(default_factory=ApiEndpointSettings, description="How the HA API endpoint is built.")
    token_ttl_hours: int = Field(24, ge=1, le=168, description="Lifetime of bootstrap tokens published for joins; a refresher on the control plane renews them.")

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        m = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)", v)
        if not m:
            raise ValueError(f"{v!r} is not a pinned x.y.z version")
        minor = f"{m.group(1)}.{m.group(2)}"
        if minor not in SUPPORTED_KUBERNETES_MINORS:
            raise ValueError(f"{v!r}: minor {minor} is not supported; allowed minors: {', '.join(SUPPORTED_KUBERNETES_MINORS)}")
        return v

    @property
    def minor(self) -> str:
        return ".".join(self.version.split(".")[:2])


class AccessSettings(_Model):
    ssh_allowed_cidrs: list[str] = Field(min_length=1, description="CIDRs allowed to SSH to the bastion (the only SSH entry point).")
    api_allowed_cidrs: list[str] = Field(min_length=1, description="CIDRs allowed to reach the Kubernetes API (6443) from outside.")
    allow_world: bool = Field(False, description="Must be true to allow 0.0.0.0/0 in either list: an explicit, reviewable override.")

    @field_validator("ssh_allowed_cidrs", "api_allowed_cidrs")
    @classmethod
    def _cidrs(cls, v: list[str]) -> list[str]:
        for item in v:
            _cidr(item)
        return v

    @model_validator(mode="after")
    def _world(self) -> "AccessSettings":
        for field in ("ssh_allowed_cidrs", "api_allowed_cidrs"):
            if not self.allow_world and any(netaddr.IPNetwork(c) == WORLD for c in getattr(self, field)):
                raise _field_error(field, "contains 0.0.0.0/0; narrow it, or set access.allow_world: true to accept exposure to the whole internet")
        return self


ServerGroupPolicy = Literal["anti-affinity", "soft-anti-affinity"]


class BastionSettings(_Model):
    flavor: str = Field("m1.small", min_length=1, description="Nova flavor of the bastion.")


class ControlPlaneSettings(_Model):
    count: Literal[1, 3, 5] = Field(3, description="Control-plane nodes: 1, 3 or 5 (odd, for etcd quorum).")
    flavor: str = Field("m1.large", min_length=1, description="Nova flavor of control-plane nodes.")
    server_group_policy: ServerGroupPolicy = Field("anti-affinity", description="Nova server group policy for the control plane.")


TAINT = re.compile(r"^[A-Za-z0-9][-A-Za-z0-9_./]*(=[-A-Za-z0-9_.]*)?:(NoSchedule|PreferNoSchedule|NoExecute)$")
LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
# NodeRestriction: the labels a kubelet may set on its own node inside kubernetes.io / k8s.io.
K8S_LABEL_DOMAIN = re.compile(r"^(.*\.)?(kubernetes|k8s)\.io$")
KUBELET_LABEL_PREFIXES = ("kubelet.kubernetes.io", "node.kubernetes.io")
LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


class WorkerPoolSettings(_Model):
    name: str = Field(pattern=r"^[a-z]([a-z0-9-]{0,14}[a-z0-9])?$", description="Pool name: DNS label, at most 16 chars; part of node names.")
    count: int = Field(ge=0, le=1000, description="Number of workers in the pool (0 keeps the pool defined but empty).")
    flavor: str = Field(min_length=1, description="Nova flavor of the pool's workers.")
    labels: dict[str, str] = Field(default_factory=dict, description="Kubernetes node labels for the pool.")
    taints: list[str] = Field(default_factory=list, description="Kubernetes taints, `key[=value]:Effect`.")
    server_group_policy: ServerGroupPolicy = Field("soft-anti-affinity", description="Nova server group policy for the pool.")

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        for key, value in v.items():
            if not LABEL_KEY.match(key):
                raise ValueError(f"label key {key!r} is not a valid Kubernetes label key")
            prefix = key.split("/", 1)[0] if "/" in key else ""
            if K8S_LABEL_DOMAIN.match(prefix) and prefix not in KUBELET_LABEL_PREFIXES:
                raise ValueError(f"label {key!r}: a kubelet may only set kubernetes.io/k8s.io labels under "
                                 f"{', '.join(KUBELET_LABEL_PREFIXES)} (NodeRestriction); the join would fail")
            if not isinstance(value, str) or not LABEL_VALUE.match(value):
                raise ValueError(f"label {key!r} value {value!r} is not a valid Kubernetes label value")
        return v

    @field_validator("taints")
    @classmethod
    def _taints(cls, v: list[str]) -> list[str]:
        for taint in v:
            if not TAINT.match(taint):
                raise ValueError(f"taint {taint!r} is not key[=value]:NoSchedule|PreferNoSchedule|NoExecute")
        return v


class VariableToken(_Model):
    type: Literal["variable"] = "variable"
    variable: str = Field("consul_token", pattern=r"^[a-z][a-z0-9_]*$", description="Terraform variable holding the token (set `TF_VAR_<variable>`).")


class BarbicanToken(_Model):
    type: Literal["barbican"]
    secret_name: str = Field(min_length=1, description="Barbican secret whose payload is the token.")


class ConsulSettings(_Model):
    mode: Literal["bastion", "external"] = Field("bastion", description="`bastion`: a Consul server with ACLs runs on the bastion; `external`: use an existing Consul cluster.")
    addresses: list[str] = Field(default_factory=list, description="`host:port` of the external Consul servers (required for `external`, empty for `bastion`).")
    scheme: Literal["http", "https"] = Field("http", description="Scheme for the Consul HTTP API.")
    kv_prefix: str = Field("k8s-formation", pattern=r"^[a-z0-9][a-z0-9-/]*[a-z0-9]$", description="KV prefix; the cluster's keys live under `<kv_prefix>/<cluster>/`.")
    token: Union[VariableToken, BarbicanToken] = Field(
        default_factory=VariableToken, discriminator="type",
        description="Where the cluster's Consul ACL token comes from: a sensitive Terraform variable, or a Barbican secret.",
    )

    @field_validator("addresses")
    @classmethod
    def _addresses(cls, v: list[str]) -> list[str]:
        for item in v:
            m = re.fullmatch(r"([A-Za-z0-9.-]+):(\d{1,5})", item)
            if not m or not 0 < int(m.group(2)) < 65536:
                raise ValueError(f"{item!r} is not host:port")
        return v

    @model_validator(mode="after")
    def _mode(self) -> "ConsulSettings":
        if self.mode == "external" and not self.addresses:
            raise _field_error("addresses", "mode external needs at least one address (host:port)")
        if self.mode == "bastion" and self.addresses:
            raise _field_error("addresses", "must be empty in bastion mode (the bastion's fixed address is used)")
        return self


class LocalBackend(_Model):
    type: Literal["local"] = "local"
    path: Optional[str] = Field(None, description="State file path; default `terraform.<env>.tfstate` in the project root.")


class ConsulBackend(_Model):
    type: Literal["consul"]
    address: str = Field(min_length=1, description="Consul address for the state (locking is built in).")
    path: str = Field(min_length=1, description="KV path of the state.")
    scheme: Literal["http", "https"] = Field("https", description="Scheme of the state Consul's HTTP API.")


class S3Backend(_Model):
    type: Literal["s3"]
    bucket: str = Field(min_length=1, description="Bucket of the state.")
    key: str = Field(min_length=1, description="Object key of the state.")
    region: str = Field("us-east-1", description="Region name the S3-compatible store expects.")
    endpoint: str = Field(min_length=1, description="S3-compatible endpoint URL (e.g. Ceph RGW or Swift s3api).")
    use_lockfile: bool = Field(True, description="S3 native locking (OpenTofu >= 1.10 / Terraform >= 1.10). Must stay true: prod state must be locked.")

    @field_validator("use_lockfile")
    @classmethod
    def _locked(cls, v: bool) -> bool:
        if not v:
            raise ValueError("state must be locked; keep use_lockfile: true")
        return v


class Settings(_Model):
    cluster: ClusterSettings = Field(description="Identity of the cluster.")
    openstack: OpenStackSettings = Field(description="Where in the cloud the cluster is built.")
    network: NetworkSettings = Field(default_factory=NetworkSettings, description="Node, pod and service networks.")
    kubernetes: KubernetesSettings = Field(default_factory=KubernetesSettings, description="Kubernetes version, CNI, API endpoint.")
    access: AccessSettings = Field(description="Who may reach the cluster from outside.")
    bastion: BastionSettings = Field(default_factory=BastionSettings, description="The bastion server.")
    control_plane: ControlPlaneSettings = Field(default_factory=ControlPlaneSettings, description="The HA control plane.")
    worker_pools: list[WorkerPoolSettings] = Field(min_length=1, description="Worker pools.")
    consul: ConsulSettings = Field(default_factory=ConsulSettings, description="Consul used for the formation lock.")
    state_backend: Union[LocalBackend, ConsulBackend, S3Backend] = Field(
        default_factory=LocalBackend, discriminator="type",
        description="Where Terraform state lives: local (dev), or a remote backend with locking (consul, s3).",
    )

    @field_validator("worker_pools")
    @classmethod
    def _unique_pools(cls, v: list[WorkerPoolSettings]) -> list[WorkerPoolSettings]:
        seen: set[str] = set()
        for pool in v:
            if pool.name in seen:
                raise ValueError(f"pool name {pool.name!r} is used twice; names must be unique")
            if pool.name in {"cp", "bastion"}:
                raise ValueError(f"pool name {pool.name!r} is reserved")
            seen.add(pool.name)
        return v

    def expected_nodes(self) -> list["NodeSpec"]:
        name = self.cluster.name
        nodes = [NodeSpec(f"{name}-bastion", "bastion", "")]
        nodes += [NodeSpec(f"{name}-cp-{i}", "control-plane", "") for i in range(1, self.control_plane.count + 1)]
        for pool in self.worker_pools:
            nodes += [NodeSpec(f"{name}-{pool.name}-{i}", "worker", pool.name) for i in range(1, pool.count + 1)]
        return nodes


@dataclass(frozen=True)
class NodeSpec:
    name: str
    role: str
    pool: str


def _field_path(loc: tuple) -> str:
    parts: list[str] = []
    previous = None
    for item in loc:
        if previous in {"token", "state_backend"} and item in {"variable", "barbican", "local", "consul", "s3"}:
            pass  # the discriminated-union tag pydantic adds to the location
        elif isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
        previous = item
    return "".join(parts) or "(top level)"


def _describe(err: dict) -> str:
    kind, msg = err["type"], err["msg"]
    if kind == "extra_forbidden":
        return "unknown key (check the spelling; see the settings reference in README.md)"
    if kind == "missing":
        return "required field is missing"
    if kind in {"literal_error", "union_tag_invalid"}:
        return msg.replace("Input should be", "must be")
    msg = msg.removeprefix("Value error, ").replace("Input should be", "must be").replace("List should have", "must have")
    if "input" in err and kind not in {"value_error"} and not isinstance(err["input"], (dict, list)):
        msg += f" (got {err['input']!r})"
    return msg


def parse_settings(data: object, source: str) -> Settings:
    if not isinstance(data, dict):
        kind = "empty" if data is None else type(data).__name__
        raise SettingsError(f"{source}: (top level): must be a mapping of settings, got {kind}")
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc, message = tuple(err["loc"]), _describe(err)
        if message.startswith(FIELD_MARK):
            field, message = message[len(FIELD_MARK):].split(":", 1)
            loc += (field,)
        message = " ".join(message.split())  # exactly one line, whatever pydantic says
        raise SettingsError(f"{source}: {_field_path(loc)}: {message}") from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys: the later one would silently win."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def settings_path(env_or_path: str | Path, stacks_dir: Path = STACKS_DIR) -> Path:
    text = str(env_or_path)
    if text.endswith((".yaml", ".yml")) or "/" in text:
        return Path(text)
    return Path(stacks_dir) / f"{text}.yaml"


def load_settings(env_or_path: str | Path, stacks_dir: Path = STACKS_DIR) -> Settings:
    """Load and validate stacks/<env>.yaml (or an explicit path)."""
    path = settings_path(env_or_path, stacks_dir)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SettingsError(f"{source}: (file): no such settings file; environments live in stacks/<env>.yaml") from None
    except OSError as exc:
        raise SettingsError(f"{source}: (file): cannot read: {exc.strerror}") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise SettingsError(f"{source}: (yaml): {problem} at {where}") from None
    return parse_settings(data, source)


def environments(stacks_dir: Path = STACKS_DIR) -> list[str]:
    """Environment names, one per stacks/<env>.yaml."""
    return sorted(p.stem for p in Path(stacks_dir).glob("*.yaml"))
