"""Feature reuse in multiple-choice scoring: VCR Q->AR with and without it, side by side in one run.

A VCR question is 8 ``loglikelihood`` requests (4 answers after the Q->A prompt, 4 rationales after the QA->R
prompt), all about one picture and its boxes; ``gpt4roi eval`` sends them together (``vcr_q_ar`` interleaves each
question's parts; ``batch_size: 8``). Two ways to score them:

* **without**: every request runs the whole model (``loglikelihood(..., reuse=False)`` with
  ``model.share_visual_features = False``): 8 vision-tower passes, 8 region pyramids, 8 full sequences;
* **with** (the default): the picture and each (picture, box) once, each prompt once with its key/value cache
  serving its 4 options.

On the tiny model (``conf/architecture/tiny.yaml``, random weights, CPU) it measures requests per second, the
work the two paths execute (pictures, boxes and LLM tokens, counted with forward hooks) and their FLOPs
(``FlopCounterMode``), and checks that the scores agree. At 7B it multiplies that counted work by the cost of
each unit measured on the ``meta`` device (the vision tower + projector per picture, the region pyramid per
picture and the RoI branch per box, the LLM per prompt and per continuation batch on a prompt cache), with the
7B prompt length = the tiny prompt's text tokens + 256 image tokens.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from PIL import Image, ImageDraw
from torch.utils.flop_counter import FlopCounterMode
from transformers import DynamicCache, LlamaConfig

from benchmarks._measure import machine, write_result
from builders.readers.vcr_text import region_list
from gpt4roi.modeling import GPT4RoIConfig, GPT4RoIForCausalLM, build_model, loglikelihood
from gpt4roi.modeling.inference import split_prompt

NAME = "feature_reuse"
ROOT = Path(__file__).resolve().parent.parent
TASKS = ROOT / "conf" / "eval" / "task"
WORDS = ("the man in the red shirt is waiting for his friend to come back because he looks at the door and "
         "she is holding a cup of coffee while they talk about the dog near the window").split()


def sentence(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high))).capitalize() + "."


def picture(rng: random.Random) -> tuple[Image.Image, list[list[float]]]:
    """A 320x240 picture of 3-6 coloured boxes, and the boxes (the VCR objects)."""
    image = Image.new("RGB", (320, 240), tuple(rng.randint(150, 230) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    boxes = []
    for _ in range(rng.randint(3, 6)):
        x, y = rng.uniform(0, 240), rng.uniform(0, 170)
        box = [x, y, x + rng.uniform(30, 80), y + rng.uniform(30, 70)]
        draw.rectangle(box, fill=tuple(rng.randint(0, 255) for _ in range(3)))
        boxes.append(box)
    return image, boxes


def questions(count: int, seed: int = 0) -> list[tuple[list[dict], list[str], list[Image.Image]]]:
    """``count`` VCR questions as the ``vcr_q_ar`` task asks them: (rows, continuations, images), 8 requests each,
    with the tasks' own log-likelihood prompts."""
    qa_prompt = yaml.safe_load((TASKS / "vcr_qa.yaml").read_text())["loglikelihood_prompt"]
    qar_prompt = yaml.safe_load((TASKS / "vcr_qar.yaml").read_text())["loglikelihood_prompt"]
    rng = random.Random(seed)
    out = []
    for index in range(count):
        image, boxes = picture(rng)
        regions = [{"bbox": box, "segmentation": "", "label": "", "source_id": ""} for box in boxes]
        question, answer = sentence(rng, 6, 12).rstrip(".") + "?", sentence(rng, 6, 14)
        answers = [answer] + [sentence(rng, 6, 14) for _ in range(3)]
        rationales = [sentence(rng, 10, 20) for _ in range(4)]
        rows = []
        for kind, text in (("qa", qa_prompt.format(regions=region_list(len(boxes)), question=question)),
                           ("qar", qar_prompt.format(regions=region_list(len(boxes)), question=question, answer=answer))):
            row = {"id": f"vcr:{index}:{kind}", "width": 320, "height": 240, "regions": regions,
                   "conversations": [{"from": "human", "value": f"<image>\n{text}"}, {"from": "gpt", "value": ""}]}
            rows += [row] * 4
        out.append((rows, answers + rationales, [image] * 8))
    return out


