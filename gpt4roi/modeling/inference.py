"""Row-level inference for the evaluators' protocol adapter and the chat page: generation and scoring."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from PIL import Image

from ..conversation import STOP_MARKER
from ..processing import IGNORE_INDEX, GPT4RoIProcessor
from .modeling_gpt4roi import GPT4RoIForCausalLM


def _chunks(count: int, size: int) -> Iterator[slice]:
    for start in range(0, count, max(1, size)):
        yield slice(start, min(count, start + max(1, size)))


def _to_model(batch: dict[str, Any], model: GPT4RoIForCausalLM) -> dict[str, Any]:
    """Tensors onto the model's device (pixels in its dtype); boxes stay float32 for RoIAlign."""
    device, dtype = model.device, model.dtype
    moved = {key: value.to(device) for key, value in batch.items() if isinstance(value, torch.Tensor)}
    moved["pixel_values"] = moved["pixel_values"].to(dtype)
    moved["boxes"] = [box.to(device) for box in batch["boxes"]]
    return moved


def cut_at_stop(text: str, stops: Sequence[str] = (STOP_MARKER,)) -> str:
    """The answer before the first stop string, without surrounding whitespace."""
    end = min([text.find(stop) for stop in stops if stop in text] or [len(text)])
    return text[:end].strip()


@torch.no_grad()
def generate_for_rows(
    model: GPT4RoIForCausalLM,
    processor: GPT4RoIProcessor,
    rows: Sequence[Mapping[str, Any]],
    max_new_tokens: int = 64,
    images: Sequence[Image.Image | None] | None = None,
    batch_size: int = 8,
    temperature: float = 0.0,
    stop: Sequence[str] = (STOP_MARKER,),
) -> list[str]:
    """The assistant's answer to each row's last human turn (a trailing reference answer is ignored).

    Greedy unless ``temperature > 0``; generation stops at any of ``stop`` and the text is cut there.
    """
    model.eval()
    images = list(images) if images is not None else [None] * len(rows)
    tokenizer = processor.tokenizer
    answers: list[str] = []
    for part in _chunks(len(rows), batch_size):
        batch = _to_model(processor(rows[part], images[part], generation=True), model)
        sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        output = model.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            stop_strings=list(stop),
            tokenizer=tokenizer,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            **sampling,
        )
        new_tokens = output[:, batch["input_ids"].shape[1] :]
        texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        answers += [cut_at_stop(text, stop) for text in texts]
    return answers


@torch.no_grad()
def loglikelihood(
    model: GPT4RoIForCausalLM,
    processor: GPT4RoIProcessor,
    rows: Sequence[Mapping[str, Any]],
    continuations: Sequence[str],
    images: Sequence[Image.Image | None] | None = None,
    batch_size: int = 8,
) -> list[float]:
    """Sum of log-probabilities of each continuation after its row's prompt (``"### Assistant: "``).

    The continuation is tokenised as its own segment, exactly as an answer is during training.
    """
    if len(continuations) != len(rows):
        raise ValueError(f"loglikelihood: {len(rows)} rows but {len(continuations)} continuations")
    model.eval()
    images = list(images) if images is not None else [None] * len(rows)
    scores: list[float] = []
    for part in _chunks(len(rows), batch_size):
        batch = _to_model(processor(rows[part], images[part], continuations=continuations[part]), model)
        labels = batch.pop("labels")
        logits = model(**batch).logits.float()
        targets = labels[:, 1:]
        log_probs = torch.log_softmax(logits[:, :-1], dim=-1)
        picked = log_probs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        scores += (picked * (targets != IGNORE_INDEX)).sum(dim=1).tolist()
    return scores
