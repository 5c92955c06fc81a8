"""Tiny random-weight Hugging Face VLMs (LLaVA, Qwen2-VL) written as ordinary ``save_pretrained`` folders, offline.

They exist to exercise :mod:`baselines.hf_vlm` (and the leaderboard around it) on real transformers
architectures without a download: the configs are the families' own at toy size, the tokenizer is a
byte-level BPE trained here with the ``tokenizers`` library on the suite's templates (as
:func:`gpt4roi.tokenizer.train_tiny_tokenizer` does) plus each family's special tokens, the image processor is
the family's own class with tiny sizes, and the chat template is the family's own format. The folders load
with ``AutoModelForImageTextToText`` / ``AutoProcessor`` like a Hub checkpoint.

One exception, of this environment only: transformers' ``Qwen2VLProcessor`` also requires a video processor,
which needs torchvision (not installable beside the pinned torch). :class:`ImageOnlyQwen2VLProcessor` is
Qwen2-VL's processor without the video half; a tiny Qwen2-VL folder names it in ``hf_vlm``'s
``processor_class``. A real Qwen2-VL checkpoint loads with ``AutoProcessor`` where torchvision is installed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLProcessor,
)
from transformers.processing_utils import ProcessorMixin

from gpt4roi.tokenizer import default_corpus

HIDDEN, LAYERS, HEADS = 32, 2, 2  # text and vision width, depth and heads of every tiny family
VOCAB = 640
# Weights drawn wider than transformers' 0.02 default: at 0.02 a toy model's attention is nearly uniform, so its
# answers would not depend on token positions or the image, and padding or rendering mistakes could not show.
INIT_RANGE = 0.5

# LLaVA-1.5's conversation format ("USER: <image>\n... ASSISTANT:"), as llava-hf's checkpoints template it.
LLAVA_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'][0]['text'] }} "
    "{% elif message['role'] == 'user' %}USER: "
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}<image>\n{% endif %}{% endfor %}"
    "{% for item in message['content'] %}{% if item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %} "
    "{% else %}ASSISTANT: "
    "{% for item in message['content'] %}{% if item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}"
    "</s>{% endif %}{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
# Qwen2-VL's ChatML format with its vision span, as Qwen/Qwen2-VL-*-Instruct template it.
QWEN2_VL_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
QWEN2_VL_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                     "<|image_pad|>", "<|video_pad|>")


def train_bpe(specials: tuple[str, ...], vocab_size: int = VOCAB) -> Tokenizer:
    """A byte-level BPE with ``specials`` first, learnt from the suite's templates and word lists."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=1, special_tokens=list(specials),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator(list(default_corpus()), trainer)
    return backend


class ImageOnlyQwen2VLProcessor(Qwen2VLProcessor):
    """Qwen2-VL's processor (image-token expansion, ``mm_token_type_ids``) without its video processor."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        self.image_token, self.video_token = "<|image_pad|>", "<|video_pad|>"
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)


def tiny_llava() -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    """LLaVA-1.5 at toy size: CLIP vision (28 px, 14 px patches: 4 image tokens), Llama text, MLP projector."""
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=train_bpe(("<s>", "</s>", "<unk>", "<pad>", "<image>")), bos_token="<s>", eos_token="</s>",
        unk_token="<unk>", pad_token="<pad>", extra_special_tokens={"image_token": "<image>"})
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=14,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1,
                               chat_template=LLAVA_TEMPLATE)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_hidden_layers=LAYERS,
                                       num_attention_heads=HEADS, image_size=28, patch_size=14, projection_dim=HIDDEN,
                                       initializer_range=INIT_RANGE),
        text_config=LlamaConfig(vocab_size=len(tokenizer), hidden_size=HIDDEN, intermediate_size=2 * HIDDEN,
                                num_hidden_layers=LAYERS, num_attention_heads=HEADS, num_key_value_heads=HEADS,
                                max_position_embeddings=2048, pad_token_id=tokenizer.pad_token_id,
                                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                initializer_range=INIT_RANGE),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"), image_seq_length=4, initializer_range=INIT_RANGE)
    return LlavaForConditionalGeneration(config), processor


def tiny_qwen2_vl() -> tuple[Qwen2VLForConditionalGeneration, ImageOnlyQwen2VLProcessor]:
    """Qwen2-VL at toy size: its ViT with 2x2 patch merging and multimodal RoPE (images of 56²..112² pixels)."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tokenizer = PreTrainedTokenizerFast(tokenizer_object=train_bpe(QWEN2_VL_SPECIALS), eos_token="<|im_end|>",
                                        pad_token="<|endoftext|>", extra_special_tokens=list(QWEN2_VL_SPECIALS[1:]))
    processor = ImageOnlyQwen2VLProcessor(Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=112 * 112),
                                          tokenizer, chat_template=QWEN2_VL_TEMPLATE)
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in QWEN2_VL_SPECIALS}
    half_head = HIDDEN // HEADS // 2
    config = Qwen2VLConfig(
        vision_config={"depth": LAYERS, "embed_dim": HIDDEN, "hidden_size": HIDDEN, "num_heads": HEADS, "mlp_ratio": 2,
                       "initializer_range": INIT_RANGE},
        text_config={"vocab_size": len(tokenizer), "hidden_size": HIDDEN, "intermediate_size": 2 * HIDDEN,
                     "num_hidden_layers": LAYERS, "num_attention_heads": HEADS, "num_key_value_heads": HEADS,
                     "max_position_embeddings": 4096, "eos_token_id": ids["<|im_end|>"],
                     "pad_token_id": ids["<|endoftext|>"], "bos_token_id": None, "initializer_range": INIT_RANGE,
                     "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0,
                                         "mrope_section": [half_head - 2 * (half_head // 3), half_head // 3,
                                                           half_head // 3]}},
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        initializer_range=INIT_RANGE)
    return Qwen2VLForConditionalGeneration(config), processor


FAMILIES: dict[str, Callable[[], tuple[Any, ProcessorMixin]]] = {"llava": tiny_llava, "qwen2_vl": tiny_qwen2_vl}


def write_tiny_vlm(family: str, folder: str | Path, seed: int = 0) -> Path:
    """Save a random-weight tiny ``family`` model and its processor in ``folder`` (weights seeded by ``seed``)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown tiny VLM family {family!r}; choose from {sorted(FAMILIES)}")
    torch.manual_seed(seed)
    model, processor = FAMILIES[family]()
    folder = Path(folder)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
