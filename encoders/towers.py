"""Modality towers: an open_clip ViT re-wired for LanguageBind (token masking, temporal attention,
spectrogram position grids) and adapted with LoRA."""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from encoders import constants as C
from encoders.attention import SplitAttention
from encoders.config import TowerConfig
from encoders.masking import gather_tokens, random_keep_indices
from encoders.modalities import modality as modality_spec


class TowerBlock(nn.Module):
    """One residual block of the tower; for video, preceded by LanguageBind's temporal step over frames.

    The temporal step is LanguageBind's `CLIPEncoderLayer` with `add_time_attn`: add the layer's own
    `temporal_embedding` [frames, D] at every token position (it stays in the residual stream), then
    `x + temporal_attn(temporal_ln(x))` across each clip's frames, with the block's own LayerNorm and no
    temporal MLP. At init `temporal_attn` and `temporal_ln` are copies of the spatial `attn` and `ln_1`
    (distinct parameters) and the embedding is drawn from N(0, D^-0.5), as LanguageBind does; the caller's
    RNG (seeded with `init_seed` in `build_towers`) makes that reproducible. RayBind keeps the embedding
    as [frames, D] where LanguageBind stores [1, frames, D]: the same numbers without the leading 1.
    """

    def __init__(self, source: nn.Module, temporal_frames: int = 0) -> None:
        super().__init__()
        if not isinstance(getattr(source, "attn", None), nn.MultiheadAttention):
            raise TypeError(f"expected an open_clip ResidualAttentionBlock, got {type(source).__name__}")
        self.ln_1 = source.ln_1
        self.attn = SplitAttention.from_multihead(source.attn)
        self.ls_1 = source.ls_1
        self.ln_2 = source.ln_2
        self.mlp = source.mlp
        self.ls_2 = source.ls_2
        if temporal_frames:
            width = source.attn.embed_dim
            self.temporal_ln = copy.deepcopy(self.ln_1)
            self.temporal_attn = copy.deepcopy(self.attn)
            embedding = torch.empty(temporal_frames, width, device=source.ln_1.weight.device)
            self.temporal_embedding = nn.Parameter(nn.init.normal_(embedding, std=width ** -0.5))
        else:
            self.temporal_ln = None
            self.temporal_attn = None
            self.temporal_embedding = None

    def forward(self, x: torch.Tensor, num_frames: int = 1) -> torch.Tensor:
        """x [clips * frames, tokens, width] -> the same shape; with temporal attention and `num_frames` > 1 it
        first attends across each clip's frames (a 1-frame row, an image in a video batch, skips that step)."""
        if self.temporal_attn is not None and num_frames > 1:
            x = self._temporal(x, num_frames)
        x = x + self.ls_1(self.attn(self.ln_1(x)))
        return x + self.ls_2(self.mlp(self.ln_2(x)))

    def _temporal(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        tokens, width = x.shape[1:]
        # (clip, frame, token) -> (clip, token, frame): attend across frames at each token position.
        # Shapes come from views (-1), not integer arithmetic, so torch.compile traces one graph.
        h = x.view(-1, frames, tokens, width).transpose(1, 2).reshape(-1, frames, width)
        h = h + self.temporal_embedding[:frames]
        h = h + self.temporal_attn(self.temporal_ln(h))
        return h.view(-1, tokens, frames, width).transpose(1, 2).reshape(x.shape)


def resize_position_embedding(pos: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int]) -> torch.Tensor:
    """Bicubically interpolate patch position embeddings [1 + gh*gw, D] to a new grid (CLS kept)."""
    if tuple(old_grid) == tuple(new_grid):
        return pos.detach().clone()
    cls, patches = pos[:1], pos[1:]
    width = pos.shape[-1]
    grid = patches.reshape(1, old_grid[0], old_grid[1], width).permute(0, 3, 1, 2)
    grid = F.interpolate(grid.float(), size=new_grid, mode="bicubic", align_corners=False)
    patches = grid.permute(0, 2, 3, 1).reshape(new_grid[0] * new_grid[1], width).to(pos.dtype)
    return torch.cat([cls, patches], dim=0).detach()


def tube_patch_embedding(conv: nn.Conv2d) -> nn.Conv3d:
    """LanguageBind V1.5's patch embedding from a 2D one: Conv3d, kernel and stride [1, P, P], weight
    [D, 3, 1, P, P] holding the 2D weights (for tube 1 it computes exactly the 2D convolution per frame)."""
    kernel, stride = tuple(conv.kernel_size), tuple(conv.stride)
    # built on meta, then given storage: no random init, so the RNG stream (temporal embeddings, LoRA) stays V1's
    tube = nn.Conv3d(conv.in_channels, conv.out_channels, kernel_size=(1, *kernel), stride=(1, *stride),
                     bias=conv.bias is not None, device="meta", dtype=conv.weight.dtype)
    tube = tube.to_empty(device=conv.weight.device)
    with torch.no_grad():
        tube.weight.copy_(conv.weight.unsqueeze(2))
        if conv.bias is not None:
            tube.bias.copy_(conv.bias)
    tube.weight.requires_grad = conv.weight.requires_grad
    return tube


