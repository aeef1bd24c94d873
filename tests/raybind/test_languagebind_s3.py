"""`raybind import-languagebind` / `export-languagebind` with s3:// input and output (moto S3 server, no Ray)."""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from tests.encoders.test_languagebind import Reference, _input


def test_import_from_and_export_to_s3(tmp_path, s3_bucket):
    from raybind.commands import export_languagebind, import_languagebind
    from raybind.evaluate.embed import read_checkpoint

    client, bucket, query = s3_bucket
    reference = Reference("depth", lora_r=2)
    folder = reference.save(tmp_path / "LanguageBind_Depth")
    for path in folder.iterdir():
        client.upload_file(str(path), bucket, f"LanguageBind_Depth/{path.name}")
    source, checkpoint = f"s3://{bucket}/LanguageBind_Depth{query}", f"s3://{bucket}/runs/lb{query}"
    summary = import_languagebind.run(argparse.Namespace(input=[source], output=checkpoint, seed=0))
    assert summary["towers"] == {"depth": {"lora_r": 2, "video_variant": "v1"}}
    assert "base.safetensors" in {o["Key"].rsplit("/", 1)[-1] for o in
                                  client.list_objects_v2(Bucket=bucket, Prefix="runs/lb/")["Contents"]}
    model, _ = read_checkpoint(checkpoint)
    x = _input("depth")
    torch.testing.assert_close(model.encode("depth", x), F.normalize(reference.embed(x), dim=-1), atol=1e-5, rtol=0)
    out = f"s3://{bucket}/exported{query}"
    summary = export_languagebind.run(argparse.Namespace(checkpoint=checkpoint, modality="depth", output=out,
                                                         keep_lora=False))
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="exported/")["Contents"]}
    assert {"exported/config.json", "exported/model.safetensors", "exported/vocab.json"} <= keys
    assert summary["lora_merged"]