class WorkCounter:
    """Pictures through the vision tower, boxes through the region module, LLM tokens (forward hooks)."""

    def __init__(self, model: GPT4RoIForCausalLM):
        self.units = {"pictures": 0, "boxes": 0, "llm_tokens": 0, "llm_calls": 0}
        self.handles = [model.vision_tower.register_forward_pre_hook(self._tower),
                        model.region_module.register_forward_pre_hook(self._region),
                        model.language_model.register_forward_pre_hook(self._llm, with_kwargs=True)]

    def _tower(self, module, args):
        self.units["pictures"] += args[0].shape[0]

    def _region(self, module, args):
        self.units["boxes"] += sum(len(b) for b in args[1])

    def _llm(self, module, args, kwargs):
        tokens = kwargs["input_ids"] if kwargs.get("input_ids") is not None else kwargs["inputs_embeds"]
        self.units["llm_tokens"] += tokens.shape[0] * tokens.shape[1]
        self.units["llm_calls"] += 1

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def score_all(model, processor, items, reuse: bool) -> list[float]:
    model.share_visual_features = reuse
    scores = []
    for rows, texts, images in items:
        scores += loglikelihood(model, processor, rows, texts, images=images, batch_size=8, reuse=reuse)
    model.share_visual_features = True
    return scores


def tiny_flops(model, processor, item, reuse: bool) -> dict[str, float]:
    """FLOPs of one question on the tiny model, split into vision + region (tower, projector, region module) and LLM."""
    with FlopCounterMode(display=False) as counter:
        score_all(model, processor, [item], reuse)
    # Components are named under the model when it runs whole (without) and by class when called on their own (with).
    components = {"vision_region": ("vision_tower", "projector", "region_module", "CLIPVisionModel", "Linear",
                                    "RegionFeatureModule"), "llm": ("language_model", "LlamaForCausalLM")}
    parts: dict[str, float] = {}
    for name, ops in counter.get_flop_counts().items():
        component = name.removeprefix("GPT4RoIForCausalLM.")
        for part, names in components.items():
            if component in names:
                parts[part] = parts.get(part, 0) + sum(ops.values())
    return {"vision_region_mflop": round(parts.get("vision_region", 0) / 1e6, 2),
            "llm_mflop": round(parts.get("llm", 0) / 1e6, 2)}


def measure_tiny(count: int, repeats: int) -> dict[str, Any]:
    model, processor = build_model(yaml.safe_load((ROOT / "conf" / "architecture" / "tiny.yaml").read_text()))
    model.eval()
    items = questions(count)
    score_all(model, processor, items[:1], True), score_all(model, processor, items[:1], False)  # warm up
    seconds: dict[str, list[float]] = {"with": [], "without": []}
    scores: dict[str, list[float]] = {}
    for _ in range(repeats):  # interleaved, so that both see the same machine load
        for mode in ("without", "with"):
            started = time.perf_counter()
            scores[mode] = score_all(model, processor, items, mode == "with")
            seconds[mode].append(time.perf_counter() - started)
    work = {}
    for mode in ("without", "with"):
        counter = WorkCounter(model)
        score_all(model, processor, items[:1], mode == "with")
        counter.close()
        work[mode] = counter.units
    requests = 8 * count
    rate = {mode: requests / statistics.median(values) for mode, values in seconds.items()}
    first = items[0]
    encoded = [processor.encode(row, image, generation=True, continuation=text)
               for row, text, image in zip(*first[:2], first[2], strict=True)]
    return {
        "questions": count, "requests": requests, "repeats": repeats, "threads": torch.get_num_threads(),
        "seconds": {mode: [round(s, 3) for s in values] for mode, values in seconds.items()},
        "requests_per_second": {mode: round(value, 2) for mode, value in rate.items()},
        "speedup": round(rate["with"] / rate["without"], 2),
        "max_abs_score_difference": max(abs(a - b) for a, b in zip(scores["with"], scores["without"], strict=True)),
        "work_per_question": work,
        "flops_per_question": {mode: tiny_flops(model, processor, first, mode == "with") for mode in ("without", "with")},
        "prompt_text_tokens": [len(split_prompt(item)[0]) - model.config.num_image_tokens for item in encoded[::4]],
        "continuation_tokens": [len(split_prompt(item)[1]) for item in encoded],
        "boxes_per_question": len(first[0][0]["regions"]),
    }


def flops_of(function) -> float:
    with FlopCounterMode(display=False) as counter:
        function()
    return counter.get_total_flops()


