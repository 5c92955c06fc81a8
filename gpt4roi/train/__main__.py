"""``python -m gpt4roi.train k=v ...``: the ``gpt4roi train`` command, for ``torchrun --nproc_per_node=N``.

Every rank composes the config itself with the CLI's own compose (same primary config, same error messages).
"""

from __future__ import annotations

import sys

from gpt4roi.cli import main as cli_main

if __name__ == "__main__":
    sys.exit(cli_main(["train", *sys.argv[1:]]))
