"""``gpt4roi convert``: the released GPT4RoI weights (official parameter names) -> a ``save_pretrained`` folder.

See :mod:`gpt4roi.convert.official` for what is read and written and :mod:`gpt4roi.convert.names` for the table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .names import Counts, name_table
from .official import ConversionError, Sources, convert

__all__ = ["ConversionError", "Counts", "Sources", "convert", "main", "name_table"]


def _folder(value: Any) -> Path | None:
    return None if value in (None, "", "???") else Path(str(value)).expanduser()


def main(cfg: Any) -> int:
    """Entry point of ``gpt4roi convert`` (``conf/convert/config.yaml``)."""
    sources = Sources(checkpoint=_folder(cfg.checkpoint), vision=_folder(cfg.vision), base=_folder(cfg.base))
    config = convert(sources, cfg.out, max_length=int(cfg.max_length), norm_groups=int(cfg.region_norm_groups))
    print(f"gpt4roi convert: wrote {cfg.out} ({config.text_config.num_hidden_layers}-layer LLM, "
          f"{len(config.region_feature_layers)} region levels, dtype {config.dtype}); load it with "
          f"gpt4roi eval model=gpt4roi model.pretrained={cfg.out}")
    return 0
