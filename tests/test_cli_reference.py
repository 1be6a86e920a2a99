"""docs/cli.md's command reference is generated from the argparse parser, so it cannot drift from the CLI.

The block between the ``cli-reference`` markers in docs/cli.md must equal what :func:`render` builds from
``modalrec.cli.build_parser()``. After changing a command or an option, regenerate it with
``python tests/test_cli_reference.py``. The text is built from the parser's attributes (option strings, metavars,
choices, defaults, help), not from argparse's formatter, so it does not depend on the Python version or terminal.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
BEGIN = "<!-- cli-reference: generated from the parser by `python tests/test_cli_reference.py` -->"
END = "<!-- /cli-reference -->"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _option(action: argparse.Action) -> str:
    """``--name VALUE`` (or ``--name a|b`` for choices); a positional is its metavar or dest."""
    if not action.option_strings:
        return _cell(str(action.metavar or action.dest))
    name = ", ".join(action.option_strings)
    if action.nargs != 0:
        value = (
            "|".join(map(str, action.choices))
            if action.choices
            else str(action.metavar or action.dest.upper())
        )
        name += f" {value}"
    return _cell(name)


def _meaning(action: argparse.Action) -> str:
    text = action.help or ""
    default = action.default
    if default not in (None, False, [], "", argparse.SUPPRESS) and "default" not in text:
        text += f" (default {default})"
    if action.required and action.option_strings:
        text += " (required)"
    return _cell(text.strip())


Command = tuple[list[str], argparse.ArgumentParser, str]


def _commands(parser: argparse.ArgumentParser, prefix: list[str], summary: str = "") -> list[Command]:
    """Every leaf command: its words after ``modalrec``, its parser and its one-line help."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [(prefix, parser, summary)]
    helps = {c.dest: c.help or "" for c in subs[0]._choices_actions}
    found: list[Command] = []
    for name, sub in subs[0].choices.items():
        found += _commands(sub, [*prefix, name], helps.get(name, ""))
    return found


def render() -> str:
    """The reference: one section per command (``modalrec data split`` etc.), one table row per option."""
    from modalrec.cli import build_parser

    lines = [BEGIN, ""]
    for words, sub, summary in _commands(build_parser(), []):
        lines.append(f"### `modalrec {' '.join(words)}`")
        lines.append("")
        if summary:
            lines += [_cell(summary[0].upper() + summary[1:]) + ".", ""]
        rows = [a for a in sub._actions if not isinstance(a, argparse._HelpAction)]
        if rows:
            lines += ["| option | meaning |", "|---|---|"]
            lines += [f"| `{_option(a)}` | {_meaning(a)} |" for a in rows]
        else:
            lines.append("No options.")
        lines.append("")
    lines.append(END)
    return "\n".join(lines)


def _block(text: str) -> str:
    start, end = text.index(BEGIN), text.index(END) + len(END)
    return text[start:end]


def test_the_cli_reference_in_the_docs_matches_the_parser() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert _block(text) == render(), "docs/cli.md is out of date: run `python tests/test_cli_reference.py`"


def test_every_command_has_a_section() -> None:
    from modalrec.cli import build_parser

    text = DOC.read_text(encoding="utf-8")
    for words, _, _ in _commands(build_parser(), []):
        assert f"### `modalrec {' '.join(words)}`" in text


def write() -> None:
    text = DOC.read_text(encoding="utf-8")
    DOC.write_text(text.replace(_block(text), render()), encoding="utf-8")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    write()
    print(f"wrote {DOC}")
