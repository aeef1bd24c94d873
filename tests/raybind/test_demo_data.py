import json

import numpy as np

from raybind.data.demo_data import COLOURS, DIRECTIONS, SHAPES, generate
from raybind.data.media import decode_audio, decode_video


def test_demo_clips_are_real_media_whose_captions_follow_content(tmp_path):
    manifests = generate(tmp_path / "a", train_clips=6, val_clips=4, seed=3)
    rows = [json.loads(line) for line in open(manifests["train"])]
    assert len(rows) == 6 and all(r["video"].endswith(".mp4") for r in rows)
    for row in rows[:3]:
        words = row["text"].split()
        colour, shape, direction = words[1], words[2], words[4]
        assert colour in COLOURS and shape in SHAPES and direction in DIRECTIONS
        frames = decode_video(str(tmp_path / "a" / row["video"]), 8, 64).astype(int)
        target = np.array(COLOURS[colour])
        mask = np.abs(frames - target).sum(-1) < 60
        ys, xs = zip(*[(np.nonzero(m)[0].mean(), np.nonzero(m)[1].mean()) for m in (mask[0], mask[-1])])
        dx, dy = DIRECTIONS[direction]
        assert (xs[1] - xs[0]) * dx + (ys[1] - ys[0]) * dy > 10, row["text"]
        wave = decode_audio(str(tmp_path / "a" / row["video"]), 16_000)
        assert len(wave) > 16_000


def test_demo_data_is_deterministic_for_a_seed(tmp_path):
    a = generate(tmp_path / "a", train_clips=3, val_clips=2, seed=5)
    b = generate(tmp_path / "b", train_clips=3, val_clips=2, seed=5)
    c = generate(tmp_path / "c", train_clips=3, val_clips=2, seed=6)
    assert open(a["train"]).read() == open(b["train"]).read() != open(c["train"]).read()
    first = json.loads(open(a["val"]).readline())["video"]
    np.testing.assert_array_equal(decode_video(str(tmp_path / "a" / first), 4, 32),
                                  decode_video(str(tmp_path / "b" / first), 4, 32))


def test_validation_split_covers_every_visual_combination(tmp_path):
    manifests = generate(tmp_path, train_clips=1, val_clips=64, seed=0)
    captions = [json.loads(line)["text"] for line in open(manifests["val"])]
    visuals = {" ".join(c.split()[1:5]) for c in captions}
    assert len(visuals) == 64
