"""LanguageBind reference constants: the single source for every number the towers and transforms share."""

from __future__ import annotations

import math

# CLIP image statistics (OpenAI CLIP), used for every image-like modality (image, video, depth, thermal).
CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

# Audio: Kaldi fbank settings and the dataset statistics LanguageBind normalizes with.
AUDIO_SAMPLE_RATE = 16_000
AUDIO_MEL_BINS = 126          # 9 x 14: exact 14x14 patches
AUDIO_TARGET_LENGTH = 1036    # 74 x 14
AUDIO_FRAME_LENGTH_MS = 25.0
AUDIO_FRAME_SHIFT_MS = 10.0
AUDIO_NORM_MEAN = -4.2677393
AUDIO_NORM_STD = 4.5689974

# Depth in metres, clipped then scaled into [0, 1].
DEPTH_MIN_M = 0.01
DEPTH_MAX_M = 10.0

VIDEO_NUM_FRAMES = 8

# Logit scale: CLIP init ln(1/0.07), clamped to [0, ln 100].
TEMPERATURE_INIT = 0.07  # CLIP / LanguageBind initial temperature (--init-temp)
LOGIT_SCALE_INIT = math.log(1 / TEMPERATURE_INIT)
LOGIT_SCALE_MAX = math.log(100.0)

# LoRA alpha of every LanguageBind tower (per-modality rank, mask ratio and learning rate: encoders.modalities).
LORA_ALPHA = 16

# AdamW as in LanguageBind / open_clip.
ADAM_BETAS: tuple[float, float] = (0.9, 0.98)
ADAM_EPS = 1e-6
WEIGHT_DECAY = 0.2

TEXT_CONTEXT_LENGTH = 77
