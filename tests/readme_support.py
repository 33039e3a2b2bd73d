"""The README's shell commands, parsed, so tests check what users copy rather than copies of it."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
_BASH_BLOCK = re.compile(r"^```bash\n(.*?)^```", re.MULTILINE | re.DOTALL)


def commands(text: str | None = None) -> list[list[str]]:
    """Every command of the ``bash`` blocks, as the shell splits it (comments dropped, no expansion).

    Args:
        text: Markdown to read; None reads the README.

    Returns:
        One argument list per command; backslash-continued lines are one command.
    """
    text = README.read_text(encoding="utf-8") if text is None else text
    found: list[list[str]] = []
    for block in _BASH_BLOCK.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
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
