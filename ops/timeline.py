"""Formation timeline: one horizontal bar per node, one segment per phase, from the records' history."""
from __future__ import annotations

import base64
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

from ops.records import ALL_PHASES, TERMINAL, NodeStatus, parse_record, record_from_dict

# Fixed colours (not a colormap) so a reader, and the tests, can tell phases apart by colour alone.
PHASE_COLOURS = {
    "booting": "#a6cee3",
    "provisioning": "#1f78b4",
    "waiting-for-lock": "#fdbf6f",
    "initializing": "#6a3d9a",
    "waiting-for-initialized": "#e6ab02",
    "joining": "#b2df8a",
    "joined": "#33a02c",
    "failed": "#e31a1c",
}
UNKNOWN_COLOUR = "#000000"


@dataclass(frozen=True)
class Segment:
    phase: str
    start: float  # seconds from the first event
    end: float


@dataclass(frozen=True)
class Bar:
    node: str
    segments: tuple[Segment, ...]
    last_error: Optional[str] = None


@dataclass(frozen=True)
class Timeline:
    t0: float  # epoch of the first event
    span: float  # seconds shown
    bars: tuple[Bar, ...]
    pending: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rendered:
    path: Path
    width: int
    height: int
    plot_box: tuple[int, int, int, int]  # left, top, right, bottom in image pixels (origin top-left)


def compute(nodes: Iterable[NodeStatus], now: Optional[float] = None) -> Timeline:
    """Segments per node. A node's last phase runs to `now` (live) or to the last event seen (dump);
    terminal phases get a short tail so they stay visible."""
    nodes = list(nodes)
    with_history = [n for n in nodes if n.history]
    pending = tuple(n.node for n in nodes if not n.history)
    if not with_history:
        return Timeline(t0=now or 0.0, span=0.0, bars=(), pending=pending)
    events = [h.at for n in with_history for h in n.history]
    updates = [n.updated for n in with_history if n.updated is not None]
    t0 = min(events)
    last = max(events + updates)
    end = max(last, now) if now is not None else last
    tail = max(1.0, 0.03 * (end - t0))
    all_terminal = all(n.history[-1].phase in TERMINAL for n in with_history)
    if now is None or all_terminal:
        end = max(end, last + tail)
    bars = []
    for n in with_history:
        hist = sorted(n.history, key=lambda h: h.at)
        segs = []
        for i, h in enumerate(hist):
            stop = hist[i + 1].at if i + 1 < len(hist) else end
            segs.append(Segment(h.phase, h.at - t0, max(h.at, stop) - t0))
        bars.append(Bar(n.node, tuple(segs), n.last_error))
    return Timeline(t0=t0, span=end - t0, bars=tuple(bars), pending=pending)


def load_dump(path: str) -> list[NodeStatus]:
    """Records from a JSON dump: a list of records, {node: record}, or `consul kv export` output."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise ValueError(f"{path} is not JSON: {exc}") from None
    if isinstance(data, dict):
        data = list(data.values())
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a list of status records")
    out = []
    for item in data:
        if isinstance(item, dict) and "key" in item and "value" in item:  # consul kv export
            if "/status/" not in item["key"]:
                continue
            out.append(parse_record(item["key"], base64.b64decode(item["value"])))
        elif isinstance(item, dict):
            out.append(record_from_dict(item))
        else:
            raise ValueError(f"{path}: entry {item!r:.40} is not a status record")
    return out


def render(tl: Timeline, output: str, title: str) -> Rendered:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    rows = [b.node for b in tl.bars] + [f"{p} (pending)" for p in tl.pending]
    dpi = 100
    fig_height = 2.2 + 0.45 * max(1, len(rows))
    fig, ax = plt.subplots(figsize=(11, fig_height), dpi=dpi)
    try:
        for y, bar in enumerate(tl.bars):
            for seg in bar.segments:
                ax.barh(y, max(seg.end - seg.start, 0.0), left=seg.start, height=0.6,
                        color=PHASE_COLOURS.get(seg.phase, UNKNOWN_COLOUR), linewidth=0, antialiased=False)
            if bar.last_error:
                ax.text(bar.segments[-1].end, y, "  " + _short(bar.last_error, 60), va="center", ha="left",
                        fontsize=7, clip_on=False)
        ax.set_yticks(range(len(rows)), rows)
        ax.set_ylim(len(rows) - 0.5, -0.5)  # first node on top
        ax.set_xlim(0, max(tl.span, 1.0))
        ax.set_xlabel("seconds since first event (" + time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(tl.t0)) + ")")
        ax.set_title(title)
        ax.grid(axis="x", color="#dddddd", linewidth=0.5)
        ax.set_axisbelow(True)
        used = [p for p in ALL_PHASES if any(s.phase == p for b in tl.bars for s in b.segments)]
        fig.legend(handles=[Patch(color=PHASE_COLOURS[p], label=p) for p in used],
                   loc="lower center", ncol=4, fontsize=8, frameon=False)
        fig.tight_layout(rect=(0, 0.5 / fig_height, 1, 1))  # leave the bottom strip to the legend
        fig.canvas.draw()
        width, height = fig.canvas.get_width_height()
        box = ax.get_window_extent()
        plot_box = (int(box.x0) + 1, int(height - box.y1) + 1, int(box.x1) - 1, int(height - box.y0) - 1)
        out = Path(output)
        out.parent.mkdir(parents=True, exist_ok=True)
        # Written beside the target and renamed, so a reader never sees half a PNG.
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
        os.close(fd)
        try:
            fig.savefig(tmp, format="png", dpi=dpi)
            os.chmod(tmp, 0o644)
            os.replace(tmp, out)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    finally:
        plt.close(fig)
    return Rendered(out, width, height, plot_box)


def _short(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
