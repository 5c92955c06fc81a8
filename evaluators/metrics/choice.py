"""Multiple-choice scoring: the answer letter parsed from free text, accuracy, and letter bias.

Parsing rule (the first match in this order wins, so that "(B) ... (C)" is B):

1. a parenthesised letter ``(X)`` anywhere (the paper's format, ``(C)``), case-insensitive;
2. an explicit statement: "answer is X", "answer: X", "option X", "choice X";
3. a bare capital letter opening the answer and followed by end, ``)``, ``.``, ``:`` or ``,`` (``C``, ``C.``,
   ``C) the dog``).

A capital letter followed by a word ("A man is ...") is an article, not an answer: it stays unparsable, and
an unparsable answer counts as wrong (and is counted, see :func:`letter_distribution`).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

LETTERS = "ABCDEFGHIJ"
UNPARSABLE = "?"


def _letter_class(n_choices: int) -> str:
    return f"[{LETTERS[0]}-{LETTERS[n_choices - 1]}]"


def parse_letter(answer: str, n_choices: int = 4) -> int | None:
    """The 0-based choice index named by ``answer``, or ``None`` when it names none of the first ``n_choices``."""
    if not 1 <= n_choices <= len(LETTERS):
        raise ValueError(f"n_choices must be in 1..{len(LETTERS)}, got {n_choices}")
    letters = _letter_class(n_choices)
    patterns = (
        re.compile(rf"\(\s*({letters})\s*\)", re.IGNORECASE),
        re.compile(rf"\b(?:answer\s+is|answer\s*:|option|choice)\s*\(?\s*({letters})\b(?!['\w])", re.IGNORECASE),
        re.compile(rf"^\s*({letters})\s*(?:$|[).:,])"),
    )
    for pattern in patterns:
        match = pattern.search(answer)
        if match:
            return LETTERS.index(match.group(1).upper())
    return None


def letter(index: int | None) -> str:
    """``A``.. for a choice index, ``?`` for an unparsable answer."""
    return UNPARSABLE if index is None else LETTERS[index]


def letter_distribution(predicted: Sequence[int | None], gold: Sequence[int], n_choices: int = 4) -> dict[str, dict]:
    """Share of each letter among predictions and among gold answers, and the count of unparsable answers."""
    keys = [LETTERS[i] for i in range(n_choices)]
    pred_counts = Counter(letter(p) for p in predicted)
    gold_counts = Counter(letter(g) for g in gold)
    total = max(len(predicted), 1)
    return {
        "predicted": {k: pred_counts.get(k, 0) / total for k in keys},
        "gold": {k: gold_counts.get(k, 0) / max(len(gold), 1) for k in keys},
        "unparsable": int(pred_counts.get(UNPARSABLE, 0)),
    }


def correct(predicted: Sequence[int | None], gold: Sequence[int]) -> list[float]:
    """1.0 where the predicted index equals the gold one, else 0.0 (unparsable is wrong)."""
    if len(predicted) != len(gold):
        raise ValueError(f"{len(predicted)} predictions for {len(gold)} gold answers")
    return [float(p is not None and p == g) for p, g in zip(predicted, gold, strict=True)]
