"""The two pretraining objectives of the toy backbone, as the paper's backbone had them before GPT4RoI.

* :func:`train_language_model` — "the Vicuna": the tiny LLM as a causal language model on the world's
  training conversations (every token supervised);
* :func:`train_vision_tower` — "the CLIP": the tiny vision tower against a small bag-of-tokens text encoder
  with CLIP's symmetric InfoNCE loss on object crops and their descriptions. Crops with the same description
  in one batch are all positives of each other (soft targets), since the world repeats descriptions;
* :func:`train_projector` — "the LLaVA projector": with tower and LLM frozen, only the projector learns to
  caption whole training scenes (LLaVA's alignment stage; GPT4RoI's stage 1 starts from such a projector).

Both run on one CPU thread with a fixed seed and a fixed data order, so a run is reproducible.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from .data import Caption, Crop, load_crop


def cosine_lr(step: int, steps: int, peak: float, warmup: int) -> float:
    """Linear warmup, then cosine decay to a tenth of ``peak``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def batches(count: int, size: int, steps: int, seed: int) -> list[list[int]]:
    """``steps`` batches of indices: seeded shuffles of ``range(count)``, epoch after epoch."""
    rng, order, out = random.Random(seed), [], []
    for _ in range(steps):
        if len(order) < size:
            epoch = list(range(count))
            rng.shuffle(epoch)
            order += epoch
        out.append(order[:size])
        order = order[size:]
    return out


def optimise(parameters: Sequence[nn.Parameter], loss_of: Callable[[list[int]], torch.Tensor],
             plan: list[list[int]], lr: float, log: Callable[[int, float], None]) -> list[float]:
    """AdamW over ``plan`` with a warmed-up cosine rate; returns the loss of every step."""
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=0.01)
    losses = []
    for step, indices in enumerate(plan):
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, len(plan), lr, warmup=max(1, len(plan) // 20))
        loss = loss_of(indices)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        losses.append(loss.item())
        log(step, losses[-1])
    return losses


def train_language_model(llm: nn.Module, tokenizer, texts: list[str], *, steps: int, batch_size: int,
                         max_tokens: int, lr: float, seed: int, log: Callable[[int, float], None]) -> list[float]:
    """Next-token prediction on ``texts`` (each cut to ``max_tokens``, padded on the right)."""
    encoded = [ids[:max_tokens] for ids in tokenizer(texts, add_special_tokens=True)["input_ids"]]
    pad = tokenizer.pad_token_id

    def loss_of(indices: list[int]) -> torch.Tensor:
        rows = [encoded[i] for i in indices]
        width = max(map(len, rows))
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for k, row in enumerate(rows):
            ids[k, : len(row)] = torch.tensor(row)
            mask[k, : len(row)] = 1
        labels = ids.masked_fill(mask == 0, -100)
        return llm(input_ids=ids, attention_mask=mask, labels=labels).loss

    llm.train()
    return optimise(list(llm.parameters()), loss_of, batches(len(encoded), batch_size, steps, seed), lr, log)


class TextTower(nn.Module):
    """CLIP's text side at toy size: mean of token embeddings, then a projection."""

    def __init__(self, vocab_size: int, dim: int):
        super().__init__()
        self.embed = nn.EmbeddingBag(vocab_size, dim, mode="mean")
        self.proj = nn.Linear(dim, dim)

    def forward(self, token_lists: list[list[int]]) -> torch.Tensor:
        flat = torch.tensor([t for tokens in token_lists for t in tokens], dtype=torch.long)
        offsets = torch.tensor([0, *torch.tensor([len(t) for t in token_lists]).cumsum(0)[:-1].tolist()])
        return self.proj(self.embed(flat, offsets))


def train_vision_tower(vision: nn.Module, pixel_values: Callable, tokenizer, world: Path, crops: list[Crop], *,
                       steps: int, batch_size: int, margin: float, lr: float, seed: int,
                       log: Callable[[int, float], None]) -> list[float]:
    """CLIP's contrastive objective between crops (``pixel_values`` of each) and their descriptions."""
    dim = vision.config.hidden_size
    text_tower = TextTower(len(tokenizer), dim)
    image_proj = nn.Linear(dim, dim)
    log_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
    pixels = torch.stack([pixel_values(load_crop(world, crop, margin)) for crop in crops])
    tokens = [tokenizer(crop.description, add_special_tokens=False)["input_ids"] for crop in crops]
    descriptions = [crop.description for crop in crops]

    def loss_of(indices: list[int]) -> torch.Tensor:
        image = nn.functional.normalize(image_proj(vision(pixel_values=pixels[indices]).pooler_output), dim=-1)
        text = nn.functional.normalize(text_tower([tokens[i] for i in indices]), dim=-1)
        logits = log_scale.clamp(max=math.log(100)).exp() * image @ text.T
        same = torch.tensor([[descriptions[i] == descriptions[j] for j in indices] for i in indices],
                            dtype=logits.dtype)
        targets = same / same.sum(dim=1, keepdim=True)
        return 0.5 * (nn.functional.cross_entropy(logits, targets) + nn.functional.cross_entropy(logits.T, targets))

    vision.train()
    parameters = [*vision.parameters(), *text_tower.parameters(), *image_proj.parameters(), log_scale]
    return optimise(parameters, loss_of, batches(len(crops), batch_size, steps, seed), lr, log)


#: The alignment prompt: LLaVA's stage 1 asked for a brief description of the image.
CAPTION_PROMPT = "<image>\nDescribe the image briefly."


def train_projector(model: nn.Module, processor, world: Path, captions: list[Caption], *, steps: int,
                    batch_size: int, lr: float, seed: int, log: Callable[[int, float], None]) -> list[float]:
    """Caption loss through the frozen tower and LLM, the projector alone trained (in the models' template)."""
    from PIL import Image

    def encoded(index: int, caption: Caption):
        row = {"id": f"caption-{index}", "regions": [],
               "conversations": [{"from": "human", "value": CAPTION_PROMPT}, {"from": "gpt", "value": caption.text}]}
        with Image.open(world / caption.image) as image:
            return processor.encode(row, image.convert("RGB"))

    rows = [encoded(index, caption) for index, caption in enumerate(captions)]
    model.requires_grad_(False)
    model.projector.requires_grad_(True)
    model.train()

    def loss_of(indices: list[int]) -> torch.Tensor:
        return model(**processor.collate([rows[i] for i in indices])).loss

    return optimise(list(model.projector.parameters()), loss_of, batches(len(rows), batch_size, steps, seed), lr, log)
