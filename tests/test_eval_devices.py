"""Where an evaluated model's weights go: ``device: auto`` (or a bare ``cuda``) picks this torchrun rank's GPU
(``LOCAL_RANK``) for every family (GPT4RoI, image-level baselines, Hub VLMs); ``device_map`` and ``dtype`` reach
``from_pretrained`` for GPT4RoI models as they do for the Hub VLMs."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from transformers import PreTrainedModel

from baselines.adapters import PretrainedImageLevelModel
from baselines.hf_vlm import HFVisionLanguageModel
from baselines.hf_vlm_tiny import write_tiny_vlm
from baselines.image_level import build_image_model, save_image_model
from evaluators.protocol import Request, request_row
from gpt4roi.configs import compose
from gpt4roi.devices import pick_device
from gpt4roi.evaluation import PretrainedRegionModel
from gpt4roi.modeling import GPT4RoIForCausalLM, build_model, save_pretrained

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def gpus(monkeypatch, count: int) -> None:
    """Pretend the machine has ``count`` GPUs (0: none)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


@pytest.mark.parametrize(("count", "local_rank", "expected"), [
    (0, "3", "cpu"),        # no GPU: the CPU, whatever the rank
    (2, None, "cuda:0"),    # one process (no torchrun): the first GPU
    (2, "1", "cuda:1"),     # rank 1 of a torchrun on a 2-GPU machine
    (2, "3", "cuda:1"),     # more ranks than GPUs: round-robin
])
def test_auto_is_this_ranks_gpu(monkeypatch, count, local_rank, expected):
    gpus(monkeypatch, count)
    if local_rank is None:
        monkeypatch.delenv("LOCAL_RANK", raising=False)
    else:
        monkeypatch.setenv("LOCAL_RANK", local_rank)
    assert pick_device("auto") == torch.device(expected)


def test_a_named_device_is_taken_as_named_and_bare_cuda_is_the_ranks(monkeypatch):
    gpus(monkeypatch, 4)
    monkeypatch.setenv("LOCAL_RANK", "2")
    assert pick_device("cuda:0") == torch.device("cuda", 0)
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("cuda") == torch.device("cuda", 2)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_gpt4roi")
    save_pretrained(*build_model(compose("train", ["architecture=tiny"]).architecture), folder)
    return folder


def image_level_folder(folder):
    save_image_model(*build_image_model(compose("train", ["architecture=tiny_image_coords"]).architecture), folder)
    return folder


def requests() -> list[Request]:
    row = {"id": "q:0", "image": Image.new("RGB", (32, 32), "red"), "image_id": "", "source": "vcr",
           "split": "validation", "task": "vcr_qa", "width": 32, "height": 32, "choices": [], "label": -1,
           "references": [], "meta": "{}",
           "regions": [{"bbox": [2, 2, 20, 20], "segmentation": "", "label": "", "source_id": ""}]}
    prompt = "<image>\nWhat is <region1>?"
    return [Request(f"r{k}", request_row(row, prompt), prompt, continuation=text) for k, text in enumerate(["a", "b"])]


@pytest.mark.parametrize("family", ["gpt4roi", "image_level", "hf_vlm"])
@pytest.mark.parametrize("device", ["auto", "cuda"])
def test_every_family_under_torchrun_goes_to_its_ranks_gpu(family, device, tiny_folder, tmp_path, monkeypatch):
    """Rank 1 of a 2-GPU machine: the model is moved to ``cuda:1`` (not every rank to ``cuda:0``)."""
    adapter = {
        "gpt4roi": lambda: PretrainedRegionModel(str(tiny_folder), device=device),
        "image_level": lambda: PretrainedImageLevelModel(str(image_level_folder(tmp_path)), device=device),
        "hf_vlm": lambda: HFVisionLanguageModel(str(write_tiny_vlm("llava", tmp_path)), device=device),
    }[family]()
    gpus(monkeypatch, 2)
    monkeypatch.setenv("LOCAL_RANK", "1")
    moved = []
    monkeypatch.setattr(PreTrainedModel, "to", lambda self, device: moved.append(device) or self)
    model, _ = adapter.loaded
    assert moved == [torch.device("cuda", 1)] and isinstance(model, PreTrainedModel)


def test_device_map_and_auto_dtype_reach_from_pretrained(tiny_folder, monkeypatch):
    """``device_map`` goes to ``from_pretrained``, which places the weights through ``accelerate`` (here every
    layer on the CPU, the only device), and the model is not moved afterwards; ``dtype: auto`` keeps the saved one.
    The answers are those of the default load on the CPU."""
    plain = PretrainedRegionModel(str(tiny_folder), device="cpu", prompt_format="plain")
    mapped = PretrainedRegionModel(str(tiny_folder), dtype="auto", device_map="auto", prompt_format="plain")
    load, seen = GPT4RoIForCausalLM.from_pretrained, []

    def observed(folder, dtype, device_map):
        seen.append((dtype, device_map))
        return load(folder, dtype=dtype, device_map=device_map)

    monkeypatch.setattr(GPT4RoIForCausalLM, "from_pretrained", observed)
    monkeypatch.setattr(GPT4RoIForCausalLM, "to", lambda self, device: pytest.fail(f"moved to {device}"))
    model = mapped.loaded[0]
    assert seen == [("auto", "auto")] and model.dtype == torch.float32
    monkeypatch.undo()
    assert mapped.loglikelihood(requests()) == plain.loglikelihood(requests())


def test_a_wrong_dtype_is_refused_up_front(tiny_folder):
    with pytest.raises(ValueError, match="dtype='float33'"):
        PretrainedRegionModel(str(tiny_folder), dtype="float33")
