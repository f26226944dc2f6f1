"""The README's configuration reference is generated from the schema, and stays so."""

from pathlib import Path

from cloudinit_hostrouting.schema import markdown_reference


def test_readme_reference_matches_schema() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    assert markdown_reference() in readme, (
        "README's configuration reference is stale: paste `cloudinit-hostrouting schema "
        "--markdown` into it")
