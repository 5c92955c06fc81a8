"""The image-level baseline: GPT4RoI's backbone without the region module, fed by a renderer.

Fast tests check the wiring (shared initial weights, image spans per renderer, save/load, the evaluators'
adapter, training configs); the slow test has every baseline memorise 8 region captions, as the model issue's
overfit test does for GPT4RoI.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch
import yaml
from test_model_overfit import caption_rows, overfit

from baselines.adapters import PretrainedImageLevelModel
from baselines.image_level import build_image_model, image_level_bundle, load_image_model, save_image_model
from evaluators.protocol import Request, request_row
from gpt4roi.configs import compose
from gpt4roi.evaluation import PretrainedRegionModel
from gpt4roi.modeling import build_model, generate_for_rows
from gpt4roi.modeling.factory import save_pretrained

CONF = Path(__file__).resolve().parent.parent / "conf" / "architecture"
TINY = yaml.safe_load((CONF / "tiny.yaml").read_text())
RENDERERS = ("image_words", "image_coords", "image_overlay", "image_crop", "image_crop_full", "blind")


@functools.cache
def baseline(renderer: str, **options):
    """A freshly initialised tiny baseline, built once per renderer for the fast tests (they do not train it)."""
    return build_image_model({**TINY, "renderer": {"name": renderer, **options}})


def test_the_baseline_starts_from_gpt4roi_s_weights_without_the_region_module():
    gpt4roi, _ = build_model(TINY)
    model, _ = baseline("image_words")
    shared = dict(model.named_parameters())
    assert not any(name.startswith("region_module") for name in shared)
    for name, parameter in gpt4roi.named_parameters():
        if not name.startswith("region_module"):
            assert torch.equal(shared.pop(name), parameter), name
    assert not shared  # nothing the GPT4RoI model lacks
    with pytest.raises(ValueError, match="no region_module to train"):
        model.set_trainable(["region_module"])


@pytest.mark.parametrize(("renderer", "images"), [("image_words", 1), ("image_crop_full", 2), ("blind", 0)])
def test_each_rendered_image_gets_its_own_span_and_no_roi(renderer, images):
    model, processor = baseline(renderer)
    rows = caption_rows()[:2]
    batch = processor(rows)
    assert batch["pixel_values"].shape == (2, images, 3, 64, 64)
    patches = (batch["input_ids"] == model.config.image_patch_token_id).sum(dim=1)
    assert patches.tolist() == [images * model.config.num_image_tokens] * 2
    assert not bool((batch["input_ids"] == model.config.roi_token_id).any())
    assert all(len(boxes) == 0 for boxes in batch["boxes"])
    text = processor.tokenizer.decode(batch["input_ids"][0], skip_special_tokens=True)
    assert "Describe object 1 briefly." in text and "<region" not in text
    assert torch.isfinite(model(**batch).loss)


def test_the_image_span_carries_the_rendered_image():
    """The overlay's box must reach the vision tower: its pixels differ from the plain image's."""
    rows = caption_rows()[:1]
    _, words = baseline("image_words")
    _, overlay = baseline("image_overlay")
    plain, boxed = words(rows)["pixel_values"], overlay(rows)["pixel_values"]
    assert plain.shape == boxed.shape and not torch.allclose(plain, boxed)


def test_save_load_keeps_the_renderer_and_the_answers(tmp_path):
    model, processor = baseline("image_coords", coords="int1000")
    rows = caption_rows()[:2]
    before = generate_for_rows(model, processor, rows, max_new_tokens=5)
    save_image_model(model, processor, tmp_path / "saved")
    loaded, loaded_processor = load_image_model(tmp_path / "saved")
    assert loaded_processor.renderer == processor.renderer
    assert generate_for_rows(loaded, loaded_processor, rows, max_new_tokens=5) == before
    with pytest.raises(FileNotFoundError, match="not a saved image-level baseline"):
        load_image_model(tmp_path)


def test_a_model_with_regions_spliced_in_refuses_them():
    model, processor = baseline("image_words")
    batch = processor(caption_rows()[:1])
    batch["boxes"] = [torch.tensor([[0.1, 0.1, 0.5, 0.5]])]
    with pytest.raises(ValueError, match="regions must be rendered"):
        model(**batch)


def test_the_adapter_answers_requests_for_both_families(tmp_path):
    rows = caption_rows()[:2]
    gpt4roi, gpt4roi_processor = build_model(TINY)
    save_pretrained(gpt4roi, gpt4roi_processor, tmp_path / "gpt4roi")
    model, processor = baseline("image_crop")
    save_image_model(model, processor, tmp_path / "crop")
    prompt = "<image>\nDescribe <region1> briefly."
    requests = [Request(row["id"], request_row(row, prompt), prompt, continuation="a red circle") for row in rows]
    adapters = {"gpt4roi": PretrainedRegionModel, "crop": PretrainedImageLevelModel}
    # The untrained models' answer and log-likelihood of "a red circle" (weights fixed by the config's init_seed);
    # the prompt names <region1>, the same box in both rows, so both rows get the same.
    untrained = {"gpt4roi": ("reereereeree", -41.1207), "crop": ("cluedudu", -40.1132)}
    for name, adapter_class in adapters.items():
        adapter = adapter_class(str(tmp_path / name), image_root=str(tmp_path), prompt_format="plain")
        answer, score = untrained[name]
        assert adapter.generate(requests, max_new_tokens=4, stop=["###"]) == [answer, answer]
        assert adapter.loglikelihood(requests) == pytest.approx([score, score], abs=1e-3)
    fingerprints = {adapter_class(str(tmp_path / name)).fingerprint for name, adapter_class in adapters.items()}
    assert len(fingerprints) == 2
    # GPT4RoI is asked in its own format by default ("The <image> provides an overview of the picture.\n"), the
    # baselines in the suite's plain one; the format is part of the fingerprint and changes the answer
    own = PretrainedRegionModel(str(tmp_path / "gpt4roi"), image_root=str(tmp_path))
    assert own.prompt_format == "gpt4roi" and PretrainedImageLevelModel(str(tmp_path / "crop")).prompt_format == "plain"
    assert own.fingerprint != PretrainedRegionModel(str(tmp_path / "gpt4roi"), prompt_format="plain").fingerprint
    assert own.loglikelihood(requests)[0] != pytest.approx(untrained["gpt4roi"][1], abs=1e-3)
    with pytest.raises(ValueError, match="does not hold an image-level baseline"):
        PretrainedImageLevelModel(str(tmp_path / "gpt4roi"))
    with pytest.raises(ValueError, match="does not hold a GPT4RoI model"):
        PretrainedRegionModel(str(tmp_path / "crop"))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match="model_type 'llama' is not 'gpt4roi'"):
        PretrainedRegionModel(str(tmp_path / "other"))


@pytest.mark.parametrize(("model_name", "renderer"), [
    ("tiny_image_words", "image_words"), ("tiny_image_coords", "image_coords"), ("tiny_image_overlay", "image_overlay"),
    ("tiny_image_crop", "image_crop"), ("tiny_image_crop_full", "image_crop_full"), ("tiny_blind", "blind")])
def test_every_baseline_composes_into_stage_1_and_stage_2_runs(model_name, renderer):
    stage2 = compose("train", ["experiment=tiny_image_stage2", f"architecture={model_name}"])
    assert stage2.architecture.renderer.name == renderer and stage2.model_factory == "baselines.image_level:image_level_bundle"
    assert stage2.run_name == f"{model_name}_stage2" and stage2.init_from == f"outputs/train/{model_name}_stage1"
    assert list(stage2.trainer.trainable) == ["projector", "llm"]
    stage1 = compose("train", ["experiment=tiny_image_stage1", f"architecture={model_name}"])
    assert list(stage1.trainer.trainable) == ["projector"] and stage1.run_name == f"{model_name}_stage1"
    gpt4roi = compose("train", ["experiment=tiny_stage2"])
    assert stage2.corpus == gpt4roi.corpus and stage2.trainer.optimizer == gpt4roi.trainer.optimizer  # same rows, same schedule


def test_the_training_bundle_checks_checkpoints_against_the_renderer_too():
    bundle = image_level_bundle(compose("train", ["experiment=tiny_image_stage1", "architecture=tiny_blind"]).architecture,
                                 256)
    assert bundle.identity["renderer"]["name"] == "blind" and "image_root" not in bundle.identity
    assert bundle.encode.__self__.max_length == 256


@pytest.mark.slow
@pytest.mark.parametrize("renderer", RENDERERS)
@pytest.mark.usefixtures("one_torch_thread")
def test_every_baseline_overfits_eight_region_captions(renderer):
    """As the GPT4RoI overfit test: loss below 0.05, then the exact captions.

    The two rows of an image differ only in the region asked about, so a baseline must see which one is meant
    (words name it "object 1" / "object 2"). Rows of different images share their text, which only the image
    tells apart; ``blind`` has none, so its rows number their shape in the question (a text-only model can
    memorise question -> answer, not more).
    """
    rows = caption_rows()
    if renderer == "blind":
        for number, row in enumerate(rows):
            turn = row["conversations"][0]
            turn["value"] = turn["value"].replace(turn["value"].split(". ")[-1], f"Describe shape {number} briefly.")
    torch.manual_seed(0)
    model, processor = build_image_model({**TINY, "renderer": {"name": renderer}})
    model.set_trainable(["vision", "projector", "llm"])
    batch = processor(rows)
    # Trained on to 0.005 at lr 1e-3: at a batch mean of 0.05 the text-only region cue ("object 1" vs
    # "object 2", or the coordinates) can still lose to the other region's caption on one row, and lr 2e-3
    # diverged when pushed further (and left blind stalled at 0.14). Measured: every renderer, blind
    # included, memorises the 8 rows in about 150 steps.
    losses = overfit(model, batch)
    assert losses[-1] < 0.05, f"{renderer}: loss after {len(losses)} steps {losses[-1]:.3f} (start {losses[0]:.3f})"
    assert generate_for_rows(model, processor, rows, max_new_tokens=12) == [
        row["conversations"][1]["value"] for row in rows]
