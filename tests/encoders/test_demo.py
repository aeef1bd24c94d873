import json

from encoders import demo


def test_demo_encodes_one_generated_clip_per_modality(capsys):
    summary = demo.main([])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last) == summary
    for modality in ("video", "audio", "depth", "thermal"):
        row = summary["towers"][modality]
        assert row["embedding_shape"] == [1, summary["embed_dim"]]
        assert 0 < row["trainable"] < row["parameters"]
    assert summary["towers"]["video"]["input_shape"] == [1, 8, 3, 64, 64]
    assert summary["towers"]["audio"]["input_shape"] == [1, 3, 64, 256]
