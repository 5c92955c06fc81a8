"""``hf_vlm``: Hugging Face VLMs (tiny random-weight LLaVA and Qwen2-VL, built offline) behind the protocol."""

from __future__ import annotations

import pytest
import torch
from PIL import Image, ImageDraw

from baselines.hf_vlm import HFVisionLanguageModel, cut_at, left_pad
from baselines.hf_vlm_tiny import write_tiny_vlm
from evaluators.protocol import Request

W, H = 100, 80
QWEN_PROCESSOR = "baselines.hf_vlm_tiny:ImageOnlyQwen2VLProcessor"  # no torchvision here (see hf_vlm_tiny)
FAMILIES = {"llava": {}, "qwen2_vl": {"processor_class": QWEN_PROCESSOR}}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf_vlm")
    image = Image.new("RGB", (W, H), (30, 30, 30))
    ImageDraw.Draw(image).ellipse([10, 20, 50, 60], fill=(220, 20, 20))
    image.save(root / "shapes.png")
    return root, {family: write_tiny_vlm(family, root / family) for family in FAMILIES}


def model(folders, family: str, **options) -> HFVisionLanguageModel:
    root, paths = folders
    settings = {"coordinates": "per_mille_xyxy", "batch_size": 4, "device": "cpu", **FAMILIES[family], **options}
    return HFVisionLanguageModel(str(paths[family]), image_root=str(root), **settings)


def request(key: str, question: str, continuation: str = "", box=(10.0, 20.0, 50.0, 60.0)) -> Request:
    row = {"id": f"synthetic:validation:{key}", "source": "synthetic", "task": "region_caption", "split": "validation",
           "image": "shapes.png", "width": W, "height": H,
           "regions": [{"bbox": list(box), "segmentation": "", "label": "", "source_id": "1"}],
           "conversations": [{"from": "human", "value": f"<image>\n{question}"}, {"from": "gpt", "value": ""}]}
    return Request(key=key, row=row, prompt=f"<image>\n{question}", continuation=continuation)


REQUESTS = [request("a", "Describe <region1>.", " a red circle"),
            request("b", "What colour is <region1> in this picture?", " red"),
            request("c", "Name <region1>.", " the circle on the left of the picture", box=(55.0, 5.0, 95.0, 45.0))]


