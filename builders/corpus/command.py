"""``gpt4roi corpus``: the command around :func:`builders.corpus.assembler.assemble`, and its summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from builders.corpus.assembler import assemble
from builders.corpus.recipe import parse_recipe
from builders.corpus.settings import settings_from_cfg


def print_summary(report: dict[str, Any], out: Path) -> None:
    from rich.table import Table

    from builders.corpus.contamination import print_table, wide_console

    table = Table(title=f"corpus {report['recipe']['name']} -> {out}  ({report['seconds']:.1f} s)")
    columns = ("read", "other_variants", "duplicates_within", "duplicates_across", "decontaminated",
               "candidates", "sampled", "written")
    for column in ("config", "split", *columns):
        table.add_column(column.replace("_", " "), overflow="fold")
    for name, splits in report["entries"].items():
        for split, counts in splits.items():
            table.add_row(name, split, *(str(counts[c]) for c in columns))
    console = wide_console()
    console.print(table)
    print_table(report["contamination"], "contamination against the recipe's evaluation splits")
    console.print(f"fingerprint {report['fingerprint']}")


def main(cfg: Any) -> int:
    """Entry point of ``gpt4roi corpus recipe=<name> raw_root=<dir> out=<dir> [key=value ...]``."""
    from omegaconf import OmegaConf

    recipe = parse_recipe(OmegaConf.to_container(cfg.recipe, resolve=True))
    settings = settings_from_cfg(cfg)
    report = assemble(recipe, settings)
    print_summary(report, settings.out)
    return 0
