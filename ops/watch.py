"""Following the status prefix with Consul blocking queries."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

from ops.consul import ConsulClient, ConsulError, next_index
from ops.records import ClusterView, build_view, parse_record


@dataclass(frozen=True)
class StatusSource:
    client: ConsulClient
    prefix: str  # "<kv_prefix>/<cluster>/status/"
    expected: tuple

    def read(self, index: int = 0, wait_s: Optional[float] = None) -> tuple[ClusterView, int]:
        entries, new_index = self.client.list_prefix(self.prefix, index=index, wait_s=wait_s)
        records = [parse_record(e.key, e.value) for e in entries if not e.key.endswith("/")]
        return build_view(self.expected, records), new_index


def follow(source: StatusSource, wait_s: float, deadline: Optional[float] = None,
           clock: Callable[[], float] = time.monotonic,
           on_error: Optional[Callable[[ConsulError], None]] = None) -> Iterator[ClusterView]:
    """Yield the view now, then after every change (or every wait_s, so ages stay current).

    Blocking queries do the waiting; a Consul that is briefly away (restart, tunnel hiccup) is retried
    with a short back-off until the deadline, since formation keeps going without us.
    """
    index = 0
    backoff = 0.5
    while True:
        remaining = None if deadline is None else deadline - clock()
        if remaining is not None and remaining <= 0:
            return
        wait = wait_s if remaining is None else max(1.0, min(wait_s, remaining))
        try:
            view, new_index = source.read(index=index, wait_s=wait if index else None)
        except ConsulError as exc:
            if on_error is None or not exc.retryable:
                raise
            on_error(exc)
            time.sleep(min(backoff, max(0.0, remaining) if remaining is not None else backoff))
            backoff = min(backoff * 2, 5.0)
            continue
        backoff = 0.5
        index = next_index(index, new_index)
        yield view