def test_folders_load_as_their_families_and_prompts_use_their_templates(folders):
    llava, qwen = model(folders, "llava"), model(folders, "qwen2_vl", coordinates="normalized_xyxy")
    assert type(llava.loaded[0]).__name__ == "LlavaForConditionalGeneration"
    assert type(qwen.loaded[0]).__name__ == "Qwen2VLForConditionalGeneration"
    text, images = llava.prompt(REQUESTS[0])
    assert text == "USER: <image>\nDescribe region1 [100, 250, 500, 750]. ASSISTANT:" and len(images) == 1
    text, _ = qwen.prompt(REQUESTS[0])
    assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                    "<|vision_start|><|image_pad|><|vision_end|>Describe region1 [0.100, 0.250, 0.500, 0.750]."
                    "<|im_end|>\n<|im_start|>assistant\n")
    pixels = model(folders, "llava", coordinates="pixels_xyxy", system_prompt="Be brief.")
    assert pixels.prompt(REQUESTS[0])[0] == "Be brief. USER: <image>\nDescribe region1 [10, 20, 50, 60]. ASSISTANT:"
    crop_full = model(folders, "llava", renderer={"name": "image_crop_full"}, coordinates=None)
    text, images = crop_full.prompt(REQUESTS[0])
    assert text == "USER: <image>\n<image>\nDescribe the object. ASSISTANT:" and [i.size for i in images] == [(56, 56), (W, H)]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_left_padded_batches_answer_what_single_rows_answer(folders, family):
    vlm = model(folders, family)
    lengths = {vlm.encode(r, r.continuation)[0]["input_ids"].shape[1] for r in REQUESTS}
    assert len(lengths) == 3  # every batch below pads
    batched = vlm.loglikelihood(REQUESTS)
    alone = [vlm.loglikelihood([r])[0] for r in REQUESTS]
    assert batched == pytest.approx(alone, rel=1e-5, abs=1e-4)
    generated = vlm.generate(REQUESTS, max_new_tokens=6)
    assert generated == [vlm.generate([r], max_new_tokens=6)[0] for r in REQUESTS]
    assert len(set(generated)) == 3  # random weights, but the answers depend on the question and the box


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_loglikelihood_is_the_sum_over_the_continuation_tokens(folders, family):
    vlm = model(folders, family)
    net, processor = vlm.loaded
    req = REQUESTS[1]
    text, images = vlm.prompt(req)
    prompt = processor(text=[text], images=images, return_tensors="pt")
    continuation = processor.tokenizer(req.continuation, add_special_tokens=False)["input_ids"]
    ids = torch.cat([prompt["input_ids"], torch.tensor([continuation])], dim=1)
    inputs = {**prompt, "input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if "mm_token_type_ids" in prompt:
        inputs["mm_token_type_ids"] = torch.cat([prompt["mm_token_type_ids"], torch.zeros(1, len(continuation),
                                                                                          dtype=torch.long)], 1)
    with torch.no_grad():
        logits = net(**inputs).logits[0].log_softmax(-1)
    start = prompt["input_ids"].shape[1]
    expected = sum(float(logits[start + i - 1, token]) for i, token in enumerate(continuation))
    assert vlm.loglikelihood([req])[0] == pytest.approx(expected, rel=1e-5)


def test_the_image_and_the_box_reach_the_model(folders):
    overlay = model(folders, "llava", renderer={"name": "image_overlay"}, coordinates=None)
    moved = request("a", "Describe <region1>.", " a red circle", box=(55.0, 5.0, 95.0, 45.0))
    assert overlay.prompt(moved)[0] == overlay.prompt(REQUESTS[0])[0]  # same text: only the drawn box differs
    assert overlay.loglikelihood([moved])[0] != pytest.approx(overlay.loglikelihood([REQUESTS[0]])[0], rel=1e-4)


def test_config_errors_and_fingerprints(folders):
    with pytest.raises(ValueError, match="contradicts coordinates='per_mille_xyxy'"):
        model(folders, "llava", renderer={"name": "image_coords", "coords": "float"})
    with pytest.raises(ValueError, match="coordinates='percent'"):
        model(folders, "llava", coordinates="percent")
    with pytest.raises(ValueError, match="writes xyxy boxes"):
        model(folders, "llava", coordinates="normalized_xywh")
    with pytest.raises(ValueError, match="dtype='float33'"):
        model(folders, "llava", dtype="float33")
    with pytest.raises(FileNotFoundError, match="neither a model folder nor a Hub id"):
        assert HFVisionLanguageModel("/no/such/folder", coordinates=None).folder
    prints = {model(folders, "llava").fingerprint, model(folders, "llava", coordinates="normalized_xyxy").fingerprint,
              model(folders, "qwen2_vl").fingerprint, model(folders, "llava", dtype="bfloat16").fingerprint}
    assert len(prints) == 4 and model(folders, "llava", batch_size=1).fingerprint in prints


def test_left_pad_and_cut_at():
    one = {"input_ids": torch.tensor([[5, 6]]), "attention_mask": torch.tensor([[1, 1]]), "pixel_values": torch.ones(1, 3)}
    two = {"input_ids": torch.tensor([[7, 8, 9]]), "attention_mask": torch.tensor([[1, 1, 1]]),
           "pixel_values": torch.zeros(1, 3)}
    batch = left_pad([one, two], pad_id=0)
    assert batch["input_ids"].tolist() == [[0, 5, 6], [7, 8, 9]]
    assert batch["attention_mask"].tolist() == [[0, 1, 1], [1, 1, 1]]
    assert batch["pixel_values"].shape == (2, 3)
    assert cut_at(" a red circle ### USER: x", ["###", "USER:"]) == "a red circle"
