"""The README's settings reference is generated from the model and must be current."""
from stacks.settings_doc import END, START, reference
from tests.helpers import ROOT


def test_settings_reference_is_current():
    text = (ROOT / "README.md").read_text()
    current = text[text.index(START):text.index(END) + len(END)]
    assert current == reference(), "README settings reference is stale: run `make docs`"


def test_readme_starts_with_the_two_commands():
    lines = (ROOT / "README.md").read_text().splitlines()
    block = lines[lines.index("```sh") + 1:lines.index("```sh") + 3]
    assert [line.split()[:2] for line in block] == [["make", "synth"], ["make", "test"]]
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_performance_table_matches_the_bench_results():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_report", ROOT / "bench" / "report.py")
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    text = (ROOT / "README.md").read_text()
    current = text[text.index(report.START):text.index(report.END) + len(report.END)]
    assert current == report.table(), "README performance table is stale: run `python bench/report.py --write`"
