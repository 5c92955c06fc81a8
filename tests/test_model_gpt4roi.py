"""GPT4RoIForCausalLM: the splice, generation with a cache, save/load, Auto classes, freezing, loading parts."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import OmegaConf
from PIL import Image, ImageDraw
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    CLIPConfig,
    CLIPModel,
    CLIPVisionModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from gpt4roi.modeling import (
    GPT4RoIForCausalLM,
    build_model,
    generate_for_rows,
    load_pretrained,
    loglikelihood,
    save_pretrained,
)
from gpt4roi.processing import IGNORE_INDEX

TINY = Path(__file__).resolve().parent.parent / "conf" / "architecture" / "tiny.yaml"
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_cfg(**changes) -> dict:
    cfg = yaml.safe_load(TINY.read_text())
    cfg.update(changes)
    return cfg


@pytest.fixture(scope="module")
def tiny():
    model, processor = build_model(tiny_cfg())
    return model.eval(), processor


def scene(colour: str) -> Image.Image:
    image = Image.new("RGB", (160, 120), "lightgray")
    draw = ImageDraw.Draw(image)
    draw.ellipse([10, 10, 70, 70], fill=colour)
    draw.rectangle([90, 40, 150, 110], fill="blue")
    return image


def row(row_id: str, conversations: list[str], boxes: list[list[float]]) -> dict:
    return {
        "id": row_id,
        "image": scene("red"),
        "width": 160,
        "height": 120,
        "regions": [{"bbox": b, "segmentation": "", "label": "", "source_id": ""} for b in boxes],
        "conversations": [{"from": "human" if i % 2 == 0 else "gpt", "value": v} for i, v in enumerate(conversations)],
    }


ROWS = [
    row("t:0", ["<image>\nWhat is <region1>?", "a red circle"], [[10, 10, 70, 70]]),
    row("t:1", ["<image>\nDescribe the picture.", "two shapes"], []),
    row("t:2", ["<image>\n<region1>, <region2> and <region3>: which is blue?", "region2"], [[10, 10, 70, 70], [90, 40, 150, 110], [0, 0, 160, 120]]),
]


def test_tiny_config_is_a_few_million_parameters(tiny):
    model, _ = tiny
    total = sum(p.numel() for p in model.parameters())
    assert 1_000_000 < total < 10_000_000


def test_forward_loss_on_rows_with_zero_one_and_three_regions(tiny):
    model, processor = tiny
    batch = processor(ROWS)
    output = model(**batch)
    assert torch.isfinite(output.loss)
    assert output.logits.shape[:2] == batch["input_ids"].shape
    # The loss is Llama's shifted cross-entropy over exactly the supervised tokens.
    logits, labels = output.logits[:, :-1], batch["labels"][:, 1:]
    manual = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(output.loss, manual)
    output.loss.backward()
    grads = {name: module.weight.grad for name, module in [("projector", model.projector), ("flatten", model.region_module.flatten_proj)]}
    assert all(g is not None and g.abs().sum() > 0 for g in grads.values())
    model.zero_grad(set_to_none=True)


def test_region_features_depend_on_the_box(tiny):
    model, processor = tiny
    batch = processor([ROWS[0]])
    moved = copy.deepcopy(batch)
    moved["boxes"] = [torch.tensor([[0.55, 0.3, 0.95, 0.9]])]
    with torch.no_grad():
        a, b = model(**batch).logits, model(**moved).logits
    roi_at = int((batch["input_ids"][0] == model.config.roi_token_id).nonzero()[0])
    assert torch.equal(a[0, :roi_at], b[0, :roi_at])  # causal: nothing before the <roi> changes
    assert not torch.allclose(a[0, roi_at:], b[0, roi_at:])


def test_roi_box_mismatch_in_the_model_is_a_clear_error(tiny):
    model, processor = tiny
    batch = processor(ROWS)
    batch["boxes"] = [batch["boxes"][0], batch["boxes"][0], batch["boxes"][2]]
    with pytest.raises(ValueError, match=r"batch sample 1 has 0 <roi> tokens but 1 boxes"):
        model(**batch)


def test_generation_with_cache_equals_generation_without(tiny):
    model, processor = tiny
    batch = processor(ROWS, generation=True)
    kwargs = dict(max_new_tokens=6, do_sample=False, pad_token_id=processor.tokenizer.pad_token_id)
    with torch.no_grad():
        cached = model.generate(**batch, **kwargs)
        uncached = model.generate(**batch, use_cache=False, **kwargs)
    assert torch.equal(cached, uncached)
    # Batched (left-padded) equals one row at a time.
    alone = [generate_for_rows(model, processor, [r], max_new_tokens=6)[0] for r in ROWS]
    assert generate_for_rows(model, processor, ROWS, max_new_tokens=6) == alone


def test_save_pretrained_from_pretrained_generate_identical(tmp_path, tiny):
    model, processor = tiny
    save_pretrained(model, processor, tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "tokenizer.json").is_file()
    loaded, loaded_processor = load_pretrained(tmp_path)
    before = generate_for_rows(model, processor, ROWS, max_new_tokens=8)
    after = generate_for_rows(loaded, loaded_processor, ROWS, max_new_tokens=8)
    assert before == after
    for (name, p), (_, q) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(p, q), name
    auto = AutoModelForCausalLM.from_pretrained(str(tmp_path))
    assert isinstance(auto, GPT4RoIForCausalLM) and AutoConfig.from_pretrained(str(tmp_path)).model_type == "gpt4roi"
    via_cfg, _ = build_model(tiny_cfg(pretrained=str(tmp_path)))
    assert generate_for_rows(via_cfg, loaded_processor, ROWS[:1], max_new_tokens=8) == before[:1]


def test_loglikelihood_matches_the_loss_of_the_continuation(tiny):
    model, processor = tiny
    rows, answers = [ROWS[0], ROWS[2]], ["a red circle", "region2"]
    scores = loglikelihood(model, processor, rows, answers)
    for r, answer, score in zip(rows, answers, scores, strict=True):
        batch = processor([r], continuations=[answer])
        count = int((batch["labels"] != IGNORE_INDEX).sum())
        assert processor.tokenizer.decode(batch["labels"][0][batch["labels"][0] != IGNORE_INDEX]) == answer
        with torch.no_grad():
            loss = model(**batch).loss
        assert score == pytest.approx(-float(loss) * count, rel=1e-4)
    with pytest.raises(ValueError, match="2 rows but 1 continuations"):
        loglikelihood(model, processor, rows, answers[:1])


def test_freezing_groups(tiny):
    model, _ = tiny
    counts = model.set_trainable(["region_module", "projector"])
    assert counts["vision"] == counts["llm"] == 0
    assert counts["region_module"] == sum(p.numel() for p in model.region_module.parameters())
    assert not any(p.requires_grad for p in model.language_model.parameters())
    with pytest.raises(ValueError, match="unknown freezing group"):
        model.set_trainable(["decoder"])
    model.set_trainable(["vision", "projector", "region_module", "llm"])


def plain_text_tokenizer() -> PreTrainedTokenizerFast:
    """A BPE with only <s>, </s> and <unk> (no padding or multimodal tokens), like a Llama tokenizer."""
    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(["What is in the picture? a red circle and a blue square"], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def write_pretrained_parts(folder: Path) -> tuple[Path, Path]:
    """Small CLIP and Llama checkpoints (with a tokenizer) standing in for real downloaded weights."""
    vision_dir, llm_dir = folder / "clip", folder / "llm"
    # A full CLIP checkpoint (text and vision towers), as openai/clip-vit-large-patch14 is published.
    vision_cfg = {"image_size": 28, "patch_size": 14, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3, "num_attention_heads": 2}
    text_cfg = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
    CLIPModel(CLIPConfig(vision_config=vision_cfg, text_config=text_cfg)).save_pretrained(vision_dir)
    tokenizer = plain_text_tokenizer()
    llm = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2))
    llm.save_pretrained(llm_dir)
    tokenizer.save_pretrained(llm_dir)
    return vision_dir, llm_dir


def test_build_from_local_clip_and_llm_folders(tmp_path):
    vision_dir, llm_dir = write_pretrained_parts(tmp_path)
    region = {"region_feature_layers": [1, 2], "region_pyramid_sizes": [4, 2], "region_embed_dim": 16, "region_norm_groups": 4,
              "roi_output_size": 2, "region_hidden_size": 16, "box_hidden_size": 8}
    cfg = {"name": "parts", "vision_path": str(vision_dir), "llm_path": str(llm_dir), "dtype": "float32", "region": region}
    model, processor = build_model(cfg)
    clip = CLIPVisionModel.from_pretrained(str(vision_dir))
    assert torch.equal(model.vision_tower.embeddings.patch_embedding.weight, clip.embeddings.patch_embedding.weight)
    assert model.get_input_embeddings().weight.shape[0] == len(processor.tokenizer) == len(plain_text_tokenizer()) + 4
    assert processor.tokenizer.pad_token == "<unk>"
    assert processor.num_image_tokens == 4 and model.config.num_image_tokens == 4
    assert not any(p.is_meta for p in model.parameters())
    loss = model(**processor([ROWS[2]])).loss
    assert torch.isfinite(loss)


@pytest.mark.parametrize("key", ["vision_path", "llm_path"])
def test_missing_weight_folders_are_clear_errors(tmp_path, key):
    vision_dir, llm_dir = write_pretrained_parts(tmp_path)
    cfg = OmegaConf.load(TINY.parent / "gpt4roi_7b.yaml")  # as Hydra hands it over: ??? still unset
    cfg.update({"vision_path": str(vision_dir), "llm_path": str(llm_dir)})
    cfg[key] = "???"
    with pytest.raises(FileNotFoundError, match=rf"set {key}=<local folder"):
        build_model(cfg)
    cfg[key] = str(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=rf"{key}=.*nowhere is not a local folder"):
        build_model(cfg)


def test_bfloat16_model_takes_the_processors_float32_batch():
    model, processor = build_model(tiny_cfg(dtype="bfloat16"))
    assert model.dtype == torch.bfloat16
    batch = processor(ROWS)
    assert batch["pixel_values"].dtype == torch.float32
    assert torch.isfinite(model(**batch).loss)
