"""A process tree read from /proc, for tests that signal or measure what they started.

No imports beyond the standard library: tests/e2e/deploy_helpers.py also runs as the
measuring parent of every engine run, and pytest's import would count in its memory.
"""
from __future__ import annotations

import os
from pathlib import Path


def descendants(root: int) -> list[int]:
    """root and every live process below it, each parent before its children."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # Field 2 (the command name) may hold spaces and ')'; the fields after its last ')' do not.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [root], list(children.get(root, []))
    while todo:
        pid = todo.pop(0)
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found
