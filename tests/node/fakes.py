"""Node-contract inputs shaped like the synth side's, and a stand-in for cloud-init's write_files."""
from __future__ import annotations

import base64
import gzip
import re
import uuid
from pathlib import Path

import yaml

TOKEN_RE = re.compile(r"\$\{TfToken\[[^\]]*\]\}")
CONSUL_TOKEN_PLACEHOLDER = "${TfToken[TOKEN.12]}"
API_PUBLIC_PLACEHOLDER = "${TfToken[TOKEN.7]}"


def fake_facts(cluster: str = "dev", consul_addresses: list[str] | None = None, mode: str = "bastion") -> dict:
    return {
        "cluster_name": cluster,
        "kubernetes_version": "1.34.2",
        "kubernetes_minor": "1.34",
        "api_endpoint": {"host": "10.20.0.10", "port": 6443, "type": "vip"},
        "api_cert_sans": ["10.20.0.10", API_PUBLIC_PLACEHOLDER],
        "node_cidr": "10.20.0.0/24",
        "pod_cidr": "10.244.0.0/16",
        "service_cidr": "10.96.0.0/12",
        "cni": {"name": "calico", "version": "v3.30.3", "calico_encapsulation": "ipip"},
        "consul": {"mode": mode, "addresses": consul_addresses or ["10.20.0.5:8500"], "scheme": "http",
                   "kv_prefix": "k8s-formation"},
        "join": {"token_ttl_hours": 24, "certificate_key_ttl_hours": 2},
        "bastion_consul_server": mode == "bastion",
    }


def fake_secrets() -> dict[str, str]:
    return {"consul_token": CONSUL_TOKEN_PLACEHOLDER}


def resolve(rendered: str, values: dict[str, str] | None = None) -> str:
    """The cloud-config as the node receives it: tokens replaced by values (a UUID unless given)."""
    values = values or {}
    return TOKEN_RE.sub(lambda m: values.get(m.group(0), str(uuid.UUID(int=0x1234))), rendered)


def write_files(cloud_config: str, root: Path) -> dict[str, Path]:
    """Applies write_files under `root` as cloud-init would (paths re-rooted); returns path -> file."""
    doc = yaml.safe_load(cloud_config)
    written = {}
    for entry in doc["write_files"]:
        content = entry["content"]
        data = (gzip.decompress(base64.b64decode(content)) if entry.get("encoding") == "gz+b64"
                else content.encode())
        target = root / entry["path"].lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        target.chmod(int(entry["permissions"], 8))
        written[entry["path"]] = target
    return written
