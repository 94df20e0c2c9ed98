"""MkDocs hooks of the documentation site (``mkdocs.yml``: ``hooks``).

- The command-line reference is written from ``biounet``'s argument parsers when the site is built, so that
  it can never disagree with ``biounet --help``: a page holding ``<!-- cli-reference -->`` gets every
  subcommand's usage, description and options there.
- The Python API reference (``reference/api.md``) lists modules for mkdocstrings; before the build, every
  public name of those modules (functions, classes, and the public methods and properties of those classes)
  must have a docstring, or the build fails naming them: mkdocstrings itself renders a missing one as an
  empty entry.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import griffe
from mkdocs.exceptions import PluginError

DOCS = Path(__file__).resolve().parent
SRC = DOCS.parent / "src"
CLI_MARKER = "<!-- cli-reference -->"
# ``::: biounet.x.y`` lines of the API page: the modules whose public names must be documented.
API_PAGE = DOCS / "reference" / "api.md"


def on_pre_build(config: Any) -> None:
    """Fails the build when a public name of the API reference's modules has no docstring."""
    missing = undocumented(api_modules())
    if missing:
        raise PluginError(f"{len(missing)} public names of the API reference have no docstring: "
                          + ", ".join(missing))


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Puts the command-line reference where a page asks for it."""
    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, cli_reference())
    return markdown


def api_modules() -> list[str]:
    """The modules the API reference page renders (its ``::: module`` lines)."""
    return re.findall(r"^::: ([\w.]+)", API_PAGE.read_text(), flags=re.M)


def undocumented(modules: list[str]) -> list[str]:
    """Public names of ``modules`` without a docstring, as ``module.name`` (``module.Class.method``).

    Public: not starting with ``_``, defined in the module (not imported into it) and, where the module has
    ``__all__``, listed there. Dataclass fields and constants are documented by their class's or module's
    text and are not asked for.
    """
    package = griffe.load("biounet", search_paths=[str(SRC)], allow_inspection=False)
    missing = []
    for path in modules:
        module = package[path.removeprefix("biounet.")] if path != "biounet" else package
        listed = set(module.exports) if module.exports is not None else None
        for name, member in module.members.items():
            if member.is_alias or name.startswith("_") or (listed is not None and name not in listed):
                continue
            if not (member.is_function or member.is_class):
                continue
            if not member.docstring:
                missing.append(f"{path}.{name}")
            if member.is_class:
                for method_name, method in member.members.items():
                    if method_name.startswith("_") or method.is_alias or not method.is_function:
                        continue
                    if not method.docstring:
                        missing.append(f"{path}.{name}.{method_name}")
    return missing


def cli_reference() -> str:
    """Markdown for ``biounet`` and each subcommand: usage, description and a table of options."""
    from biounet.cli.main import build_parser

    parser = build_parser()
    parts = [_usage_block(parser), parser.description or "", parser.epilog or ""]
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subparsers.choices.items():
        parts += [f"## `biounet {name}`", _usage_block(sub), _escape(sub.description or ""), _options(sub)]
    return "\n\n".join(p for p in parts if p)


def _usage_block(parser: argparse.ArgumentParser) -> str:
    usage = parser.format_usage().removeprefix("usage: ").strip()
    return f"```text\n{usage}\n```"


def _options(parser: argparse.ArgumentParser) -> str:
    rows = ["| argument | what it does | default |", "|---|---|---|"]
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
            continue
        names = ", ".join(f"`{s}`" for s in action.option_strings) or f"`{action.dest}`"
        if action.option_strings and action.nargs != 0:
            names += f" `{action.metavar or action.dest.upper()}`"
        default = action.default
        shown = "" if default in (None, False, argparse.SUPPRESS, []) or action.nargs == 0 else f"`{default}`"
        help_text = (action.help or "").replace("%(default)s", str(default)).replace("%%", "%")
        rows.append(f"| {names} | {_escape(help_text)} | {shown} |")
    return "\n".join(rows)


def _escape(text: str) -> str:
    """Text from ``--help`` as Markdown: table bars escaped, ``<`` and ``>`` kept literal."""
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
