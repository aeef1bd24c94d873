"""RGB -> thermal (TIR) frames with an image-to-image generator.

LanguageBind's thermal data came from the sRGB-TIR translator, a MUNIT model. `MunitGenerator` mirrors
MUNIT's `AdaINGen` module names so a MUNIT generator checkpoint (`{"a": ..., "b": ...}` state dicts)
loads directly; translation encodes content with the RGB generator and decodes with the thermal
generator's decoder under a fixed style code (deterministic). A TorchScript file mapping [N,3,H,W] in
[-1, 1] to [N,C,H,W] in [-1, 1] works too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from encoders.synthesis.batching import run_batch_invariant


@dataclass(frozen=True)
class MunitParams:
    """MUNIT `gen` hyper-parameters (sRGB-TIR uses dim 64, style 8, 2 downsamples, 4 res blocks, mlp 256)."""

    input_dim: int = 3
    dim: int = 64
    style_dim: int = 8
    n_downsample: int = 2
    n_res: int = 4
    mlp_dim: int = 256
    output_dim: int = 3


class _LayerNorm(nn.Module):
    """MUNIT's layer norm: statistics over C, H, W per sample, per-channel affine (gamma, beta)."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.rand(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.view(x.shape[0], -1)
        mean = flat.mean(1).view(-1, 1, 1, 1)
        std = flat.std(1).view(-1, 1, 1, 1)
        x = (x - mean) / (std + self.eps)
        return x * self.gamma.view(1, -1, 1, 1) + self.beta.view(1, -1, 1, 1)


