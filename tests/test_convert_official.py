"""``gpt4roi convert``: a tiny checkpoint with the official GPT4RoI names and shapes converts, loads, and gives
the logits of a plain re-implementation of the official forward (spi_llava.py + layers.py) on the same tensors."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from transformers import CLIPVisionModel, LlamaConfig, LlamaForCausalLM

from gpt4roi.cli import main as cli_main
from gpt4roi.convert import ConversionError, Counts, Sources, convert, name_table
from gpt4roi.convert.checkpoint import apply_delta
from gpt4roi.convert.names import SPI, ignored_names
from gpt4roi.convert.names import VISION as TOWER
from gpt4roi.convert.tiny import (
    BOX_HIDDEN,
    EMBED,
    GROUPS,
    LEVELS,
    LLM,
    REGION_HIDDEN,
    ROI_OUT,
    ROUNDS,
    VISION,
    official_config,
    write_folder,
    write_released,
)
from gpt4roi.modeling import GPT4RoIConfig, GPT4RoIForCausalLM, load_pretrained
from gpt4roi.modeling.roi_align import roi_align

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- a plain re-implementation of the official forward, reading the official names -------------------------
def official_spi(state, feats: list[torch.Tensor], boxes: list[torch.Tensor]) -> torch.Tensor:
    """MLVLROIQueryModule.forward (layers.py), step by step with the official tensors."""
    p = lambda name: state[SPI + name]  # noqa: E731
    grid, patch, size = VISION.image_size // VISION.patch_size, VISION.patch_size, VISION.image_size
    batch, _, channels = feats[0].shape
    feats = [f.reshape(batch, grid, grid, channels).permute(0, 3, 1, 2) for f in feats]
    shapes = [grid * 2**level for level in range(LEVELS)][::-1]
    feats = [F.interpolate(f, size=(s, s), mode="bilinear", align_corners=True) for f, s in zip(feats, shapes, strict=True)]
    with_coords = []
    for f in feats:
        axis = torch.linspace(-1, 1, f.shape[-1])
        y, x = torch.meshgrid(axis, axis, indexing="ij")
        coords = torch.cat([x.expand(batch, 1, -1, -1), y.expand(batch, 1, -1, -1)], 1)
        with_coords.append(torch.cat([f, coords], 1))
    feats = [F.conv2d(f, p(f"mlvl_fuse.input_conv.{i}.weight"), p(f"mlvl_fuse.input_conv.{i}.bias"))
             for i, f in enumerate(with_coords)]
    shuffle = EMBED // 4
    remain = EMBED - 2 * shuffle
    for r in range(ROUNDS):
        fused = []
        for level in range(LEVELS):
            top, down = feats[min(level + 1, LEVELS - 1)], feats[max(level - 1, 0)]
            target = feats[level].shape[-2:]
            from_top = F.interpolate(top[:, remain:][:, shuffle:], size=target, mode="bilinear", align_corners=True)
            from_down = F.interpolate(down[:, remain:][:, :shuffle], size=target, mode="bilinear", align_corners=True)
            fused.append(torch.cat([feats[level][:, :remain], from_top, from_down], 1))
        feats = [F.relu(F.group_norm(F.conv2d(f, p(f"mlvl_fuse.fuse_convs.{r}.conv.weight"), padding=1), GROUPS,
                                     p(f"mlvl_fuse.fuse_convs.{r}.gn.weight"), p(f"mlvl_fuse.fuse_convs.{r}.gn.bias")))
                 for f in fused]
    # MlvlRoIExtractor.forward: boxes in pixels, featmap strides patch/8, patch/4, patch/2, patch
    batch_rois = torch.cat(boxes)
    pos = F.linear(batch_rois, p("roi_align.pos_embedd.0.weight"), p("roi_align.pos_embedd.0.bias")).relu()
    pos = F.layer_norm(pos, (BOX_HIDDEN,), p("roi_align.pos_embedd.2.weight"), p("roi_align.pos_embedd.2.bias"))
    pos = F.linear(pos, p("roi_align.pos_embedd.3.weight"), p("roi_align.pos_embedd.3.bias")).relu()
    pos = F.layer_norm(pos, (REGION_HIDDEN,), p("roi_align.pos_embedd.5.weight"), p("roi_align.pos_embedd.5.bias"))
    rois = torch.cat([torch.cat([torch.full((len(b), 1), float(i)), b * size], 1) for i, b in enumerate(boxes)])
    strides = [patch / 2 ** (LEVELS - 1 - level) for level in range(LEVELS)]
    roi_feats = [roi_align(feats[i], rois, ROI_OUT, 1 / strides[i], 2, True) for i in range(LEVELS)]
    fused = sum(F.conv2d(r, p(f"roi_align.pconvs.{i}.weight"), p(f"roi_align.pconvs.{i}.bias"), padding=1)
                for i, r in enumerate(roi_feats))
    fused = F.linear(F.relu(fused).flatten(1), p("roi_align.flatten_linear.weight"), p("roi_align.flatten_linear.bias"))
    return F.linear(fused + pos, p("roi_align.updims.weight"), p("roi_align.updims.bias"))


def official_logits(state, batch, tokenizer) -> torch.Tensor:
    """SPILlavaLlamaModel.forward: CLIP -> mm_projector at the <im_patch> run, spi features at <bbox>, Llama."""
    tower = CLIPVisionModel(VISION)
    tower.load_state_dict({k[len(TOWER):]: v for k, v in state.items()
                           if k.startswith(TOWER) and not k.endswith("position_ids")})
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=state["model.embed_tokens.weight"].shape[0], **LLM))
    llama.load_state_dict({k: v for k, v in state.items() if (k.startswith("model.") or k == "lm_head.weight")
                           and "vision_tower" not in k and "mm_projector" not in k and "spi_module" not in k
                           and not k.endswith("inv_freq")})
    select = -2
    hidden = tower(batch["pixel_values"], output_hidden_states=True).hidden_states
    image_features = F.linear(hidden[select][:, 1:], state["model.mm_projector.weight"], state["model.mm_projector.bias"])
    mlvl = [h[:, 1:] for h in hidden[select::-3][::-1][-LEVELS:]]
    spi = official_spi(state, mlvl, batch["boxes"])
    start_id, bbox_id = tokenizer.convert_tokens_to_ids(["<im_start>", "<bbox>"])
    embeds = llama.model.embed_tokens(batch["input_ids"])
    rows, used = [], 0
    for i, (ids, row) in enumerate(zip(batch["input_ids"], embeds, strict=True)):
        start = int(torch.where(ids == start_id)[0][0])
        count = image_features.shape[1]
        row = torch.cat([row[: start + 1], image_features[i], row[start + count + 1:]])
        mask = ids == bbox_id
        spi_embeds = torch.zeros_like(row)
        spi_embeds[mask] = spi[used: used + int(mask.sum())]
        used += int(mask.sum())
        rows.append(row * (~mask)[:, None] + spi_embeds)
    return llama(inputs_embeds=torch.stack(rows), attention_mask=batch["attention_mask"]).logits


# --- fixtures ---------------------------------------------------------------------------------------------
def scene() -> Image.Image:
    image = Image.new("RGB", (90, 60), "lightgray")
    draw = ImageDraw.Draw(image)
    draw.ellipse([5, 5, 40, 40], fill="red")
    draw.rectangle([50, 20, 85, 55], fill="blue")
    return image


ROWS = [
    {"id": "t:0", "width": 90, "height": 60,
     "regions": [{"bbox": [5, 5, 40, 40], "segmentation": "", "label": "", "source_id": ""}],
     "conversations": [{"from": "human", "value": "<image>\nWhat is <region1>?"}, {"from": "gpt", "value": "a circle"}]},
    {"id": "t:1", "width": 90, "height": 60,
     "regions": [{"bbox": [5, 5, 40, 40], "segmentation": "", "label": "", "source_id": ""},
                 {"bbox": [50, 20, 85, 55], "segmentation": "", "label": "", "source_id": ""}],
     "conversations": [{"from": "human", "value": "<image>\nIs <region2> left of <region1>?"},
                       {"from": "gpt", "value": "no"}]},
]


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """A delta checkpoint over a base LLaMA (as released: sharded .bin, fp32 here) and its merged weights."""
    written = write_released(tmp_path_factory.mktemp("released"))
    folders = {"delta": written.delta, "base": written.base, "clip": written.clip}
    return folders, written.merged, written.tokenizer


@pytest.fixture(scope="module")
def converted(released, tmp_path_factory):
    folders, expected, tokenizer = released
    out = tmp_path_factory.mktemp("converted") / "gpt4roi"
    convert(Sources(checkpoint=folders["delta"], vision=folders["clip"], base=folders["base"]), out, max_length=512,
            norm_groups=GROUPS)
    return out


# --- tests ------------------------------------------------------------------------------------------------
def test_the_table_covers_our_7b_model_name_for_name():
    counts = Counts(llm_layers=32, vision_layers=24, levels=4, rounds=5)
    table = name_table(counts)
    config = GPT4RoIConfig(text_config=LlamaConfig(vocab_size=32006))
    with torch.device("meta"):
        ours = set(GPT4RoIForCausalLM(config).state_dict())
    assert len(table) == 727 == len(ours)  # Llama 291, projector 2, CLIP ViT-L 391, region module 43
    assert set(table.values()) == ours
    assert len(ignored_names(counts)) == 33  # 32 RoPE inv_freq buffers and CLIP's position_ids


def test_the_delta_is_added_in_the_delta_dtype_with_the_added_token_rows(tmp_path):
    base = {"model.embed_tokens.weight": torch.randn(5, 3), "model.norm.weight": torch.randn(3, dtype=torch.float64)}
    write_folder(tmp_path / "base", base, None)
    delta = {"model.embed_tokens.weight": torch.randn(7, 3).to(torch.bfloat16),
             "model.norm.weight": torch.randn(3).to(torch.float16),
             "model.spi_module.x": torch.ones(2, dtype=torch.float16)}
    want_embed = delta["model.embed_tokens.weight"].clone()
    want_embed[:5] += base["model.embed_tokens.weight"].to(torch.bfloat16)
    want_norm = delta["model.norm.weight"] + base["model.norm.weight"].to(torch.float16)
    merged = apply_delta({k: v.clone() for k, v in delta.items()}, tmp_path / "base")
    assert merged["model.embed_tokens.weight"].dtype == torch.bfloat16
    assert torch.equal(merged["model.embed_tokens.weight"], want_embed)
    assert torch.equal(merged["model.embed_tokens.weight"][5:], delta["model.embed_tokens.weight"][5:])
    assert merged["model.norm.weight"].dtype == torch.float16 and torch.equal(merged["model.norm.weight"], want_norm)
    assert torch.equal(merged["model.spi_module.x"], torch.ones(2, dtype=torch.float16))


def test_a_delta_that_does_not_fit_its_base_lists_every_problem(tmp_path):
    write_folder(tmp_path / "base", {"model.norm.weight": torch.ones(3), "model.extra": torch.ones(1)}, None)
    with pytest.raises(ValueError) as error:
        apply_delta({"model.norm.weight": torch.ones(4), "model.other": torch.ones(1)}, tmp_path / "base")
    message = str(error.value)
    assert "3 problem(s)" in message
    assert "model.norm.weight: delta (4,) vs base (3,)" in message
    assert "base weight model.extra is not in the delta" in message
    assert "delta weight model.other has no base weight" in message


def test_converted_weights_are_base_plus_delta_exactly(converted, released):
    _, expected, _ = released
    model, _ = load_pretrained(converted)
    ours = model.state_dict()
    table = name_table(Counts(LLM["num_hidden_layers"], VISION.num_hidden_layers, LEVELS, ROUNDS))
    assert len(table) == len(ours)
    for official, name in table.items():
        assert torch.equal(ours[name], expected[official]), official


def test_converted_model_gives_the_official_forward_logits(converted, released):
    _, expected, tokenizer = released
    model, processor = load_pretrained(converted)
    batch = processor(ROWS, [scene(), scene()])
    bbox = tokenizer.convert_tokens_to_ids("<bbox>")
    assert [int((ids == bbox).sum()) for ids in batch["input_ids"]] == [1, 2]
    with torch.no_grad():
        ours = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                     pixel_values=batch["pixel_values"], boxes=batch["boxes"]).logits
        reference = official_logits(expected, batch, tokenizer)
    keep = batch["attention_mask"].bool()
    assert ours.shape == reference.shape
    assert torch.allclose(ours[keep], reference[keep], atol=1e-4, rtol=1e-4), (ours - reference).abs().max()
    # The regions matter: other boxes change the logits.
    moved = [b.flip(-1).clamp(0, 1).sort(-1).values for b in batch["boxes"]]
    with torch.no_grad():
        other = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                      pixel_values=batch["pixel_values"], boxes=moved).logits
    assert (other[keep] - ours[keep]).abs().max() > 1e-3


def test_converted_processor_writes_gpt4roi_prompts(converted):
    _, processor = load_pretrained(converted)
    assert processor.roi_token == "<bbox>" and processor.resize == "clip_short_side"
    encoded = processor.encode(ROWS[1], scene(), generation=True)
    text = processor.tokenizer.decode(encoded.input_ids)
    assert "Is region2 <bbox> left of region1 <bbox>?" in text
    assert text.endswith("### Assistant: ")
    assert encoded.regions == [1, 0]
    # GPT4RoI's resize: CLIP's short side to 32 (90x60 -> 48x32, bicubic), normalise, bilinear to 32x32.
    assert tuple(encoded.pixel_values.shape) == (3, 32, 32)
    config = json.loads((converted / "config.json").read_text())
    assert config["region_feature_layers"] == [0, 3, 6, 9] and config["region_pyramid_sizes"] == [32, 16, 8, 4]


def test_a_checkpoint_off_the_table_is_an_error_listing_every_name(released, tmp_path):
    folders, expected, tokenizer = released
    broken = dict(expected)
    del broken[SPI + "roi_align.updims.bias"]
    broken["model.spi_module.roi_align.extra.weight"] = torch.ones(2)
    broken["model.mm_projector.weight"] = torch.ones(3, 3)
    folder = write_folder(tmp_path / "broken", broken, official_config(len(tokenizer)), tokenizer)
    with pytest.raises(ConversionError) as error:
        convert(Sources(checkpoint=folder, vision=folders["clip"]), tmp_path / "out", norm_groups=GROUPS)
    message = str(error.value)
    assert "problem(s)" in message
    assert "unexpected official weight model.spi_module.roi_align.extra.weight" in message
    assert "missing official weight model.spi_module.roi_align.updims.bias (for region_module.output_proj.bias)" in message
    assert "shape mismatch: model.mm_projector.weight (3, 3) -> projector.weight expects (64, 32)" in message
    assert not (tmp_path / "out").exists()


def test_the_command_converts_a_merged_folder(released, tmp_path, capsys):
    folders, expected, tokenizer = released
    merged = write_folder(tmp_path / "merged", {k: v.half() for k, v in expected.items()},
                          official_config(len(tokenizer)), tokenizer)
    out = tmp_path / "out"
    assert cli_main(["convert", f"checkpoint={merged}", f"vision={folders['clip']}", f"out={out}",
                     f"region_norm_groups={GROUPS}"]) == 0
    assert "wrote" in capsys.readouterr().out
    model, _ = load_pretrained(out, dtype=torch.float16)
    assert torch.equal(model.region_module.output_proj.bias, expected[SPI + "roi_align.updims.bias"].half())
    assert json.loads((out / "config.json").read_text())["dtype"] == "float16"
    # A second run into the same folder is refused rather than mixing old shards in.
    assert cli_main(["convert", f"checkpoint={merged}", f"vision={folders['clip']}", f"out={out}",
                     f"region_norm_groups={GROUPS}"]) == 1
    assert "exists and is not empty" in capsys.readouterr().err


def test_the_evaluation_adapter_answers_with_a_converted_model(converted, tmp_path):
    from evaluators.protocol import Request, request_row
    from gpt4roi.evaluation import PretrainedRegionModel

    row = {**ROWS[1], "image": "scene.png", "image_id": "scene", "source": "vcr", "split": "validation",
           "task": "vcr_qa", "choices": [], "label": -1, "references": [], "meta": "{}"}
    scene().save(tmp_path / "scene.png")
    prompt = "<image>\nIs <region2> left of <region1>?"
    requests = [Request(f"r{k}", request_row(row, prompt), prompt, continuation=text)
                for k, text in enumerate(["yes", "no"])]
    adapter = PretrainedRegionModel(str(converted), image_root=str(tmp_path))
    scores = adapter.loglikelihood(requests)
    assert len(scores) == 2 and all(score < 0 for score in scores) and scores[0] != scores[1]
    assert len(adapter.generate(requests[:1], max_new_tokens=3)) == 1


def test_gpt4roi_resize_is_clip_preprocess_then_bilinear(converted):
    """GPT4RoI's datasets: ``CLIPImageProcessor.preprocess(do_center_crop=False)``, then ``F.interpolate`` to 224."""
    from transformers import CLIPImageProcessor

    _, processor = load_pretrained(converted)
    image = Image.effect_noise((90, 60), 60).convert("RGB")
    clip = CLIPImageProcessor(size={"shortest_edge": 32}, do_center_crop=False)
    reference = torch.tensor(clip.preprocess(image, return_tensors="np")["pixel_values"][0])
    assert tuple(reference.shape) == (3, 32, 48)
    reference = F.interpolate(reference[None], size=(32, 32), mode="bilinear", align_corners=False)[0]
    assert torch.equal(processor.pixel_values(image), reference)
