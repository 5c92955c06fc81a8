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
from gpt4roi.pretrain.data import pretrain_data

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
        # the parts between image and LLM start from the architecture's own initial weights
        assert torch.equal(weights["projector.weight"], random_init.state_dict()["projector.weight"])
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
    for scene in scenes:
        if scene["key"] in held_out:
            assert not crop_images & set(scene["files"]), scene["key"]
    assert data.held_out_scenes > len(held_out)  # plus the COCO train pictures RefCOCO/+/g evaluate on
    assert data.training_scenes + data.held_out_scenes == len(scenes)
    kept = [scene for scene in scenes if scene["files"][0] in crop_images]
    assert len(data.crops) == sum(len(scene["objects"]) for scene in kept)
    assert data.crops[0].description.startswith("the ") and data.texts[0].startswith("A chat between")
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
