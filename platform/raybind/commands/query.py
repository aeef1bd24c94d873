"""Query an embedded corpus (`raybind embed`) with text or a media file: the top-k ids by cosine similarity.

    raybind query --checkpoint runs/quickstart --index runs/embeddings/demo --text "a red circle moving left"
    raybind query --checkpoint runs/quickstart --index runs/embeddings/demo --modality audio --input beep.wav --among video
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from encoders.modalities import MODALITIES

SUMMARY = "top-k ids of an embedded corpus for a text or media query"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `raybind query`: a --text query, or a --modality with an --input file."""
    parser.add_argument("--checkpoint", required=True, help="the checkpoint the corpus was embedded with")
    parser.add_argument("--index", required=True, help="the --output folder of `raybind embed`")
    parser.add_argument("--text", help="a text query")
    parser.add_argument("--modality", choices=list(MODALITIES), help="media query type")
    parser.add_argument("--input", help="media query file (path or s3://)")
    parser.add_argument("--among", help="search only this embedded modality (video, audio, ..., text)")
    parser.add_argument("-k", type=int, default=5, help="how many hits (default 5)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Print the ranked hits on stderr; they become the JSON line as `hits`."""
    from raybind.evaluate.corpus import query
    from raybind.evaluate.embed import load

    hits = query(args.index, load(args.checkpoint), text=args.text, modality=args.modality, item=args.input,
                 k=args.k, among=args.among)
    for rank, hit in enumerate(hits, 1):
        print(f"{rank:3d}. {hit['score']:.3f}  {hit['modality']:8s} {hit['id']}", file=sys.stderr)
    return {"hits": hits}
