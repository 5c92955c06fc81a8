"""Training GPT4RoI (stage 1, stage 2, VCR multiple choice) from a Hydra config: ``gpt4roi train``.

``main(cfg)`` is the command's entry point; ``python -m gpt4roi.train k=v ...`` (and ``torchrun ... -m
gpt4roi.train``) composes the same config from the command line.
"""

from .run import main

__all__ = ["main"]
