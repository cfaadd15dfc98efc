"""The README's command table and the CLI name the same commands, each with an example."""

import re
from pathlib import Path

from click.testing import CliRunner

from sia.cli import cli

README = Path(__file__).resolve().parents[2] / "README.md"


def _documented() -> set[str]:
    rows = [line for line in README.read_text().splitlines() if line.startswith("| `sia ")]
    return {re.match(r"\| `sia ([a-z-]+)", row).group(1) for row in rows}


def test_every_command_is_in_the_readme_and_every_readme_command_exists() -> None:
    assert _documented() == set(cli.commands)


def test_every_command_has_help_with_an_example() -> None:
    for name in sorted(cli.commands):
        out = CliRunner().invoke(cli, [name, "--help"])
        assert out.exit_code == 0, name
        assert "Example" in out.output, f"sia {name} --help shows no example"
