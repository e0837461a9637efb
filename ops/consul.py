"""The little of Consul's HTTP API the operator tools need: a recursive KV read, blocking or not."""
from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

# Consul caps blocking queries at 10 minutes and adds up to wait/16 of jitter.
MAX_WAIT_S = 600


class ConsulError(RuntimeError):
    """retryable: Consul may answer later (down, restarting); not for refusals such as a 403."""

    def __init__(self, message: str, retryable: bool = True):
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class KvEntry:
    key: str
    value: bytes
    modify_index: int


def read_token(token_file: Optional[str]) -> Optional[str]:
    """ACL token from --token-file or CONSUL_HTTP_TOKEN; never from argv, where `ps` would show it."""
    if token_file:
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConsulError(f"cannot read token file {token_file}: {exc.strerror}") from None
        if not token:
            raise ConsulError(f"token file {token_file} is empty")
        return token
    return os.environ.get("CONSUL_HTTP_TOKEN") or None


class ConsulClient:
    def __init__(self, base_url: str, token: Optional[str], timeout: float = 10.0):
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.timeout = timeout

    def list_prefix(self, prefix: str, index: int = 0, wait_s: Optional[float] = None) -> tuple[list[KvEntry], int]:
        """All keys under prefix and the X-Consul-Index; with index > 0 this blocks until a change or wait_s."""
        query = {"recurse": "true"}
        timeout = self.timeout
        if index > 0 and wait_s is not None:
            wait = max(1, min(int(wait_s), MAX_WAIT_S))
            query.update(index=str(index), wait=f"{wait}s")
            timeout = wait + wait / 16 + self.timeout
        url = f"{self.base_url}/v1/kv/{urllib.parse.quote(prefix)}?{urllib.parse.urlencode(query)}"
        req = urllib.request.Request(url)
        if self._token:
            req.add_header("X-Consul-Token", self._token)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - http(s) URL built above
                body = resp.read()
                new_index = int(resp.headers.get("X-Consul-Index", "0"))
        except urllib.error.HTTPError as exc:
            new_index = int(exc.headers.get("X-Consul-Index", "0") or 0)
            if exc.code == 404:
                return [], new_index
            if exc.code == 403:
                raise ConsulError(
                    f"Consul at {self.base_url} denied reading {prefix} (403): set CONSUL_HTTP_TOKEN "
                    "or --token-file to a token with read access to the cluster's prefix", retryable=False) from None
            raise ConsulError(f"Consul at {self.base_url} answered HTTP {exc.code} for {prefix}",
                              retryable=exc.code >= 500) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ConsulError(f"cannot reach Consul at {self.base_url}: {reason}") from None
        try:
            items = json.loads(body)
            entries = [
                KvEntry(i["Key"], base64.b64decode(i["Value"]) if i.get("Value") else b"", int(i["ModifyIndex"]))
                for i in items
            ]
        except (ValueError, KeyError, TypeError):
            raise ConsulError(f"Consul at {self.base_url} sent an unexpected KV answer for {prefix}") from None
        return entries, new_index


def next_index(previous: int, new: int) -> int:
    """Consul's rules for blocking loops: an index that goes backwards restarts the loop with one
    plain read (0); otherwise the index is at least 1, so a zero never turns the loop into a busy poll."""
    if new < previous:
        return 0
    return max(new, 1)
