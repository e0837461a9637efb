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
