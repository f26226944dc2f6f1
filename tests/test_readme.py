"""The README's configuration reference is generated from the schema, and stays so."""

from pathlib import Path

from cloudinit_hostrouting.schema import markdown_reference


def test_readme_reference_matches_schema() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    assert markdown_reference() in readme, (
        "README's configuration reference is stale: paste `cloudinit-hostrouting schema "
        "--markdown` into it")


def _block_after(readme: str, marker: str) -> str:
    """The fenced block right after ``<!-- marker -->``."""
    at = readme.index(f"<!-- {marker} -->")
    start = readme.index("\n", readme.index("```", at)) + 1
    return readme[start:readme.index("```", start)]


def test_readme_error_sample_is_what_the_commands_print(tmp_path: Path) -> None:
    """The sample input, run through validate and render, prints the sample error."""
    from cli_support import cli

    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    sample_in = _block_after(readme, "error-sample-input")
    sample_out = _block_after(readme, "error-sample-output").strip()
    assert "\n" not in sample_out and sample_out.startswith("host_routing.")
    user_data = tmp_path / "user-data"
    user_data.write_text("#cloud-config\n" + sample_in, encoding="utf-8")
    proc = cli("validate", str(user_data))
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == [f"{user_data}: error: {sample_out}"], proc.stdout
    proc = cli("render", "--config", str(user_data), "--root", str(tmp_path / "root"))
    assert proc.returncode == 2
    assert f"  - {sample_out}\n" in proc.stderr, proc.stderr
