"""The README's shell commands, parsed, so tests check what users copy rather than copies of it."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
_BASH_BLOCK = re.compile(r"^```bash\n(.*?)^```", re.MULTILINE | re.DOTALL)


def section(title: str, text: str | None = None) -> str:
    """The Markdown of the README section headed ``## title``, up to the next ``## `` heading.

    Raises:
        AssertionError: If there is no such section.
    """
    text = README.read_text(encoding="utf-8") if text is None else text
    found = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert found, f"no README section {title!r}"
    return found.group(1)


def shell_lines(text: str | None = None) -> list[str]:
    """Every command line of the ``bash`` blocks as written, for a shell to run (comments kept).

    Args:
        text: Markdown to read; None reads the README.

    Returns:
        One line per command, in order; backslash-continued lines are joined into one, and
        blank and comment-only lines are left out.
    """
    text = README.read_text(encoding="utf-8") if text is None else text
    return [
        line
        for block in _BASH_BLOCK.findall(text)
        for line in block.replace("\\\n", " ").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def commands(text: str | None = None) -> list[list[str]]:
    """Every command of the ``bash`` blocks, as the shell splits it (comments dropped, no expansion).

    Args:
        text: Markdown to read; None reads the README.

    Returns:
        One argument list per command; backslash-continued lines are one command.
    """
    found: list[list[str]] = []
    for line in shell_lines(text):
        try:
            args = shlex.split(line, comments=True)
        except ValueError:  # not one command (an unbalanced quote): nothing a test looks for
            continue
        if args:
            found.append(args)
    return found


def commands_starting(*prefix: str) -> list[list[str]]:
    """The README commands whose arguments start with ``prefix`` (at least one).

    Raises:
        AssertionError: If the README has none.
    """
    matching = [args for args in commands() if tuple(args[: len(prefix)]) == prefix]
    assert matching, f"no README command starts with {' '.join(prefix)!r}"
    return matching


def option(args: list[str], name: str) -> str:
    """The value of option ``name`` (``--drop``) in an argument list."""
    return args[args.index(name) + 1]
