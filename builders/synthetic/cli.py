"""``gpt4roi synth out=<dir> scale=<tiny|small|vg_full> seed=<n>``: write the synthetic world."""

from __future__ import annotations

from typing import Any

from builders.synthetic import synthesize
from builders.synthetic.summary import summary_table


def main(cfg: Any) -> None:
    bar = None
    if cfg.scale == "vg_full":
        from tqdm.auto import tqdm

        from builders.synthetic.vg_full import VG_IMAGES

        bar = tqdm(total=cfg.vg_images or VG_IMAGES, desc="vg_full images", unit=" img", dynamic_ncols=True)
    summary = synthesize(cfg.out, cfg.scale, int(cfg.seed), variants=bool(cfg.variants), vg_images=cfg.vg_images,
                         progress=bar.update if bar else None)
    if bar:
        bar.close()
    from rich.console import Console

    Console().print(summary_table(summary, f"synthetic world (scale={cfg.scale}, seed={cfg.seed}) -> {cfg.out}"))
