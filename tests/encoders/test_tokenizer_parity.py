"""RayBind's tokenizer gives LanguageBind's ids: Hugging Face `CLIPTokenizer` built from the files RayBind writes
(from open_clip's BPE table) against `encoders.text.Tokenizer` (open_clip's SimpleTokenizer)."""

from __future__ import annotations

import pytest
import torch

from encoders.config import TextConfig
from encoders.text import Tokenizer
from encoders.tokenizer_files import TOKENIZER_FILES, write_clip_tokenizer

START, END = 49406, 49407
CAPTIONS = [
    "A man is playing a guitar.",
    "Hello, World!!  What's   up?? (yes; no) -- maybe...",
    "   leading and trailing whitespace\tand\ttabs\nand newlines   ",
    "UPPER CASE Caption With MiXeD case",
    "Café naïve façade — 東京 の 夜景, emoji 🙂🎸 and ümlauts",
    "numbers 12345 and 3.14 and 1,000,000",
    "it's they're we've I'm you'll he'd",
    "a dog " * 60,                                     # over-long: 180 tokens, truncated to 77
    "supercalifragilisticexpialidocious " * 30,       # over-long with multi-piece words
]


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    from transformers import CLIPTokenizer

    folder = tmp_path_factory.mktemp("clip_tokenizer")
    written = write_clip_tokenizer(folder)
    assert sorted(p.name for p in written) == sorted(TOKENIZER_FILES)
    return Tokenizer(TextConfig()), CLIPTokenizer.from_pretrained(str(folder))


def _meaningful(ids: list[int]) -> list[int]:
    """Ids up to and including the first end token (what the text tower reads; padding differs)."""
    return ids[:ids.index(END) + 1]


@pytest.mark.parametrize("caption", CAPTIONS)
def test_same_ids_as_hugging_face_clip_tokenizer(tokenizers, caption):
    ours, theirs = tokenizers
    raybind = ours(caption)[0].tolist()
    hf = theirs(caption, max_length=77, padding="max_length", truncation=True)["input_ids"]
    assert len(raybind) == len(hf) == 77
    assert raybind[0] == hf[0] == START
    assert _meaningful(raybind) == _meaningful(hf)
    used = len(_meaningful(raybind))
    # padding convention: open_clip pads with 0, LanguageBind's tokenizer with <|endoftext|> (49407)
    assert set(raybind[used:]) <= {0}
    assert set(hf[used:]) <= {END}


def test_truncation_keeps_the_end_token_last(tokenizers):
    ours, theirs = tokenizers
    caption = "a dog " * 60
    raybind = ours(caption)[0].tolist()
    hf = theirs(caption, max_length=77, truncation=True)["input_ids"]
    # both keep the start token and the first 75 BPE tokens, then the end token at position 76
    assert raybind[76] == hf[76] == END
    assert raybind == hf


def test_pooled_position_is_the_same(tokenizers):
    """The text tower pools at argmax(ids): the first end token under either padding."""
    ours, theirs = tokenizers
    raybind = ours(CAPTIONS)
    hf = torch.tensor(theirs(CAPTIONS, max_length=77, padding="max_length", truncation=True)["input_ids"])
    assert torch.equal(raybind.argmax(-1), hf.argmax(-1))


def test_html_entities_are_the_one_known_difference(tokenizers):
    """open_clip unescapes HTML entities before BPE; Hugging Face's CLIPTokenizer does not."""
    ours, theirs = tokenizers
    raybind = _meaningful(ours("fish &amp; chips")[0].tolist())
    hf = _meaningful(theirs("fish &amp; chips")["input_ids"])
    assert raybind == _meaningful(theirs("fish & chips")["input_ids"])
    assert raybind != hf
