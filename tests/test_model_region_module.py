"""The region module: full-size parameter count on the meta device, level fusion, per-box features."""

from __future__ import annotations

import pytest
import torch

from gpt4roi.modeling.configuration_gpt4roi import GPT4RoIConfig
from gpt4roi.modeling.region_module import LevelFusion, RegionFeatureModule, coordinate_channels

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def expected_parameters(vision: int, dim: int, levels: int, rounds: int, out: int, hidden: int, box: int, llm: int) -> int:
    """The paper's region module, counted from its description (convs with bias unless GroupNorm follows)."""
    input_convs = levels * ((vision + 2) * dim + dim)
    fusion = rounds * (9 * dim * dim + 2 * dim)  # 3x3 conv without bias + GroupNorm affine
    level_convs = levels * (9 * dim * dim + dim)
    flatten = dim * out * out * hidden + hidden
    box_mlp = (4 * box + box) + 2 * box + (box * hidden + hidden) + 2 * hidden
    output = hidden * llm + llm
    return input_convs + fusion + level_convs + flatten + box_mlp + output


def test_full_size_parameter_count_on_meta_device():
    config = GPT4RoIConfig()  # paper defaults: ViT-L/14, 4 levels, D=1024, 14x14 RoIs, 1024 -> 4096
    with torch.device("meta"):
        module = RegionFeatureModule(config)
    total = sum(p.numel() for p in module.parameters())
    assert all(p.is_meta for p in module.parameters())
    assert total == expected_parameters(1024, 1024, 4, 5, 14, 1024, 256, 4096)
    assert total == 299_142_912  # "about 299 M" in the issue; GPT4RoI's released module has the same layers


def test_full_size_forward_shapes_on_meta_device():
    config = GPT4RoIConfig()
    with torch.device("meta"):
        module = RegionFeatureModule(config)
        tokens = [torch.empty(2, 256, 1024) for _ in range(4)]
        boxes = [torch.empty(3, 4), torch.empty(0, 4)]
        levels = module.pyramid(tokens)
        out = module(tokens, boxes)
    assert [tuple(level.shape) for level in levels] == [(2, 1024, s, s) for s in (128, 64, 32, 16)]
    assert out.shape == (3, 4096)


def test_exchange_takes_half_own_and_a_quarter_from_each_neighbour():
    fusion = LevelFusion(in_channels=4, embed_dim=8, num_levels=3, rounds=1, norm_groups=2)
    levels = [torch.full((1, 8, size, size), float(index)) for index, size in enumerate((8, 4, 2))]
    mixed = fusion.exchange(levels)
    for index, level in enumerate(mixed):
        assert level.shape == levels[index].shape
        values = level[0, :, 0, 0].tolist()
        coarser, finer = min(index + 1, 2), max(index - 1, 0)
        assert values == [index] * 4 + [coarser] * 2 + [finer] * 2


def test_coordinate_channels_span_minus_one_to_one():
    coords = coordinate_channels(2, 5, torch.empty(0))
    assert coords.shape == (2, 2, 5, 5)
    assert coords[0, 0, 0].tolist() == [-1.0, -0.5, 0.0, 0.5, 1.0]  # x varies along columns
    assert coords[0, 1, :, 0].tolist() == [-1.0, -0.5, 0.0, 0.5, 1.0]  # y along rows


def small_config() -> GPT4RoIConfig:
    return GPT4RoIConfig(
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
        text_config={"hidden_size": 24, "intermediate_size": 48, "num_hidden_layers": 1, "num_attention_heads": 2, "vocab_size": 50},
        region_feature_layers=[1, 2],
        region_pyramid_sizes=[8, 4],
        region_embed_dim=8,
        region_norm_groups=2,
        roi_output_size=3,
        region_hidden_size=12,
        box_hidden_size=6,
    )


def test_features_are_per_box_and_per_image():
    torch.manual_seed(0)
    module = RegionFeatureModule(small_config()).eval()
    tokens = [torch.randn(2, 16, 16) for _ in range(2)]
    box = torch.tensor([[0.1, 0.2, 0.6, 0.7]])
    together = module(tokens, [box, torch.cat([box, torch.tensor([[0.5, 0.5, 1.0, 1.0]])])])
    alone = module([t[1:] for t in tokens], [torch.cat([box, torch.tensor([[0.5, 0.5, 1.0, 1.0]])])])
    assert together.shape == (3, 24)
    torch.testing.assert_close(together[1:], alone, atol=1e-5, rtol=1e-5)  # image 2's boxes pool from image 2
    assert not torch.allclose(together[0], together[1])  # same box, different image
    assert module(tokens, [torch.zeros(0, 4), torch.zeros(0, 4)]).shape == (0, 24)


def test_bad_inputs_are_named():
    module = RegionFeatureModule(small_config())
    with pytest.raises(ValueError, match="1 box lists for 2 images"):
        module([torch.randn(2, 16, 16)] * 2, [torch.zeros(1, 4)])
    with pytest.raises(ValueError, match="expected 16 patch tokens, got 9"):
        module([torch.randn(1, 9, 16)] * 2, [torch.zeros(1, 4)])
    with pytest.raises(ValueError, match="equal length"):
        GPT4RoIConfig(region_feature_layers=[1, 2], region_pyramid_sizes=[8])
