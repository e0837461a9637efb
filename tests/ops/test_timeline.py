from __future__ import annotations

import json

import pytest
from PIL import Image

from ops import timeline
from ops.records import record_from_dict
from tests.ops import formation_records as fr
from tests.ops.conftest import STATUS, run_cli

T0 = 1764864000.0  # fixed, so the dump and the picture are reproducible


def _hex(rgb) -> str:
    return "#%02x%02x%02x" % tuple(rgb[:3])


COLOUR_PHASE = {v: k for k, v in timeline.PHASE_COLOURS.items()}


def _bands(png: str, box: tuple[int, int, int, int]) -> list[list[str]]:
    """Bars read back from the image: horizontal bands of phase-coloured pixels inside the plot area,
    each as the left-to-right sequence of phases along its middle row."""
    img = Image.open(png).convert("RGB")
    left, top, right, bottom = box
    px = img.load()
    coloured_rows = [y for y in range(top, bottom)
                     if any(_hex(px[x, y]) in COLOUR_PHASE for x in range(left, right))]
    bands, current = [], []
    for y in coloured_rows:
        if current and y != current[-1] + 1:
            bands.append(current)
            current = []
        current.append(y)
    if current:
        bands.append(current)
    sequences = []
    for band in bands:
        y = band[len(band) // 2]
        seq = []
        for x in range(left, right):
            phase = COLOUR_PHASE.get(_hex(px[x, y]))
            if phase and (not seq or seq[-1] != phase):
                seq.append(phase)
        sequences.append(seq)
    return sequences


def test_segments_follow_history_and_are_contiguous():
    nodes = [record_from_dict(r) for r in fr.records(fr.ONE_FAILED, T0).values()]
    tl = timeline.compute(nodes)
    assert tl.t0 == T0
    by_node = {b.node: b for b in tl.bars}
    cp1 = by_node["dev-cp-1"].segments
    assert [s.phase for s in cp1] == ["booting", "provisioning", "waiting-for-lock", "initializing", "joined"]
    assert [s.start for s in cp1] == [2, 21, 140, 141, 262]
    for bar in tl.bars:
        for a, b in zip(bar.segments, bar.segments[1:]):
            assert a.end == b.start
        assert bar.segments[-1].end == pytest.approx(tl.span)
    assert by_node["dev-general-2"].last_error == fr.JOIN_TIMEOUT
    assert tl.span > 563  # the failure at +563 stays visible


def test_png_has_one_bar_per_node_with_phases_in_order(tmp_path):
    dump = tmp_path / "records.json"
    recs = fr.records(fr.ONE_FAILED, T0)
    dump.write_text(json.dumps(list(recs.values())))
    tl = timeline.compute(timeline.load_dump(str(dump)))
    out = tmp_path / "timeline.png"
    rendered = timeline.render(tl, str(out), "Formation of cluster dev")
    with Image.open(out) as img:
        assert img.format == "PNG"
        assert img.size == (rendered.width, rendered.height) == (1100, 490)
    bands = _bands(str(out), rendered.plot_box)
    assert len(bands) == len(recs) == 6
    # Top to bottom in the dump's order; each bar shows the node's phases in history order.
    # (A 1-second phase on a 580-second axis is under one pixel wide, so it may not show.)
    for seq, rec in zip(bands, recs.values()):
        phases = [h["phase"] for h in rec["history"]]
        assert seq == [p for p in phases if p in seq], (rec["node"], seq)
        assert len(seq) >= len(phases) - 1
    assert bands[-1][-1] == "failed"


def test_timeline_cli_from_json_and_from_consul(kv, tmp_path):
    # From Consul: status --json is the post-mortem dump, timeline --from-json draws it later.
    fr.write_all(kv, STATUS, fr.STUCK)
    live = tmp_path / "live.png"
    res = run_cli("timeline", "dev", "--consul-addr", kv.http_addr, "-o", str(live))
    assert res.code == 0, res
    assert res.out == f"wrote {live} (5 nodes, " + res.out.split("(5 nodes, ", 1)[1]
    dump = tmp_path / "dump.json"
    dump.write_text(run_cli("status", "dev", "--consul-addr", kv.http_addr, "--json").out)
    again = tmp_path / "again.png"
    res = run_cli("timeline", "--from-json", str(dump), "-o", str(again))
    assert res.code == 0, res
    assert Image.open(again).size[0] == 1100


def test_timeline_reads_consul_kv_export(kv, consul_bin, tmp_path):
    """`consul kv export` of the cluster prefix is a valid post-mortem input too."""
    import subprocess

    fr.write_all(kv, STATUS, fr.ALL_JOINED)
    kv.put("k8s-formation/dev/initialized", {"node": "dev-cp-1", "at": T0})
    exported = subprocess.run([consul_bin, "kv", "export", "-http-addr", kv.http_addr, "k8s-formation/dev/"],
                              env={"CONSUL_HTTP_TOKEN": kv.operator_token}, capture_output=True, check=True)
    dump = tmp_path / "export.json"
    dump.write_bytes(exported.stdout)
    out = tmp_path / "t.png"
    res = run_cli("timeline", "--from-json", str(dump), "-o", str(out))
    assert res.code == 0, res
    assert "(6 nodes," in res.out


def test_timeline_bad_input_is_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    res = run_cli("timeline", "--from-json", str(bad), "-o", str(tmp_path / "x.png"))
    assert res.code == 3 and res.err.count("\n") == 1 and "is not JSON" in res.err
    assert not (tmp_path / "x.png").exists()
