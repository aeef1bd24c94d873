"""Export one tower of a RayBind checkpoint, with its text tower, as a LanguageBind folder that LanguageBind's
`LanguageBindVideo.from_pretrained(DIR)` (and tools built on it, such as Video-LLaVA) load.

    raybind export-languagebind --checkpoint runs/lb --modality video --output out/LanguageBind_Video_RayBind

Writes config.json, model.safetensors and the CLIP tokenizer files; LoRA adapters are merged into the
weights unless --keep-lora (then the encoder is peft-wrapped as LanguageBind's LoRA checkpoints are).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from encoders.modalities import MODALITIES

SUMMARY = "export one tower of a checkpoint as a LanguageBind folder"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `raybind export-languagebind`."""
    parser.add_argument("--checkpoint", required=True, help="checkpoint or run folder, local or s3://")
    parser.add_argument("--modality", required=True, choices=list(MODALITIES), help="the tower to export")
    parser.add_argument("--output", required=True, help="the LanguageBind folder to write, local or s3://")
    parser.add_argument("--keep-lora", action="store_true",
                        help="keep LoRA adapters as peft-wrapped weights instead of merging them")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Load the checkpoint, write the folder; the summary lists the files written."""
    from encoders.languagebind import LanguageBindError, export_languagebind
    from raybind import storage
    from raybind.commands.languagebind import local_output
    from raybind.errors import InputError
    from raybind.evaluate.embed import read_checkpoint

    model, _ = read_checkpoint(args.checkpoint)
    if args.modality not in model.modalities:
        raise InputError(f"{storage.redact(args.checkpoint)} has no {args.modality} tower; it has {model.modalities}")
    with local_output(args.output) as folder:
        try:
            export_languagebind(model, args.modality, folder, keep_lora=args.keep_lora)
        except LanguageBindError as error:
            raise InputError(str(error)) from None
        files = sorted(p.name for p in folder.iterdir())
    print(f"exported the {args.modality} tower to {storage.redact(args.output)}", file=sys.stderr)
    return {"output": storage.redact(args.output), "modality": args.modality, "files": files,
            "lora_merged": not args.keep_lora and model.tower_config(args.modality).lora is not None}
