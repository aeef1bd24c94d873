"""Query an embedded corpus (jobs/embed.py) with text or a media file: the top-k ids by cosine similarity.

    python jobs/query.py --checkpoint runs/quickstart --index runs/embeddings/demo --text "a red circle moving left"
    python jobs/query.py --checkpoint runs/quickstart --index runs/embeddings/demo --modality audio --input beep.wav --among video
"""

from __future__ import annotations

import argparse
import sys

from raybind.cli import run_command
from raybind.corpus import query
from raybind.embed import load


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="the checkpoint the corpus was embedded with")
    parser.add_argument("--index", required=True, help="the --output folder of jobs/embed.py")
    parser.add_argument("--text", help="a text query")
    parser.add_argument("--modality", choices=["video", "audio", "image", "depth", "thermal"], help="media query type")
    parser.add_argument("--input", help="media query file (path or s3://)")
    parser.add_argument("--among", help="search only this embedded modality (video, audio, ..., text)")
    parser.add_argument("-k", type=int, default=5)

    def body(args):
        hits = query(args.index, load(args.checkpoint), text=args.text, modality=args.modality, item=args.input,
                     k=args.k, among=args.among)
        for rank, hit in enumerate(hits, 1):
            print(f"{rank:3d}. {hit['score']:.3f}  {hit['modality']:8s} {hit['id']}", file=sys.stderr)
        return {"hits": hits}

    return run_command(parser, body, argv)


if __name__ == "__main__":
    main()
