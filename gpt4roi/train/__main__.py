"""``python -m gpt4roi.train k=v ...``: the ``gpt4roi train`` command, for ``torchrun --nproc_per_node=N``.

Every rank composes the same config itself (:func:`gpt4roi.configs.compose`, as the CLI does) and runs the
command's entry point; a bad setting stops every rank with its error.
"""

from __future__ import annotations

import sys

from gpt4roi.configs import compose
from gpt4roi.train import main

if __name__ == "__main__":
    sys.exit(main(compose("train", sys.argv[1:])))
