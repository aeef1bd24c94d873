"""Import LanguageBind checkpoints (one folder per modality) into one RayBind checkpoint with their shared text
tower; evaluate, embed or fine-tune it (`model.init_from`) like any other.

    raybind import-languagebind --input LanguageBind_Video_FT --input LanguageBind_Audio_FT --output runs/lb
    raybind import-languagebind --input s3://bucket/LanguageBind_Video --output s3://bucket/runs/lb-video

An --input is a local folder, an s3:// folder, or a Hugging Face hub id (LanguageBind/LanguageBind_Video_FT)
where the hub is reachable. Folders whose text towers differ cannot share one model: the error names both.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

SUMMARY = "import LanguageBind checkpoint folders into one RayBind checkpoint"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `raybind import-languagebind`."""
    parser.add_argument("--input", action="append", required=True, metavar="DIR",
                        help="a LanguageBind folder (local, s3:// or a hub id); repeat for more modalities")
    parser.add_argument("--output", required=True, help="the RayBind checkpoint folder to write, local or s3://")
    parser.add_argument("--seed", type=int, default=0, help="init_seed recorded in the checkpoint (default 0)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Read every --input, build one model, write it as a checkpoint; the summary names its towers."""
    from encoders.checkpoint import save_model
    from encoders.languagebind import LanguageBindError, import_languagebind
    from raybind import storage
    from raybind.commands.languagebind import local_output, local_sources
    from raybind.errors import InputError

    with local_sources(args.input) as folders:
        try:
            model = import_languagebind(folders, init_seed=args.seed)
        except LanguageBindError as error:
            raise InputError(str(error)) from None
    with local_output(args.output) as folder:
        save_model(model, folder, extra={"imported_from": [storage.redact(s) for s in args.input]})
    towers = {m: {"lora_r": model.tower_config(m).lora.r if model.tower_config(m).lora else 0,
                  "video_variant": model.tower_config(m).video_variant} for m in model.modalities}
    print(f"imported {', '.join(model.modalities)} (preset {model.config.preset}) into "
          f"{storage.redact(args.output)}", file=sys.stderr)
    return {"checkpoint": storage.redact(args.output), "preset": model.config.preset, "towers": towers}
