"""``gpt4roi <command> --help``: a command's keys explained by the comments of its YAML, and its config groups.

The YAML files are the documentation: a key's help is the comment at the end of its line or, failing that,
the comment block directly above it; the comment block that opens a file describes the whole file. Keys of a
group's default option are listed under the group's package (``architecture.name``, ``trainer.optimizer.lr``;
none for ``# @package _global_`` options, whose keys are the command's own), so what ``--help`` shows is what
``key=value`` sets. The parser reads the subset of YAML our configs use: block mappings, one-line values and
flow collections, and block scalars (``>-``), whose lines it skips.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from .configs import config_dir

_KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>\"[^\"]*\"|'[^']*'|[^\s#'\"\-][^:#]*?)\s*:(?:\s+(?P<rest>.*))?$")
_BLOCK_SCALAR = re.compile(r"^[|>][+-]?$")
_PACKAGE = re.compile(r"^#\s*@package\s+(\S+)")


@dataclass(frozen=True)
class DocumentedKey:
    """One key of a YAML file: its dotted path, its value as written (empty for a mapping) and its help."""

    path: str
    value: str
    comment: str


@dataclass(frozen=True)
class ConfigGroup:
    """A config group of a command: where its options live, which one is the default, and their package."""

    name: str
    folder: Path
    default: str | None
    package: str

    @property
    def options(self) -> list[str]:
        return sorted(path.stem for path in self.folder.glob("*.yaml"))


def split_comment(text: str) -> tuple[str, str]:
    """``text`` cut at its first ``#`` that starts a comment (outside quotes, after a space): (value, comment)."""
    quote = None
    for position, char in enumerate(text):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (position == 0 or text[position - 1].isspace()):
            return text[:position].rstrip(), text[position + 1:].strip()
    return text.rstrip(), ""


def header(text: str) -> str:
    """The comment block that opens a file, without its ``#`` marks and its ``# @package`` line."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        if not _PACKAGE.match(line):
            lines.append(line[2:] if line.startswith("# ") else line[1:])
    return "\n".join(lines)


def documented_keys(text: str, prefix: str = "") -> list[DocumentedKey]:
    """Every key of a YAML file with its value and help; mappings are listed only when they have a comment.

    ``defaults`` (Hydra's list of other files) is left out: the groups are listed on their own.
    """
    keys: list[DocumentedKey] = []
    parents: list[tuple[int, str]] = []  # (indent, key) of the enclosing mappings
    above: list[str] = []                # the comment block directly above the next key
    skip_deeper_than: int | None = None  # indent of a key whose more indented lines are not keys
    lines = text.splitlines()
    start = next((n for n, line in enumerate(lines) if not line.startswith("#")), len(lines))
    for line in lines[start:]:
        stripped = line.strip()
        indent = len(line) - len(line.lstrip(" "))
        if skip_deeper_than is not None and (not stripped or indent > skip_deeper_than):
            continue
        skip_deeper_than = None
        if not stripped:
            above = []
            continue
        if stripped.startswith("#"):
            above.append(stripped[1:].strip())
            continue
        match = _KEY_LINE.match(line)
        if match is None:  # a list item or a continuation line
            above = []
            continue
        key = match["key"].strip("\"'")
        value, comment = split_comment(match["rest"] or "")
        while parents and parents[-1][0] >= indent:
            parents.pop()
        path = ".".join(filter(None, [prefix, *(name for _, name in parents), key]))
        comment = comment or " ".join(above)
        above = []
        if key == "defaults" and not parents:
            skip_deeper_than = indent
            continue
        if _BLOCK_SCALAR.match(value):
            skip_deeper_than = indent
            value = "(text)"
        if value:
            keys.append(DocumentedKey(path, value, comment))
        else:
            parents.append((indent, key))
            if comment:
                keys.append(DocumentedKey(path, "", comment))
    return keys


def config_groups(command: str) -> list[ConfigGroup]:
    """The groups named in the ``defaults`` list of ``conf/<command>/config.yaml``, with their options."""
    root = config_dir()
    primary = OmegaConf.load(root / command / "config.yaml")
    groups = []
    for entry in primary.get("defaults", []):
        if not OmegaConf.is_dict(entry):
            continue  # _self_
        (spec, default), = entry.items()
        name, _, package = spec.lstrip("/").partition("@")
        folder = root / command / name if (root / command / name).is_dir() else root / name
        groups.append(ConfigGroup(name, folder, default, package or _declared_package(folder, default, name)))
    return groups


def _declared_package(folder: Path, option: str | None, group: str) -> str:
    """The package an option's ``# @package`` line declares ("" for ``_global_``), else the group's name."""
    if option is not None:
        for line in (folder / f"{option}.yaml").read_text().splitlines():
            if not line.startswith("#"):
                break
            declared = _PACKAGE.match(line)
            if declared:
                return "" if declared[1] == "_global_" else declared[1]
    return group


def command_help(command: str, summary: str) -> str:
    """The text of ``gpt4roi <command> --help``."""
    primary = config_dir() / command / "config.yaml"
    text = primary.read_text()
    keys = documented_keys(text)
    groups = config_groups(command)
    for group in groups:
        if group.default is not None:
            keys += documented_keys((group.folder / f"{group.default}.yaml").read_text(), group.package)
    lines = [f"usage: gpt4roi {command} [key=value ...] [--cfg] [--help]", "", f"{command}: {summary}"]
    description = header(text)
    if description:
        lines += ["", *description.splitlines()]
    width = min(max((len(key.path) + len(key.value) + 3 for key in keys), default=0), 60)
    lines += ["", f"keys (from {primary.relative_to(config_dir().parent)} and the groups' defaults):"]
    for key in keys:
        setting = f"{key.path} = {key.value}" if key.value else f"{key.path}:"
        lines.append(f"  {setting:<{width}}  {key.comment}".rstrip())
    if groups:
        name_width = max(len(group.name) for group in groups)
        lines += ["", "config groups (<group>=<option>; * marks the default):"]
        for group in groups:
            options = ", ".join(f"{option}*" if option == group.default else option for option in group.options)
            options += " (none by default)" if group.default is None else ""
            where = group.folder.relative_to(config_dir().parent)
            lines.append(f"  {group.name:<{name_width}}  {options}  ({where}/)")
    lines += ["", f"gpt4roi {command} --cfg prints the composed config with your overrides applied."]
    return "\n".join(lines)