def seven_b_flops(tiny: dict[str, Any]) -> dict[str, Any]:
    """FLOPs per VCR question at 7B (meta device) for the tiny run's first question's shapes and counted work."""
    config = GPT4RoIConfig(text_config=LlamaConfig(vocab_size=32006), image_start_token_id=32004,
                           image_patch_token_id=32001, image_end_token_id=32005, roi_token_id=32002)
    with torch.device("meta"):
        model = GPT4RoIForCausalLM(config).eval()
    meta = {"device": "meta"}
    boxes = tiny["boxes_per_question"]
    pixels = torch.empty(1, 3, 224, 224, **meta)
    _, levels = model.image_features(pixels)
    picture = flops_of(lambda: model.image_features(pixels))
    pyramid = flops_of(lambda: model.region_module.pyramid(levels))
    with_boxes = flops_of(lambda: model.region_module(levels, [torch.empty(boxes, 4, **meta)]))
    per_box = (with_boxes - pyramid) / boxes
    prompts = [text + config.num_image_tokens for text in tiny["prompt_text_tokens"]]
    tails = tiny["continuation_tokens"]
    llm = model.language_model
    hidden = config.text_config.hidden_size

    def full_sequences() -> None:
        for prompt, group in zip(prompts, (tails[:4], tails[4:]), strict=True):
            for tail in group:
                llm(inputs_embeds=torch.empty(1, prompt + tail, hidden, **meta))

    def cached_prompts() -> None:
        for prompt, group in zip(prompts, (tails[:4], tails[4:]), strict=True):
            cache = DynamicCache(config=config.text_config)
            llm(inputs_embeds=torch.empty(1, prompt, hidden, **meta), cache=cache, use_cache=True, logits_to_keep=1)
            cache.batch_repeat_interleave(len(group))
            longest = max(group)
            llm(input_ids=torch.zeros(len(group), longest, dtype=torch.long, **meta),
                position_ids=torch.arange(prompt, prompt + longest, **meta)[None].expand(len(group), -1),
                cache=cache, use_cache=True)

    vision = {mode: tiny["work_per_question"][mode]["pictures"] * (picture + pyramid)
              + tiny["work_per_question"][mode]["boxes"] * per_box for mode in ("without", "with")}
    language = {"without": flops_of(full_sequences), "with": flops_of(cached_prompts)}
    tflop = lambda value: round(value / 1e12, 2)  # noqa: E731
    return {
        "unit_gflop": {"picture (tower + projector)": round(picture / 1e9, 1), "region pyramid": round(pyramid / 1e9, 1),
                       "roi branch per box": round(per_box / 1e9, 2)},
        "prompt_tokens": prompts, "boxes": boxes,
        "vision_region_tflop": {mode: tflop(value) for mode, value in vision.items()},
        "llm_tflop": {mode: tflop(value) for mode, value in language.items()},
        "vision_region_ratio": round(vision["without"] / vision["with"], 2),
        "llm_ratio": round(language["without"] / language["with"], 2),
        "total_ratio": round((vision["without"] + language["without"]) / (vision["with"] + language["with"]), 2),
        "saved_tflop_per_question": tflop(vision["without"] + language["without"] - vision["with"] - language["with"]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks feature_reuse")
    parser.add_argument("--questions", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv or [])
    tiny = measure_tiny(args.questions, args.repeats)
    result = {"tiny": tiny, "gpt4roi_7b": seven_b_flops(tiny), "machine": machine()}
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"VCR Q->AR scoring, {tiny['questions']} questions x 8 requests")
    for column in ("", "without reuse", "with reuse", "ratio"):
        table.add_column(column)
    seven = result["gpt4roi_7b"]
    rate = tiny["requests_per_second"]
    table.add_row("tiny: requests / s (CPU)", str(rate["without"]), str(rate["with"]), f"{tiny['speedup']}x")
    work = tiny["work_per_question"]
    for unit in ("pictures", "boxes", "llm_tokens"):
        table.add_row(f"tiny: {unit} per question", str(work["without"][unit]), str(work["with"][unit]),
                      f"{work['without'][unit] / max(work['with'][unit], 1):.2f}x")
    flops = tiny["flops_per_question"]
    for key, label in (("vision_region_mflop", "tiny: vision + region MFLOP / question"), ("llm_mflop", "tiny: LLM MFLOP / question")):
        table.add_row(label, str(flops["without"][key]), str(flops["with"][key]),
                      f"{flops['without'][key] / max(flops['with'][key], 1e-9):.2f}x")
    table.add_row("7B: vision + region TFLOP / question", str(seven["vision_region_tflop"]["without"]),
                  str(seven["vision_region_tflop"]["with"]), f"{seven['vision_region_ratio']}x")
    table.add_row("7B: LLM TFLOP / question", str(seven["llm_tflop"]["without"]), str(seven["llm_tflop"]["with"]),
                  f"{seven['llm_ratio']}x")
    console = Console()
    console.print(table)
    console.print(f"7B: {seven['saved_tflop_per_question']} TFLOP saved per question ({seven['total_ratio']}x in all); "
                  f"largest score difference {tiny['max_abs_score_difference']:.2e}")
    print(f"wrote {write_result(NAME, result)}")
    return 0