class VisionBackbone(nn.Module):
    """The open_clip ViT parts, with a forward that supports masking, frames and any patch grid.

    This is the module peft adapts; its parameter names are what the adapter files reference.
    """

    def __init__(self, visual: nn.Module, input_hw: tuple[int, int], temporal_frames: int = 0,
                 video_variant: str = "v1", num_frames: int = 1) -> None:
        super().__init__()
        if getattr(visual, "attn_pool", None) is not None or getattr(visual, "pool_type", "tok") != "tok":
            raise ValueError("only CLS-token pooled open_clip VisionTransformers are supported")
        patch = visual.patch_size
        self.patch_size = (int(patch[0]), int(patch[1]))
        self.input_hw = (int(input_hw[0]), int(input_hw[1]))
        self.grid = (self.input_hw[0] // self.patch_size[0], self.input_hw[1] // self.patch_size[1])
        if min(self.grid) < 1:
            raise ValueError(f"input {self.input_hw} is smaller than one {self.patch_size} patch")
        self.video_variant = video_variant
        if video_variant == "v1.5":
            # LanguageBind V1.5 (`vl_new`): the patch embedding is a Conv3d of kernel [1, P, P] (tube 1, the 2D
            # weights with a time axis of 1) and each frame has its own class embedding (copies of the one at init).
            self.conv1 = tube_patch_embedding(visual.conv1)
            self.class_embedding = nn.Parameter(visual.class_embedding.detach().repeat(num_frames, 1))
        elif video_variant == "v1":
            self.conv1 = visual.conv1
            self.class_embedding = visual.class_embedding
        else:
            raise ValueError(f"unknown video_variant {video_variant!r}; valid: v1, v1.5")
        self.positional_embedding = nn.Parameter(
            resize_position_embedding(visual.positional_embedding, tuple(visual.grid_size), self.grid))
        self.ln_pre = visual.ln_pre
        self.blocks = nn.ModuleList(TowerBlock(b, temporal_frames) for b in visual.transformer.resblocks)
        self.ln_post = visual.ln_post
        self.proj = visual.proj
        self.grad_checkpointing = False  # recompute each block in backward: activations of one block, not all

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """Activation checkpointing per block: trades one extra forward for O(1 block) activation memory."""
        self.grad_checkpointing = enabled

    def compile_blocks(self, **options) -> None:
        """`torch.compile` every transformer block in place (parameter names stay, so adapters and
        checkpoints load as before). Patch embedding, masking and pooling stay eager: they are cheap, and
        the number of kept tokens depends on the mask ratio, which a compiled graph would specialise on."""
        for block in self.blocks:
            block.compile(**options)

    @property
    def num_patches(self) -> int:
        """Patch tokens per frame (grid height x width), CLS not included."""
        return self.grid[0] * self.grid[1]

    def forward(self, x: torch.Tensor, num_frames: int = 1, mask_ratio: float = 0.0) -> torch.Tensor:
        """x: [clips * frames, 3, H, W] -> projected CLS features [clips, embed_dim] (averaged over frames)."""
        tokens = self._patches(x).flatten(2).transpose(1, 2)            # [N, L, D]
        tokens = tokens + self.positional_embedding[1:].to(tokens.dtype)
        if self.training and mask_ratio > 0:
            per_clip = tokens.unflatten(0, (-1, num_frames))             # [clips, frames, L, D]
            keep = random_keep_indices(per_clip.shape[0], tokens.shape[1], mask_ratio, tokens.device)
            keep = keep[:, None].expand(-1, num_frames, -1).flatten(0, 1)  # same tokens on every frame of a clip
            tokens = gather_tokens(tokens, keep)
        tokens = torch.cat([self._class_tokens(tokens, num_frames), tokens], dim=1)
        tokens = self.ln_pre(tokens)
        recompute = self.grad_checkpointing and self.training and torch.is_grad_enabled()
        for block in self.blocks:
            tokens = checkpoint(block, tokens, num_frames, use_reentrant=False) if recompute else block(tokens, num_frames)
        features = self.ln_post(tokens[:, 0]) @ self.proj
        if num_frames > 1:
            features = features.view(-1, num_frames, features.shape[-1]).mean(dim=1)
        return features

    def _patches(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] frames -> [N, D, gh, gw]; V1.5's Conv3d sees each frame as a 1-frame tube."""
        if isinstance(self.conv1, nn.Conv3d):
            return self.conv1(x.unsqueeze(2)).squeeze(2)
        return self.conv1(x)

    def _class_tokens(self, tokens: torch.Tensor, num_frames: int) -> torch.Tensor:
        """[N, 1, D] class tokens (position 0 embedding added): one for every frame (V1), or frame f's own
        row of the per-frame class embedding (V1.5; a clip of fewer frames uses the first rows)."""
        position = self.positional_embedding[0]
        if self.class_embedding.ndim == 1:
            return (self.class_embedding + position).to(tokens.dtype).expand(tokens.shape[0], 1, -1)
        if num_frames > self.class_embedding.shape[0]:
            raise ValueError(f"{num_frames} frames, but the tower has class embeddings for "
                             f"{self.class_embedding.shape[0]}")
        per_frame = (self.class_embedding[:num_frames] + position).to(tokens.dtype)          # [frames, D]
        return per_frame.unsqueeze(0).expand(tokens.shape[0] // num_frames, -1, -1).reshape(-1, 1, tokens.shape[-1])


class ModalityTower(nn.Module):
    """One modality's tower: backbone (+LoRA) and its own learnable logit scale."""

    def __init__(self, config: TowerConfig, visual: nn.Module) -> None:
        super().__init__()
        self.config = config
        pre = config.preprocess
        self.spec = modality_spec(config.modality)
        if self.spec.tower_input == "spectrogram":
            input_hw = (pre.mel_bins, pre.target_length)
        else:
            input_hw = (pre.image_size, pre.image_size)
        temporal = pre.num_frames if self.spec.temporal and config.temporal == "attention" else 0
        self.backbone = VisionBackbone(copy.deepcopy(visual), input_hw, temporal_frames=temporal,
                                       video_variant=config.video_variant, num_frames=pre.num_frames)
        self.log_logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / config.temperature)))

    @property
    def modality(self) -> str:
        """The modality this tower encodes (from its config)."""
        return self.config.modality

    def expected_shape(self) -> str:
        """The input shape this tower accepts, as text for error messages."""
        pre = self.config.preprocess
        h, w = self.backbone.input_hw
        if self.spec.temporal:
            return f"[batch, frames<={pre.num_frames}, 3, {h}, {w}]"
        return f"[batch, 3, {h}, {w}]"

    def forward(self, batch: torch.Tensor, frames: torch.Tensor | None = None) -> torch.Tensor:
        """Unnormalised embeddings [batch, embed_dim]. Video only: `frames` [batch] marks rows that are
        1-frame clips (images, OmniVL-style: 1) among full clips (the batch's frame count); a 1-frame row
        runs its first frame through the blocks without temporal attention."""
        self._check_shape(batch)
        if not self.spec.temporal:
            return self.backbone(batch, mask_ratio=self.config.mask_ratio)
        count = batch.shape[1]
        if frames is not None and bool((frames != count).any()):
            return self._mixed(batch, frames)
        return self.backbone(batch.flatten(0, 1), num_frames=count, mask_ratio=self.config.mask_ratio)

    def _mixed(self, batch: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """A batch of clips and stills in one forward pass each, features back in row order."""
        count = batch.shape[1]
        if bool(((frames != 1) & (frames != count)).any()):
            raise ValueError(f"video rows must have 1 frame (an image) or {count}, got {frames.tolist()}")
        stills = (frames == 1).nonzero().squeeze(1)
        clips = (frames != 1).nonzero().squeeze(1)
        parts, order = [], []
        if len(stills):
            parts.append(self.backbone(batch[stills, 0], num_frames=1, mask_ratio=self.config.mask_ratio))
            order.append(stills)
        if len(clips):
            parts.append(self.backbone(batch[clips].flatten(0, 1), num_frames=count, mask_ratio=self.config.mask_ratio))
            order.append(clips)
        return torch.cat(parts)[torch.argsort(torch.cat(order))]

    def logit_scale(self) -> torch.Tensor:
        """exp of the clamped learnable log-scale, as the contrastive loss uses it."""
        return self.log_logit_scale.clamp(0, C.LOGIT_SCALE_MAX).exp()

    @torch.no_grad()
    def clamp_logit_scale(self) -> None:
        """Keep the stored log-scale in [0, ln 100] (call after each optimizer step)."""
        self.log_logit_scale.clamp_(0, C.LOGIT_SCALE_MAX)

    def _check_shape(self, batch: torch.Tensor) -> None:
        h, w = self.backbone.input_hw
        if self.spec.temporal:
            ok = (batch.ndim == 5 and batch.shape[2] == 3 and tuple(batch.shape[3:]) == (h, w)
                  and 1 <= batch.shape[1] <= self.config.preprocess.num_frames)
        else:
            ok = batch.ndim == 4 and batch.shape[1] == 3 and tuple(batch.shape[2:]) == (h, w)
        if not ok:
            raise ValueError(f"{self.modality} tower expects {self.expected_shape()}, got {list(batch.shape)}")
