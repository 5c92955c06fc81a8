"""GPT4RoI's region feature extractor: multi-level CLIP maps -> fused pyramid -> RoIAlign -> one vector per box.

Structure from the paper (section 3.2) and its released code, re-implemented here:

1. ``L`` CLIP hidden states (patch tokens, CLS dropped) become ``g x g`` maps, each resized (bilinear,
   corners aligned) to its pyramid size — the shallowest layer to the finest map.
2. Two coordinate channels (x, y in [-1, 1]) are appended and a per-level 1x1 conv maps to ``D`` channels.
3. ``R`` fusion rounds: every level keeps its first ``D - 2*(D//4)`` channels and takes ``D//4`` channels
   from the next-coarser and ``D//4`` from the next-finer level (resized to its size; at the ends the level
   itself stands in for the missing neighbour); one 3x3 conv + GroupNorm + ReLU per round, shared by levels.
4. RoIAlign on every level, a 3x3 conv per level, the sum over levels, ReLU, flatten, linear to the region
   width; a box MLP of the normalised ``xyxy`` box is added; a final linear maps to the LLM width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .configuration_gpt4roi import GPT4RoIConfig
from .roi_align import roi_align


def coordinate_channels(batch: int, size: int, like: torch.Tensor) -> torch.Tensor:
    """``(batch, 2, size, size)``: x then y, each spanning [-1, 1] across the map."""
    axis = torch.linspace(-1.0, 1.0, size, device=like.device, dtype=like.dtype)
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([x, y]).expand(batch, -1, -1, -1)


def resize(feature: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize with aligned corners (a no-op when already at ``size``)."""
    if feature.shape[-1] == size and feature.shape[-2] == size:
        return feature
    return F.interpolate(feature, size=(size, size), mode="bilinear", align_corners=True)


class LevelFusion(nn.Module):
    """Coordinate-aware input convs and the channel-exchange fusion rounds across pyramid levels."""

    def __init__(self, in_channels: int, embed_dim: int, num_levels: int, rounds: int, norm_groups: int):
        super().__init__()
        self.quarter = embed_dim // 4
        self.kept = embed_dim - 2 * self.quarter
        self.num_levels = num_levels
        self.input_convs = nn.ModuleList(nn.Conv2d(in_channels + 2, embed_dim, 1) for _ in range(num_levels))
        self.rounds = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(embed_dim, embed_dim, 3, padding=1, bias=False),
                nn.GroupNorm(norm_groups, embed_dim),
                nn.ReLU(),
            )
            for _ in range(rounds)
        )

    def exchange(self, levels: list[torch.Tensor]) -> list[torch.Tensor]:
        """Each level: its kept channels, a quarter from the coarser and a quarter from the finer level."""
        mixed = []
        last = self.num_levels - 1
        for index, own in enumerate(levels):
            size = own.shape[-1]
            coarser = levels[min(index + 1, last)][:, self.kept + self.quarter :]
            finer = levels[max(index - 1, 0)][:, self.kept : self.kept + self.quarter]
            mixed.append(torch.cat([own[:, : self.kept], resize(coarser, size), resize(finer, size)], dim=1))
        return mixed

    def forward(self, levels: list[torch.Tensor]) -> list[torch.Tensor]:
        levels = [
            conv(torch.cat([feature, coordinate_channels(feature.shape[0], feature.shape[-1], feature)], dim=1))
            for conv, feature in zip(self.input_convs, levels, strict=True)
        ]
        for block in self.rounds:
            levels = [block(feature) for feature in self.exchange(levels)]
        return levels


class RegionFeatureModule(nn.Module):
    """Multi-level CLIP features and boxes -> one LLM-width embedding per box (GPT4RoI's RoI branch)."""

    def __init__(self, config: GPT4RoIConfig):
        super().__init__()
        vision_width = config.vision_config.hidden_size
        levels = len(config.region_feature_layers)
        dim, out = config.region_embed_dim, config.roi_output_size
        self.pyramid_sizes = list(config.region_pyramid_sizes)
        self.patch_grid = config.patch_grid
        self.roi_output_size = out
        self.roi_sampling_ratio = config.roi_sampling_ratio
        self.roi_aligned = config.roi_aligned
        self.fusion = LevelFusion(vision_width, dim, levels, config.region_fusion_rounds, config.region_norm_groups)
        self.level_convs = nn.ModuleList(nn.Conv2d(dim, dim, 3, padding=1) for _ in range(levels))
        self.flatten_proj = nn.Linear(dim * out * out, config.region_hidden_size)
        box = config.box_hidden_size
        self.box_mlp = nn.Sequential(
            nn.Linear(4, box),
            nn.ReLU(),
            nn.LayerNorm(box),
            nn.Linear(box, config.region_hidden_size),
            nn.ReLU(),
            nn.LayerNorm(config.region_hidden_size),
        )
        self.output_proj = nn.Linear(config.region_hidden_size, config.text_config.hidden_size)

    def pyramid(self, level_tokens: list[torch.Tensor]) -> list[torch.Tensor]:
        """Patch tokens ``(B, g*g, C)`` per layer -> fused maps ``(B, D, s, s)`` at the pyramid sizes."""
        maps = []
        for tokens, size in zip(level_tokens, self.pyramid_sizes, strict=True):
            batch, count, channels = tokens.shape
            if count != self.patch_grid**2:
                raise ValueError(f"region module: expected {self.patch_grid ** 2} patch tokens, got {count}")
            grid = tokens.transpose(1, 2).reshape(batch, channels, self.patch_grid, self.patch_grid)
            maps.append(resize(grid, size))
        return self.fusion(maps)

    def forward(self, level_tokens: list[torch.Tensor], boxes: list[torch.Tensor]) -> torch.Tensor:
        """Region embeddings ``(sum of boxes, LLM width)``, image by image in the order of ``boxes``.

        ``boxes[i]`` holds image ``i``'s boxes as ``(n_i, 4)`` normalised ``xyxy`` in [0, 1]; ``n_i`` may be 0.
        """
        if len(boxes) != level_tokens[0].shape[0]:
            raise ValueError(f"region module: {len(boxes)} box lists for {level_tokens[0].shape[0]} images")
        levels = self.pyramid(level_tokens)
        dtype = levels[0].dtype
        flat_boxes = torch.cat([b.reshape(-1, 4) for b in boxes]).to(dtype)
        image_index = torch.cat(
            [torch.full((len(b),), i, dtype=dtype, device=flat_boxes.device) for i, b in enumerate(boxes)]
        )
        if flat_boxes.shape[0] == 0:
            return flat_boxes.new_zeros((0, self.output_proj.out_features))
        fused = 0
        for conv, level in zip(self.level_convs, levels, strict=True):
            size = level.shape[-1]
            # Boxes are normalised, so the level's side length is its scale from box to map coordinates.
            rois = torch.cat([image_index[:, None], flat_boxes], dim=1)
            pooled = roi_align(
                level.float(), rois.float(), self.roi_output_size, float(size), self.roi_sampling_ratio, self.roi_aligned
            )
            fused = fused + conv(pooled.to(dtype))
        region = self.flatten_proj(F.relu(fused).flatten(1)) + self.box_mlp(flat_boxes)
        return self.output_proj(region)
