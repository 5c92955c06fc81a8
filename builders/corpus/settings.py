"""The settings of ``gpt4roi corpus`` besides the recipe (``conf/corpus/config.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builders.storage.output import DEFAULT_MAX_SHARD_BYTES


@dataclass
class Settings:
    """The command's settings besides the recipe (see conf/corpus/config.yaml)."""

    raw_root: Path | None
    out: Path
    builds: Path | None = None
    seed: int = 0
    rebuild: bool = False
    embed_images: bool = False
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES
    dedup: bool = True
    decontaminate: bool = False
    decontaminate_level: str = "image"
    iou: float = 0.9
    phash: str | None = None
    max_hash_distance: int = 0
    validate: bool = False
    card: bool = True
    plots: bool = True
    progress: bool = True
    batch_rows: int = 1000
    num_proc: int | None = None  # processes for the source builds and image embedding; None = the machine's cores

    def builds_dir(self) -> Path:
        return self.builds or self.out.parent / f"{self.out.name}.builds"


def settings_from_cfg(cfg: Any) -> Settings:
    return Settings(
        raw_root=Path(cfg.raw_root) if cfg.raw_root else None, out=Path(cfg.out),
        builds=Path(cfg.builds) if cfg.builds else None, seed=int(cfg.seed), rebuild=bool(cfg.rebuild),
        embed_images=bool(cfg.embed_images), max_shard_bytes=int(float(cfg.max_shard_mb) * 1024 * 1024),
        dedup=bool(cfg.dedup), decontaminate=bool(cfg.decontaminate),
        decontaminate_level=str(cfg.decontaminate_level), iou=float(cfg.iou), phash=cfg.phash,
        max_hash_distance=int(cfg.max_hash_distance), validate=bool(cfg.validate), card=bool(cfg.card),
        plots=bool(cfg.plots), progress=bool(cfg.progress),
        num_proc=None if cfg.get("num_proc") is None else int(cfg.num_proc))
