"""Tokenizers for GPT4RoI: the multimodal special tokens, and a tiny BPE that needs no download.

The tiny tokenizer is a byte-level BPE (lossless: ``decode(encode(text)) == text`` for any text, which the
processor's exact label masks rely on) trained with the ``tokenizers`` library on the suite's own
instruction templates, the conversation template and a small word list of the synthetic world (colours,
shapes, sizes, positions, numbers). It is saved with the model, so a trained tiny model reloads exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from builders.sources import templates

from .conversation import ASSISTANT_ROLE, HUMAN_ROLE, STOP_MARKER, SYSTEM_MESSAGE

IMAGE_START_TOKEN = "<im_start>"
IMAGE_PATCH_TOKEN = "<im_patch>"
IMAGE_END_TOKEN = "<im_end>"
ROI_TOKEN = "<roi>"
MULTIMODAL_TOKENS = (IMAGE_START_TOKEN, IMAGE_PATCH_TOKEN, IMAGE_END_TOKEN, ROI_TOKEN)
BASE_SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}

WORDS = {
    "colours": "red green blue yellow orange purple pink brown black white gray grey cyan magenta teal navy",
    "shapes": "circle square triangle rectangle ellipse star diamond hexagon cross ring disk box oval pentagon",
    "sizes": "tiny small medium large big huge little short tall wide narrow thin thick",
    "positions": "left right top bottom middle center centre upper lower corner edge above below beside near "
    "next to behind front inside outside between first second third last",
    "numbers": "0 1 2 3 4 5 6 7 8 9 10 zero one two three four five six seven eight nine ten",
    "glue": "a an the is are of in on at and with this that there it its region image picture photo object "
    "yes no A B C D (A) (B) (C) (D) ###",
}


def default_corpus() -> Iterator[str]:
    """Text the tiny BPE learns from: templates, the conversation template and the word lists."""
    yield SYSTEM_MESSAGE
    yield f"{STOP_MARKER} {HUMAN_ROLE}: {STOP_MARKER} {ASSISTANT_ROLE}: "
    for name in dir(templates):
        value = getattr(templates, name)
        if isinstance(value, list) and value and all(isinstance(item, str) for item in value):
            yield from (item.replace("{region}", "region1").replace("{regions}", "region1 and region2") for item in value)
    for group in WORDS.values():
        words = group.split()
        yield " ".join(words)
        # Each word also after a space and capitalised, the forms it takes inside sentences.
        yield " ".join(word.capitalize() for word in words)
        yield from (f"region{k} " for k in range(1, 10))


def train_tiny_tokenizer(texts: Iterable[str] | None = None, vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on ``texts`` (default: :func:`default_corpus`) with GPT4RoI's special tokens."""
    specials = list(BASE_SPECIAL_TOKENS.values()) + list(MULTIMODAL_TOKENS)
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(list(texts if texts is not None else default_corpus()), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, extra_special_tokens=list(MULTIMODAL_TOKENS), **BASE_SPECIAL_TOKENS
    )


def add_multimodal_tokens(tokenizer: PreTrainedTokenizerBase) -> int:
    """Add the image-span and ``<roi>`` tokens to a pretrained LLM's tokenizer; returns how many were new.

    A Llama tokenizer has no padding token; its ``<unk>`` stands in (as in LLaVA), so no extra row is needed.
    """
    missing = [token for token in MULTIMODAL_TOKENS if tokenizer.convert_tokens_to_ids(token) in (None, tokenizer.unk_token_id)]
    added = tokenizer.add_special_tokens({"extra_special_tokens": missing}, replace_extra_special_tokens=False) if missing else 0
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token if tokenizer.unk_token is not None else tokenizer.eos_token
    return added


def multimodal_token_ids(tokenizer: PreTrainedTokenizerBase) -> dict[str, int]:
    """The config fields of :class:`GPT4RoIConfig` that name the special tokens' ids."""
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in MULTIMODAL_TOKENS}
    absent = [token for token, index in ids.items() if index is None or index == tokenizer.unk_token_id]
    if absent:
        raise ValueError(f"tokenizer lacks GPT4RoI's special tokens {absent}; call add_multimodal_tokens first")
    return {
        "image_start_token_id": ids[IMAGE_START_TOKEN],
        "image_patch_token_id": ids[IMAGE_PATCH_TOKEN],
        "image_end_token_id": ids[IMAGE_END_TOKEN],
        "roi_token_id": ids[ROI_TOKEN],
    }
