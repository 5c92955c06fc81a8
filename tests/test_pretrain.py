"""``gpt4roi pretrain``: the committed toy backbone, what it was trained on, and that a rerun gives it again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file, save_file

from baselines.image_level import build_image_model
from builders.synthetic import MANIFEST, synthesize
from gpt4roi.configs import compose
from gpt4roi.modeling import build_model
from gpt4roi.modeling.factory import BACKBONE_PARTS
from gpt4roi.pretrain import pretrain, sha256_file
from gpt4roi.pretrain.data import describe, pretrain_data, scene_caption

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS = ROOT / "gpt4roi" / "pretrain" / "weights"
BACKBONE = WEIGHTS / "tiny_backbone.safetensors"
MANIFEST_FILE = WEIGHTS / "tiny_backbone.json"


def architecture(name: str, **overrides) -> dict:
    cfg = OmegaConf.to_container(compose("train", [f"architecture={name}"]).architecture, resolve=True)
    return {**cfg, **overrides}


def test_the_committed_backbone_matches_its_manifest_and_starts_every_tiny_model():
    manifest = json.loads(MANIFEST_FILE.read_text())
    assert manifest["weights"]["sha256"] == sha256_file(BACKBONE)
    assert manifest["command"].startswith("gpt4roi pretrain") and manifest["seed"] == 0
    assert manifest["data"]["held_out_scenes"] > 0 and len(manifest["data"]["fingerprint"]) == 64
    state = load_file(str(BACKBONE))
    assert all(key.startswith(BACKBONE_PARTS) for key in state)
    relative = str(BACKBONE.relative_to(ROOT))  # a relative backbone path is under the project root
    random_init, _ = build_model(architecture("tiny"))
    models = [build_model(architecture("tiny", backbone=relative))[0],
              build_image_model(architecture("tiny_image_coords", backbone=relative))[0]]
    for model in models:
        weights = model.state_dict()
        assert all(torch.equal(weights[key], value.float()) for key, value in state.items())
        # the LLaVA-style projector comes with the backbone; GPT4RoI's region module starts from its initial weights
        assert torch.equal(weights["projector.weight"], state["projector.weight"].float())
    assert sorted({key.split(".")[0] for key in state}) == ["language_model", "projector", "vision_tower"]
    gpt4roi = models[0].state_dict()
    assert all(torch.equal(value, gpt4roi[key]) for key, value in random_init.state_dict().items()
               if key.startswith("region_module."))
    assert not torch.equal(random_init.state_dict()["language_model.lm_head.weight"],
                           state["language_model.lm_head.weight"].float())


def test_a_backbone_of_another_architecture_is_refused(tmp_path):
    state = load_file(str(BACKBONE))
    state.pop("language_model.lm_head.weight")
    save_file(state, str(tmp_path / "partial.safetensors"))
    with pytest.raises(ValueError, match=r"partial.safetensors: not a backbone of this architecture \(missing "
                                         r"\['language_model.lm_head.weight'\]"):
        build_model(architecture("tiny", backbone=str(tmp_path / "partial.safetensors")))
    with pytest.raises(FileNotFoundError, match="run `gpt4roi pretrain` to write it"):
        build_model(architecture("tiny", backbone=str(tmp_path / "absent.safetensors")))



def test_a_scene_caption_names_its_objects_left_to_right():
    def obj(shape, colour, size, texture, x):
        return {"shape": shape, "colour": colour, "size": size, "texture": texture, "box": [x, 0, x + 10, 10]}

    scene = {"objects": [obj("square", "red", "large", "plain", 50), obj("circle", "blue", "small", "striped", 10),
                         obj("star", "green", "medium", "dotted", 30)]}
    assert scene_caption(scene) == "The small striped blue circle, the medium dotted green star and the large red square."
    assert scene_caption({"objects": scene["objects"][:1]}) == "The large red square."

def test_pretraining_data_never_shows_a_held_out_scene(tmp_path):
    world = tmp_path / "world"
    synthesize(world, "tiny", 0)
    data = pretrain_data(world, tmp_path / "built", 0)
    scenes = json.loads((world / MANIFEST).read_text())["scenes"]
    # every scene with an evaluation row of any source (RefCOCO/+/g val/test on COCO train pictures, COCO val,
    # VG test, VCR val, Flickr30K val/test) is held out; its objects never become crops
    held_out = {scene["key"] for scene in scenes if any(
        key in scene["key"] for key in (":val", ":test"))}
    crop_images = {crop.image for crop in data.crops}
    caption_images = {caption.image for caption in data.captions}
    for scene in scenes:
        if scene["key"] in held_out:
            assert not (crop_images | caption_images) & set(scene["files"]), scene["key"]
    assert data.held_out_scenes > len(held_out)  # plus the COCO train pictures RefCOCO/+/g evaluate on
    assert data.training_scenes + data.held_out_scenes == len(scenes)
    kept = [scene for scene in scenes if scene["files"][0] in crop_images]
    assert len(data.crops) == sum(len(scene["objects"]) for scene in kept)
    assert data.crops[0].description.startswith("the ") and data.texts[0].startswith("A chat between")
    # the projector's captions: one per training scene with objects, its objects left to right
    assert caption_images == crop_images and len(data.captions) == len(kept)
    first = next(scene for scene in kept if scene["files"][0] == data.captions[0].image)
    by_x = sorted(first["objects"], key=lambda obj: (obj["box"][0], obj["box"][1]))
    assert data.captions[0].text == scene_caption(first) and data.captions[0].text.endswith(".")
    assert data.captions[0].text.lower().startswith(describe(by_x[0]))
    assert "<roi>" not in "".join(data.texts) and "<image>" not in "".join(data.texts)
    assert pretrain_data(world, tmp_path / "again", 0).fingerprint == data.fingerprint


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_pretraining_again_gives_the_committed_weights(tmp_path):
    """The manifest's own settings, rerun: bitwise on the machine that wrote them, within the stated tolerance
    elsewhere (a few minutes of CPU)."""
    manifest = json.loads(MANIFEST_FILE.read_text())
    cfg = OmegaConf.create({**manifest["config"], "out": str(tmp_path)})
    again = pretrain(cfg)
    assert again["data"]["fingerprint"] == manifest["data"]["fingerprint"]
    committed, rerun = load_file(str(BACKBONE)), load_file(str(tmp_path / BACKBONE.name))
    difference = max((committed[k].float() - rerun[k].float()).abs().max().item() for k in committed)
    print(f"pretraining rerun: max |difference| {difference:.2e}, sha256 equal: "
          f"{again['weights']['sha256'] == manifest['weights']['sha256']}")
    assert difference <= manifest["tolerance"]["max_abs_difference"]
