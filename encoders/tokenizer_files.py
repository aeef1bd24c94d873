"""Hugging Face `CLIPTokenizer` files (vocab.json, merges.txt, ...) derived from the BPE vocabulary open_clip ships.

LanguageBind's folders carry CLIP tokenizer files for `CLIPTokenizer`; RayBind tokenizes with open_clip's
`SimpleTokenizer`. Both read the same BPE merges (`bpe_simple_vocab_16e6.txt.gz`), so the files are written
from open_clip's own table and give the same ids: 256 byte symbols, the same 256 with `</w>`, 48,894 merges,
then the start and end tokens (49406, 49407). Only the special tokens' spelling differs: open_clip says
`<start_of_text>` / `<end_of_text>`, Hugging Face `<|startoftext|>` / `<|endoftext|>`.

Padding convention: open_clip pads with 0, LanguageBind's tokenizer with `<|endoftext|>` (49407). The text
tower pools at the first end token (argmax of the ids), so the embeddings agree; compare ids up to and
including the first end token.
"""

from __future__ import annotations

import json
from pathlib import Path

VOCAB_FILE = "vocab.json"
MERGES_FILE = "merges.txt"
TOKENIZER_CONFIG = "tokenizer_config.json"
SPECIAL_TOKENS_MAP = "special_tokens_map.json"
TOKENIZER_FILES = (VOCAB_FILE, MERGES_FILE, TOKENIZER_CONFIG, SPECIAL_TOKENS_MAP)

HF_START, HF_END = "<|startoftext|>", "<|endoftext|>"
_OPEN_CLIP_SPECIALS = {"<start_of_text>": HF_START, "<end_of_text>": HF_END}


def clip_vocabulary() -> tuple[dict[str, int], list[str]]:
    """(token -> id, merges as "a b" lines) exactly as open_clip's SimpleTokenizer builds them."""
    from open_clip.tokenizer import SimpleTokenizer

    bpe = SimpleTokenizer()
    vocab = {_OPEN_CLIP_SPECIALS.get(token, token): index for token, index in bpe.encoder.items()}
    merges = [" ".join(pair) for pair, _ in sorted(bpe.bpe_ranks.items(), key=lambda item: item[1])]
    return vocab, merges


def write_clip_tokenizer(directory: str | Path, context_length: int = 77) -> list[Path]:
    """Write the four files `CLIPTokenizer.from_pretrained(directory)` reads; returns their paths.

    The pad token is `<|endoftext|>`, as in LanguageBind's folders (its tokenizer pads with it)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab, merges = clip_vocabulary()
    special = {"bos_token": HF_START, "eos_token": HF_END, "unk_token": HF_END, "pad_token": HF_END}
    config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": context_length, "do_lower_case": True,
              "errors": "replace", **special}
    files = {VOCAB_FILE: json.dumps(vocab, ensure_ascii=False),
             # CLIPTokenizer skips the first line (a version header) and reads 48,894 merges after it
             MERGES_FILE: "#version: 0.2\n" + "\n".join(merges) + "\n",
             TOKENIZER_CONFIG: json.dumps(config, indent=2),
             SPECIAL_TOKENS_MAP: json.dumps(special, indent=2)}
    for name, text in files.items():
        (directory / name).write_text(text, encoding="utf-8")
    return [directory / name for name in files]
