from __future__ import annotations

import json
import re
import threading
import time

from tests.ops import formation_records as fr
from tests.ops.conftest import STATUS, TtyIO, run_cli

HEADER = re.compile(r"^NODE +ROLE +POOL +PHASE +IN PHASE +LAST ERROR$")


def _rows(out: str) -> dict[str, list[str]]:
    lines = out.rstrip("\n").split("\n")
    assert HEADER.match(lines[0]), lines[0]
    # Columns are aligned: every field starts where its header does.
    starts = [lines[0].index(h) for h in ("NODE", "ROLE", "POOL", "PHASE", "IN PHASE", "LAST ERROR")]
    rows = {}
    for line in lines[1:]:
        cells = [line[a:b].strip() for a, b in zip(starts, starts[1:] + [None])]
        rows[cells[0]] = cells
    return rows


def test_status_all_joined_plain_and_stable(kv):
    fr.write_all(kv, STATUS, fr.ALL_JOINED)
    res = run_cli("status", "dev", "--consul-addr", kv.http_addr)
    assert res.code == 0, res
    assert "\x1b[" not in res.out  # not a terminal: no colours
    rows = _rows(res.out)
    assert list(rows) == ["dev-bastion", "dev-cp-1", "dev-cp-2", "dev-cp-3", "dev-general-1", "dev-general-2"]
    assert rows["dev-general-1"][:4] == ["dev-general-1", "worker", "general", "joined"]
    assert rows["dev-cp-1"][:4] == ["dev-cp-1", "control-plane", "-", "joined"]
    assert all(r[5] == "-" for r in rows.values())
    # Joined ~338s ago (t0 = now - 600, joined at +262).
    assert re.fullmatch(r"5m3\ds", rows["dev-cp-1"][4]), rows["dev-cp-1"]


def test_status_shows_pending_and_errors(kv):
    fr.write_all(kv, STATUS, fr.STUCK)
    fr.write_all(kv, STATUS, [r for r in fr.ONE_FAILED if r[0] == "dev-general-2"])
    kv.put(STATUS + "dev-general-1", "{not json")
    rows = _rows(run_cli("status", "dev", "--consul-addr", kv.http_addr).out)
    assert rows["dev-cp-3"][3] == "joining" and rows["dev-cp-3"][5] == fr.CP_JOIN_WAIT
    assert rows["dev-general-2"][3] == "failed"
    assert rows["dev-general-2"][5].startswith("kubeadm join failed (exit 1): error execution phase preflight")
    assert rows["dev-general-1"][3] == "invalid"
    assert "unreadable status record" in rows["dev-general-1"][5]


def test_status_lists_every_expected_node_before_any_record(kv):
    res = run_cli("status", "dev", "--consul-addr", kv.http_addr)
    rows = _rows(res.out)
    assert [r[3] for r in rows.values()] == ["pending"] * 6
    assert [r[1] for r in rows.values()] == ["bastion"] + ["control-plane"] * 3 + ["worker"] * 2


def test_status_json_dump_round_trips(kv):
    written = fr.write_all(kv, STATUS, fr.ONE_FAILED)
    res = run_cli("status", "dev", "--consul-addr", kv.http_addr, "--json")
    dumped = {r["node"]: r for r in json.loads(res.out)}
    for node, rec in written.items():
        assert dumped[node]["history"] == rec["history"]
        assert dumped[node]["last_error"] == rec["last_error"]


def test_status_without_token_is_refused_with_a_hint(kv, monkeypatch):
    monkeypatch.delenv("CONSUL_HTTP_TOKEN")
    res = run_cli("status", "dev", "--consul-addr", kv.http_addr)
    assert res.code == 3
    assert res.err.startswith("status: no Consul token: set CONSUL_HTTP_TOKEN or pass --token-file")
    assert res.out == ""


def test_status_with_unknown_token_is_denied(kv, monkeypatch):
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", "3f1c2a9e-0000-4000-8000-000000000000")
    res = run_cli("status", "dev", "--consul-addr", kv.http_addr)
    assert res.code == 3
    assert "denied reading k8s-formation/dev/status/ (403)" in res.err
    assert "3f1c2a9e" not in res.err  # the token itself is never echoed


def test_status_token_file(kv, monkeypatch, tmp_path):
    token = tmp_path / "token"
    token.write_text(kv.operator_token + "\n")
    monkeypatch.delenv("CONSUL_HTTP_TOKEN")
    res = run_cli("status", "dev", "--consul-addr", kv.http_addr, "--token-file", str(token))
    assert res.code == 0, res


def test_status_unreachable_consul(kv):
    from tests.consul_fixture import free_port

    res = run_cli("status", "dev", "--consul-addr", f"127.0.0.1:{free_port()}")
    assert res.code == 3 and "cannot reach Consul" in res.err


def _replay(consul, scenario, scale: float, t0: float) -> None:
    last = 0.0
    for offset, node, rec in fr.events(scenario, t0):
        time.sleep(max(0.0, (offset - last) * scale))
        last = offset
        consul.put(STATUS + node, rec)


def test_watch_redraws_until_all_joined(kv):
    t0 = time.time()
    out = TtyIO()
    writer = threading.Thread(target=_replay, args=(kv, fr.ALL_JOINED, 0.004, t0))
    writer.start()
    try:
        res = run_cli("status", "dev", "--consul-addr", kv.http_addr, "--watch", "--interval", "1", out=out)
    finally:
        writer.join()
    assert res.code == 0, res
    frames = res.out.split("\x1b[H\x1b[J")[1:]
    assert len(frames) >= 3  # it redrew while nodes moved
    assert frames[-1].startswith("cluster dev: 6/6 joined")
    assert "\x1b[32mjoined" in frames[-1]  # colour on a terminal


def test_watch_piped_prints_changes_and_exits_on_failure(kv):
    fr.write_all(kv, STATUS, fr.ONE_FAILED)
    res = run_cli("status", "dev", "--consul-addr", kv.http_addr, "--watch")
    assert res.code == 1
    assert res.out.startswith("cluster dev: 5/6 joined, 1 failed\n")
    assert "\x1b[" not in res.out
