"""Row-level inference for the evaluators' protocol adapter and the chat page: generation and scoring."""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from PIL import Image
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from ..conversation import STOP_MARKER
from ..processing import IGNORE_INDEX, EncodedRow, GPT4RoIProcessor
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


def _generation_kwargs(tokenizer: Any, max_new_tokens: int, temperature: float,
                       stop: Sequence[str]) -> dict[str, Any]:
    """``generate`` settings shared by whole and streamed answers, so both produce the same tokens."""
    sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
    return {"max_new_tokens": max_new_tokens, "stop_strings": list(stop), "tokenizer": tokenizer,
            "pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id, **sampling}


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
        output = model.generate(**batch, **_generation_kwargs(tokenizer, max_new_tokens, temperature, stop))
        new_tokens = output[:, batch["input_ids"].shape[1] :]
        texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        answers += [cut_at_stop(text, stop) for text in texts]
    return answers


class _TokenQueue(BaseStreamer):
    """Receives ``generate``'s new tokens (the prompt, put first, is dropped) on a queue; ``None`` ends it."""

    def __init__(self) -> None:
        self.queue: queue.Queue[list[int] | None] = queue.Queue()
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if self._prompt_seen:
            self.queue.put(value.reshape(-1).tolist())
        self._prompt_seen = True

    def end(self) -> None:
        self.queue.put(None)


class _Cancelled(StoppingCriteria):
    """Stops generation once ``event`` is set (the reader went away)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


INCOMPLETE = "\ufffd"  # what decoding shows for a character whose bytes have not all been generated yet


def _showable(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """What of the answer decoded so far can be shown, and whether a stop string has ended it.

    Held back: a tail that may be the start of a stop string, trailing whitespace and an incomplete character,
    so every piece shown is a prefix of the final :func:`cut_at_stop` answer.
    """
    if any(stop in text for stop in stops):
        return cut_at_stop(text, stops), True
    held = max((k for stop in stops for k in range(1, len(stop)) if text.endswith(stop[:k])), default=0)
    return text[:len(text) - held].rstrip(INCOMPLETE).strip(), False


def stream_for_row(
    model: GPT4RoIForCausalLM,
    processor: GPT4RoIProcessor,
    row: Mapping[str, Any],
    max_new_tokens: int = 64,
    image: Image.Image | None = None,
    temperature: float = 0.0,
    stop: Sequence[str] = (STOP_MARKER,),
) -> Iterator[str]:
    """The answer to ``row`` token by token as ``generate`` writes it (run in a thread with a streamer); the
    pieces join to :func:`generate_for_rows`' answer. Closing the iterator early stops generation."""
    model.eval()
    tokenizer = processor.tokenizer
    batch = _to_model(processor([row], [image], generation=True), model)
    tokens, cancel, failures = _TokenQueue(), threading.Event(), []

    def work() -> None:
        try:
            with torch.no_grad():
                model.generate(**batch, **_generation_kwargs(tokenizer, max_new_tokens, temperature, stop),
                               streamer=tokens, stopping_criteria=StoppingCriteriaList([_Cancelled(cancel)]))
        except BaseException as exc:  # handed to the reader, which raises it
            failures.append(exc)
            tokens.end()

    thread = threading.Thread(target=work, name="gpt4roi-generate", daemon=True)
    thread.start()
    ids: list[int] = []
    shown = ""
    try:
        while (piece := tokens.queue.get()) is not None:
            ids += piece
            ready, stopped = _showable(tokenizer.decode(ids, skip_special_tokens=True), stop)
            if len(ready) > len(shown) and ready.startswith(shown):
                yield ready[len(shown):]
                shown = ready
            if stopped:
                break
    finally:
        cancel.set()
        thread.join()
    if failures:
        raise failures[0]
    final = cut_at_stop(tokenizer.decode(ids, skip_special_tokens=True), stop)
    if len(final) > len(shown) and final.startswith(shown):
        yield final[len(shown):]


@torch.no_grad()
def loglikelihood(
    model: GPT4RoIForCausalLM,
    processor: GPT4RoIProcessor,
    rows: Sequence[Mapping[str, Any]],
    continuations: Sequence[str],
    images: Sequence[Image.Image | None] | None = None,
    batch_size: int = 8,
    reuse: bool = True,
) -> list[float]:
    """Sum of log-probabilities of each continuation after its row's prompt (``"### Assistant: "``).

    The continuation is tokenised as its own segment, exactly as an answer is during training.
    ``reuse`` (the default): requests are grouped by prompt (same tokens, image and boxes); each group's picture
    and regions are computed once (:meth:`GPT4RoIForCausalLM.visual_features`) and its prompt is run once, its
    key/value cache then serving every continuation (VCR's four options). ``reuse=False`` runs every request
    through the whole model on its own; the scores agree to float rounding (tested).
    """
    if len(continuations) != len(rows):
        raise ValueError(f"loglikelihood: {len(rows)} rows but {len(continuations)} continuations")
    model.eval()
    images = list(images) if images is not None else [None] * len(rows)
    if reuse:
        encoded = [processor.encode(row, image, generation=True, continuation=text)
                   for row, image, text in zip(rows, images, continuations, strict=True)]
        return _shared_prefix_scores(model, encoded, batch_size, processor.tokenizer.pad_token_id)
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


def split_prompt(item: EncodedRow) -> tuple[list[int], list[int]]:
    """An encoded scoring row's prompt tokens and continuation tokens (the supervised tail)."""
    start = next((i for i, label in enumerate(item.labels) if label != IGNORE_INDEX), len(item.labels))
    return item.input_ids[:start], item.input_ids[start:]


def prompt_groups(encoded: Sequence[EncodedRow]) -> list[list[int]]:
    """Indices of the requests that share one prompt: the same prompt tokens, pixels and boxes, in first-seen order."""
    groups: dict[tuple, list[int]] = {}
    for index, item in enumerate(encoded):
        prompt, _ = split_prompt(item)
        pixels = hashlib.sha256(item.pixel_values.contiguous().numpy().tobytes()).hexdigest()
        key = (tuple(prompt), pixels, tuple(item.boxes.flatten().tolist()))
        groups.setdefault(key, []).append(index)
    return list(groups.values())


def _shared_prefix_scores(model: GPT4RoIForCausalLM, encoded: Sequence[EncodedRow], batch_size: int,
                          pad_token_id: int) -> list[float]:
    """Scores by prompt group: the prompts of up to ``batch_size`` groups spliced in one call (the model's
    ``splice``: GPT4RoI computes each distinct picture and box once), then per group one prompt pass with a cache
    and one pass over all its continuations (right-padded) on that cache."""
    scores = [0.0] * len(encoded)
    groups = prompt_groups(encoded)
    device, dtype = model.device, model.dtype
    for part in _chunks(len(groups), batch_size):
        heads = [encoded[group[0]] for group in groups[part]]
        prompts = [split_prompt(item)[0] for item in heads]
        ids = torch.full((len(heads), max(map(len, prompts))), pad_token_id, dtype=torch.long, device=device)
        for row, prompt in enumerate(prompts):
            ids[row, : len(prompt)] = torch.tensor(prompt, device=device)
        pixels = torch.stack([item.pixel_values for item in heads]).to(device=device, dtype=dtype)
        spliced = model.splice(ids, model.get_input_embeddings()(ids), pixels, [item.boxes.to(device) for item in heads])
        for row, group in enumerate(groups[part]):
            tails = [split_prompt(encoded[index])[1] for index in group]
            values = _continuation_scores(model, spliced[row: row + 1, : len(prompts[row])], tails)
            for index, value in zip(group, values, strict=True):
                scores[index] = value
    return scores


def _continuation_scores(model: GPT4RoIForCausalLM, prompt_embeds: torch.Tensor, tails: list[list[int]]) -> list[float]:
    """Log-probability of each token list after one prompt, from the prompt's key/value cache."""
    llm = model.language_model
    out = llm(inputs_embeds=prompt_embeds, use_cache=True, logits_to_keep=1)
    first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
    longest = max(len(tail) for tail in tails)
    if longest <= 1:
        return [float(first[tail[0]]) if tail else 0.0 for tail in tails]
    count, length = len(tails), prompt_embeds.shape[1]
    device = prompt_embeds.device
    ids = torch.zeros((count, longest), dtype=torch.long, device=device)
    mask = torch.zeros((count, longest), dtype=torch.long, device=device)
    for row, tail in enumerate(tails):
        ids[row, : len(tail)] = torch.tensor(tail, device=device)
        mask[row, : len(tail)] = 1
    cache = out.cache
    cache.batch_repeat_interleave(count)
    logits = llm(input_ids=ids, attention_mask=torch.cat([mask.new_ones((count, length)), mask], dim=1),
                 position_ids=torch.arange(length, length + longest, device=device)[None].expand(count, -1),
                 cache=cache, use_cache=True).logits.float()
    later = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1) * mask[:, 1:]
    return [float(first[tail[0]] + later[row].sum()) if tail else 0.0 for row, tail in enumerate(tails)]