class _AdaIN(nn.Module):
    """Instance norm whose affine weight/bias are assigned from the style MLP before each decode."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.channels, self.eps = channels, eps
        self.weight: torch.Tensor | None = None
        self.bias: torch.Tensor | None = None
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight is None or self.bias is None:
            raise RuntimeError("AdaIN parameters are unset: decode through MunitGenerator.decode")
        n, c, h, w = x.shape
        out = F.batch_norm(x.reshape(1, n * c, h, w), self.running_mean.repeat(n), self.running_var.repeat(n),
                           self.weight, self.bias, True, 0.1, self.eps)
        return out.view(n, c, h, w)


class _ConvBlock(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int, padding: int, norm: str, activation: str) -> None:
        super().__init__()
        self.pad = nn.ReflectionPad2d(padding)
        self.norm = {"none": None, "in": nn.InstanceNorm2d(cout), "ln": _LayerNorm(cout), "adain": _AdaIN(cout)}[norm]
        self.activation = {"relu": nn.ReLU(inplace=True), "tanh": nn.Tanh(), "none": None}[activation]
        self.conv = nn.Conv2d(cin, cout, kernel, stride, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(self.pad(x))
        if self.norm is not None:
            x = self.norm(x)
        return self.activation(x) if self.activation is not None else x


class _ResBlock(nn.Module):
    def __init__(self, dim: int, norm: str) -> None:
        super().__init__()
        self.model = nn.Sequential(_ConvBlock(dim, dim, 3, 1, 1, norm, "relu"), _ConvBlock(dim, dim, 3, 1, 1, norm, "none"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.model(x)


class _ResBlocks(nn.Module):
    def __init__(self, n: int, dim: int, norm: str) -> None:
        super().__init__()
        self.model = nn.Sequential(*[_ResBlock(dim, norm) for _ in range(n)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class _StyleEncoder(nn.Module):
    def __init__(self, p: MunitParams) -> None:
        super().__init__()
        dim = p.dim
        layers: list[nn.Module] = [_ConvBlock(p.input_dim, dim, 7, 1, 3, "none", "relu")]
        for _ in range(2):
            layers.append(_ConvBlock(dim, 2 * dim, 4, 2, 1, "none", "relu"))
            dim *= 2
        for _ in range(4 - 2):  # MUNIT's style encoder always downsamples 4 times
            layers.append(_ConvBlock(dim, dim, 4, 2, 1, "none", "relu"))
        layers += [nn.AdaptiveAvgPool2d(1), nn.Conv2d(dim, p.style_dim, 1, 1, 0)]
        self.model = nn.Sequential(*layers)


class _ContentEncoder(nn.Module):
    def __init__(self, p: MunitParams) -> None:
        super().__init__()
        dim = p.dim
        layers: list[nn.Module] = [_ConvBlock(p.input_dim, dim, 7, 1, 3, "in", "relu")]
        for _ in range(p.n_downsample):
            layers.append(_ConvBlock(dim, 2 * dim, 4, 2, 1, "in", "relu"))
            dim *= 2
        layers.append(_ResBlocks(p.n_res, dim, "in"))
        self.model = nn.Sequential(*layers)
        self.output_dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class _Decoder(nn.Module):
    def __init__(self, p: MunitParams, dim: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [_ResBlocks(p.n_res, dim, "adain")]
        for _ in range(p.n_downsample):
            layers += [nn.Upsample(scale_factor=2), _ConvBlock(dim, dim // 2, 5, 1, 2, "ln", "relu")]
            dim //= 2
        layers.append(_ConvBlock(dim, p.output_dim, 7, 1, 3, "none", "tanh"))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class _LinearBlock(nn.Module):
    def __init__(self, cin: int, cout: int, activation: str) -> None:
        super().__init__()
        self.fc = nn.Linear(cin, cout, bias=True)
        self.activation = nn.ReLU(inplace=True) if activation == "relu" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc(x)
        return self.activation(x) if self.activation is not None else x


class _MLP(nn.Module):
    def __init__(self, cin: int, cout: int, dim: int, n_blk: int = 3) -> None:
        super().__init__()
        layers = [_LinearBlock(cin, dim, "relu")]
        layers += [_LinearBlock(dim, dim, "relu") for _ in range(n_blk - 2)]
        layers.append(_LinearBlock(dim, cout, "none"))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.view(x.shape[0], -1))


class MunitGenerator(nn.Module):
    """MUNIT's AdaINGen: style encoder, content encoder, AdaIN decoder, style MLP (same parameter names)."""

    def __init__(self, params: MunitParams = MunitParams()) -> None:
        super().__init__()
        self.params = params
        self.enc_style = _StyleEncoder(params)
        self.enc_content = _ContentEncoder(params)
        self.dec = _Decoder(params, self.enc_content.output_dim)
        self.mlp = _MLP(params.style_dim, self._num_adain_params(), params.mlp_dim)

    def _adain_layers(self) -> list[_AdaIN]:
        return [m for m in self.dec.modules() if isinstance(m, _AdaIN)]

    def _num_adain_params(self) -> int:
        return sum(2 * m.channels for m in self._adain_layers())

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """MUNIT's content code of images [N, 3, H, W] in [-1, 1] (H and W shrink by 2**n_downsample)."""
        return self.enc_content(images)

    def decode(self, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] from a content code under style codes [N, style_dim, 1, 1]. Sets every AdaIN layer's
        affine from the style MLP first, so concurrent calls on one generator would interfere."""
        params = self.mlp(style)
        for layer in self._adain_layers():
            mean, std = params[:, :layer.channels], params[:, layer.channels:2 * layer.channels]
            layer.bias = mean.contiguous().view(-1)
            layer.weight = std.contiguous().view(-1)
            params = params[:, 2 * layer.channels:]
        return self.dec(content)


class ThermalSynthesizer:
    """RGB uint8 [N, H, W, 3] -> 3-channel thermal uint8 [N, H, W, 3]."""

    def __init__(self, translate: nn.Module, device: str | torch.device = "cpu", max_side: int | None = None) -> None:
        self.device = torch.device(device)
        self.translate = translate.to(self.device).eval()
        self.max_side = max_side

    @classmethod
    def from_munit(cls, rgb_gen: MunitGenerator, thermal_gen: MunitGenerator, style_seed: int = 0,
                   device: str | torch.device = "cpu", max_side: int | None = None) -> "ThermalSynthesizer":
        """Translate with a MUNIT pair: content from `rgb_gen`, decoded by `thermal_gen` under one style code drawn
        from `style_seed`, so the same frame always gives the same thermal image."""
        return cls(_MunitTranslate(rgb_gen, thermal_gen, style_seed), device, max_side)

    @classmethod
    def load(cls, path: str | Path, params: MunitParams = MunitParams(), device: str | torch.device = "cpu",
             max_side: int | None = None) -> "ThermalSynthesizer":
        """A MUNIT checkpoint (`{"a": rgb_gen, "b": thermal_gen}`, optionally `"params"`: the generator
        sizes, else `params`; loaded weights-only) or a TorchScript file."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"thermal generator weights not found: {path}")
        try:
            return cls(torch.jit.load(str(path), map_location="cpu"), device, max_side)
        except RuntimeError:
            pass
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not (isinstance(state, dict) and {"a", "b"} <= set(state)):
            raise ValueError(f"{path} is neither TorchScript nor a MUNIT generator checkpoint with keys 'a' and 'b'")
        if "params" in state:  # a checkpoint may carry its own generator sizes (the demo's small MUNIT does)
            params = MunitParams(**state["params"])
        rgb_gen, thermal_gen = MunitGenerator(params), MunitGenerator(params)
        rgb_gen.load_state_dict(state["a"])
        thermal_gen.load_state_dict(state["b"])
        return cls.from_munit(rgb_gen, thermal_gen, device=device, max_side=max_side)

    @torch.inference_mode()
    def __call__(self, frames: np.ndarray) -> np.ndarray:
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"thermal synthesis expects uint8 RGB frames [N, H, W, 3], got {frames.shape} {frames.dtype}")
        return run_batch_invariant(self._run, frames, self.device)

    def _run(self, frames: np.ndarray) -> np.ndarray:
        h, w = frames.shape[1:3]
        x = torch.from_numpy(frames).to(self.device).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        if self.max_side and max(h, w) > self.max_side:
            scale = self.max_side / max(h, w)
            x = F.interpolate(x, size=(round(h * scale), round(w * scale)), mode="bilinear", align_corners=False)
        # the generator downsamples by 4: pad to a multiple of 4, translate, crop back.
        ph, pw = (-x.shape[2]) % 4, (-x.shape[3]) % 4
        y = self.translate(F.pad(x, (0, pw, 0, ph), mode="reflect"))[:, :, :x.shape[2], :x.shape[3]]
        if y.shape[1] == 1:
            y = y.expand(-1, 3, -1, -1)
        y = F.interpolate(y, size=(h, w), mode="bilinear", align_corners=False) if y.shape[2:] != (h, w) else y
        return ((y.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


class _MunitTranslate(nn.Module):
    def __init__(self, rgb_gen: MunitGenerator, thermal_gen: MunitGenerator, style_seed: int) -> None:
        super().__init__()
        self.rgb_gen, self.thermal_gen = rgb_gen, thermal_gen
        style = torch.randn(1, thermal_gen.params.style_dim, 1, 1, generator=torch.Generator().manual_seed(style_seed))
        self.register_buffer("style", style)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.thermal_gen.decode(self.rgb_gen.encode(x), self.style.expand(x.shape[0], -1, -1, -1))


def random_thermal_generator(seed: int = 0, params: MunitParams = MunitParams(dim=8, n_res=1, mlp_dim=16)) -> tuple[MunitGenerator, MunitGenerator]:
    """Two tiny randomly initialised MUNIT generators (RGB, thermal) for tests and the offline quickstart."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MunitGenerator(params), MunitGenerator(params)
