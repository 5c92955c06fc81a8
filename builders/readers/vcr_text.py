"""VCR's tokenised texts and the multiple-choice prompt of GPT4RoI's VCR protocol.

VCR stores every question, answer and rationale as a token list in which an object reference is a list of
0-based indices into the record's ``objects`` (``["Does", [0], "live", "in", "this", "house", "?"]``;
docs/formats.md#vcr-jsonl-records). This module turns such lists into text in the two forms the suite needs:

* the **protocol form** (:func:`protocol_text`): tokens joined by single spaces, each reference written as
  1-based numbers joined by commas (``[2, 1, 0]`` -> ``3,2,1``). This is how GPT4RoI's paper (Table 5) shows
  VCR questions and options ("How is 1 feeling ?"), and the evaluation protocol is defined on it
  (docs/protocols.md#object-references-in-vcr-text);
* the **natural form** (:func:`natural_text`): punctuation re-attached and each reference rendered by a
  caller-supplied function, for free-form instruction rows.

The prompt strings (:data:`QA_INSTRUCTION`, :data:`QAR_INSTRUCTION`, :data:`QAR_QUESTION`) are quoted from
GPT4RoI (arXiv 2307.03601, Table 5, as recorded in docs/protocols.md#vcr-multiple-choice) because they
*define* the protocol. The builder (``builders.sources.vcr``) and the VCR evaluator share them from here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from builders.placeholders import region_token

Token = str | list[int]
ReferenceRenderer = Callable[[list[int]], str]

LETTERS = ("A", "B", "C", "D")

QA_INSTRUCTION = (
    "{regions} refers to specific areas within the photo along with their respective identifiers. "
    "I need you to answer the question. Questions are multiple-choice; you only need to pick the correct "
    "answer from the given options (A), (B), (C), or (D)."
)
QAR_INSTRUCTION = (
    "{regions} refers to specific areas within the photo along with their respective identifiers. "
    "I give you a question and its answer, I need you to provide a rationale explaining why the answer is "
    "right. Both questions are multiple-choice; you only need to pick the correct answer from the given "
    "options (A), (B), (C), or (D)."
)
QAR_QUESTION = '"{question}" The answer is "{answer}". What\'s the rationale for this decision?'

# Tokens written without a space before them (VCR's tokeniser splits punctuation and clitics off).
_ATTACH_LEFT = {".", ",", "?", "!", ";", ":", ")", "]", "}", "%", "'", "n't"}
_ATTACH_RIGHT = {"(", "[", "{", "$"}
_LETTER_PATTERN = re.compile(r"\(\s*([ABCD])\s*\)|^\s*([ABCD])\s*(?:[).,:]|$)")


def is_reference(token: object) -> bool:
    """Whether a token of a list checked by :func:`check_tokens` is an object reference (a list of indices)."""
    return isinstance(token, list)


def object_indices(tokens: Sequence[Token]) -> list[int]:
    """The distinct object indices referenced in ``tokens``, in order of first mention."""
    seen: list[int] = []
    for token in tokens:
        if is_reference(token):
            seen.extend(i for i in token if i not in seen)
    return seen


def check_tokens(tokens: object) -> list[Token]:
    """``tokens`` if it is a VCR token list (strings and non-empty lists of integer indices); ``ValueError``
    naming the bad token otherwise. The other functions assume a checked list."""
    if not isinstance(tokens, list):
        raise ValueError(f"expected a token list, got {type(tokens).__name__}")
    for position, token in enumerate(tokens):
        if isinstance(token, str):
            continue
        if not (isinstance(token, list) and token
                and all(isinstance(i, int) and not isinstance(i, bool) for i in token)):
            raise ValueError(f"token {position} is {token!r}; expected a string or a list of object indices")
    return tokens


def numbers(indices: Sequence[int]) -> str:
    """The protocol's rendering of one reference: 1-based numbers joined by commas (``[2, 1, 0]`` -> ``3,2,1``)."""
    return ",".join(str(i + 1) for i in indices)


def protocol_text(tokens: Sequence[Token]) -> str:
    """Tokens joined by single spaces, references as :func:`numbers` (the form the paper's prompts use)."""
    return " ".join(numbers(t) if is_reference(t) else t for t in tokens)


def natural_text(tokens: Sequence[Token], render: ReferenceRenderer) -> str:
    """Readable text: punctuation and clitics (``'s``, ``n't``) attached, references rendered by ``render``."""
    out = ""
    glue = False  # the previous token asked for no space after it
    for token in tokens:
        piece = render(list(token)) if is_reference(token) else token
        attach = not is_reference(token) and (token in _ATTACH_LEFT or token.startswith("'"))
        if out and not attach and not glue:
            out += " "
        out += piece
        glue = not is_reference(token) and token in _ATTACH_RIGHT
    return out


def region_list(n_regions: int) -> str:
    """``<region1>,<region2>,...,<regionN>`` — the protocol's list of every object of the image."""
    return ",".join(region_token(k) for k in range(1, n_regions + 1))


def letter(index: int) -> str:
    """The assistant's answer for choice ``index``: ``(A)`` ... ``(D)``."""
    return f"({LETTERS[index]})"


def options_block(choices: Sequence[str]) -> str:
    """One option per line as ``(A),<text>`` ... ``(D),<text>``."""
    if len(choices) != len(LETTERS):
        raise ValueError(f"VCR has {len(LETTERS)} options, got {len(choices)}")
    return "\n".join(f"({LETTERS[i]}),{text}" for i, text in enumerate(choices))


def qa_prompt(question: str, choices: Sequence[str], n_regions: int) -> str:
    """The Q->A human turn (without ``<image>``): instruction, question, the four answers."""
    return "\n".join([QA_INSTRUCTION.format(regions=region_list(n_regions)), question, options_block(choices)])


def qar_prompt(question: str, answer: str, rationales: Sequence[str], n_regions: int) -> str:
    """The QA->R human turn (without ``<image>``): instruction, question with its right answer, the rationales."""
    return "\n".join([QAR_INSTRUCTION.format(regions=region_list(n_regions)),
                      QAR_QUESTION.format(question=question, answer=answer), options_block(rationales)])


def parse_letter(text: str) -> int:
    """The choice index a model's answer names (``"(C)"``, ``"C)"``, ``"C"``), or -1 when it names none.

    The first ``(X)`` in the text wins; failing that, a bare letter at the very start.
    """
    match = _LETTER_PATTERN.search(text.strip())
    if not match:
        return -1
    return LETTERS.index(match.group(1) or match.group(2))
