"""Hostile input in the decode path: every bad row is quarantined with a reason a person can act on, the
rest of its batch decodes, a row that blocks is abandoned as timed out, and long audio costs no more memory
than short."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading

import av
import numpy as np
import pytest

from encoders import transforms
from raybind import storage
from raybind.config import validate
from raybind.data import quarantine
from raybind.data.decode import RowFailed, decode_batch, decode_media, guarded, read_media
from raybind.data.pipeline import check_media_storage, decode_spec
from raybind.data.sources import manifest_files
from raybind.errors import InputError
from tests.faultproxy import FaultProxy


def _spec(media, modalities: list[str], **decode):
    cfg = validate({"name": "h", "data": {"train": "unused.jsonl", "modalities": modalities, "num_frames": 4,
                                          "decode": decode}})
    return decode_spec(cfg, str(media.root / "m.jsonl"), str(media.root / "_quarantine"), modalities)


def _write_flac(path, seconds: int, rate: int = 8_000) -> None:
    """Silence, a minute per frame: hours of valid audio in seconds and a few MB."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("flac", rate=rate, layout="mono")
        minute = np.zeros((1, rate * 60), np.int16)
        for index in range(seconds // 60):
            frame = av.AudioFrame.from_ndarray(minute, format="s16", layout="mono")
            frame.sample_rate, frame.pts = rate, index * rate * 60
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def test_every_hostile_row_is_quarantined_with_its_reason_and_the_rest_of_the_batch_decodes(media):
    clip = media.video("good.mp4", frames=12)
    data = clip.read_bytes()
    (media.root / "folder.mp4").mkdir()
    os.symlink("/dev/zero", media.root / "zero.mp4")
    locked = media.file("locked.mp4", data)
    locked.chmod(0)
    os.mkfifo(media.root / "pipe.mp4")
    media.file("cut.mp4", data[:len(data) // 3])
    rows = {"good": "good.mp4", "web": "http://example.com/a.mp4", "folder": "folder.mp4", "zero": "zero.mp4",
            "locked": "locked.mp4", "pipe": "pipe.mp4", "cut": "cut.mp4"}
    spec = _spec(media, ["video"], row_timeout_s=3)
    batch = {"id": np.array(list(rows), dtype=object), "text": np.array(["a caption"] * len(rows), dtype=object),
             "video": np.array(list(rows.values()), dtype=object)}
    out = decode_batch(batch, spec)
    bad = {r.id: r.reason for r in quarantine.read_all(spec.quarantine_uri)}
    readable = os.access(locked, os.R_OK)   # root reads a mode-000 file: then it is valid media and kept
    assert sorted(out["id"]) == sorted(["good", *(["locked"] if readable else [])])
    assert len(out["id"]) + len(bad) == len(rows)   # counts add up
    assert bad["web"].startswith("unsupported scheme 'http://'")
    assert bad["folder"] == "a directory, not a file"
    assert bad["zero"] == "a character device, not a file"
    assert bad["pipe"] == "a named pipe (FIFO), not a file"   # never opened: a blocked open can hold decoder locks
    assert "video" in bad["cut"]
    if not readable:
        assert bad["locked"] == "permission denied (no read permission)"

    small = _spec(media, ["image"], max_file_mb=0.001)
    with pytest.raises(RowFailed, match=r"too large to read whole: .* \(data.decode.max_file_mb is 0.001\)"):
        decode_media("image", str(clip), small)


def test_any_exception_of_a_row_becomes_a_row_failure_and_a_stuck_row_is_abandoned():
    with pytest.raises(RowFailed, match="unexpected KeyError: 'x'") as failed:
        guarded(lambda: {}["x"], "s3://b/clip.mp4", 5)
    assert failed.value.uri == "s3://b/clip.mp4"
    assert guarded(lambda: 7, "", 5) == 7
    with pytest.raises(RowFailed, match="timed out after 0.2 s"):
        guarded(threading.Event().wait, "", 0.2)   # blocks until abandoned


def test_long_audio_decodes_only_its_windows_to_the_same_spectrogram(media):
    spec = _spec(media, ["audio"])
    rng = np.random.default_rng(0)
    wave = (0.2 * np.sin(np.arange(16_000 * 75) * 2 * np.pi * 330 / 16_000)
            + 0.01 * rng.standard_normal(16_000 * 75)).astype(np.float32)
    from raybind.data.media_encode import write_audio

    path = media.root / "long.wav"
    write_audio(path, wave)
    windowed = decode_media("audio", str(path), spec)   # 75 s > WHOLE_AUDIO_S: three windows only
    from raybind.data.media import decode_audio

    whole = transforms.audio_mel(decode_audio(str(path), 16_000), 16_000, spec.audio).numpy()
    assert windowed.shape == whole.shape == (3, spec.audio.mel_bins, spec.audio.target_length)
    np.testing.assert_allclose(windowed.astype(np.float32), whole, atol=2e-2)   # float16 shipping


PEAK_SCRIPT = textwrap.dedent("""
    import resource, sys
    from raybind.data.decode import decode_media
    from raybind.config import validate
    from raybind.data.pipeline import decode_spec
    cfg = validate({"name": "h", "data": {"train": "x.jsonl", "modalities": ["audio"]}})
    spec = decode_spec(cfg, sys.argv[1], "", ["audio"])
    decode_media("audio", sys.argv[1], spec)   # warm: imports, FFmpeg, the mel filters
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(2):
        value = decode_media("audio", sys.argv[2], spec)
    print(value.shape[0], (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
""")


def test_an_hours_long_audio_file_is_kept_and_its_decode_memory_does_not_grow_with_duration(tmp_path):
    for hours in (1, 3):
        _write_flac(tmp_path / f"{hours}h.flac", hours * 3600)
    growth = {}
    for hours in (1, 3):
        result = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(tmp_path / "1h.flac"),
                                 str(tmp_path / f"{hours}h.flac")], capture_output=True, text=True, check=True)
        chunks, growth[hours] = result.stdout.split()
        assert chunks == "3"   # kept: valid media, three windows
    # held whole, 3 h of 16 kHz float32 would be 660 MiB more than 1 h
    assert float(growth[3]) - float(growth[1]) < 16, growth


def test_an_output_inside_a_ray_job_package_is_refused_and_others_pass(tmp_path, monkeypatch):
    package = tmp_path / "session_1" / "runtime_resources" / "working_dir_files" / "_ray_pkg_abc"
    package.mkdir(parents=True)
    monkeypatch.chdir(package)
    with pytest.raises(InputError, match=r"storage: \./runs resolves to .*_ray_pkg_abc/runs, inside the Ray job's "
                                         r"working-dir package.*absolute path or s3://"):
        storage.durable_output("./runs", "storage")
    assert storage.durable_output(str(tmp_path / "runs"), "storage") == str(tmp_path / "runs")
    assert storage.durable_output("s3://bucket/runs", "storage") == "s3://bucket/runs"


def test_a_job_outputs_refusal_exits_2_naming_the_field(tmp_path):
    package = tmp_path / "runtime_resources" / "working_dir_files" / "_ray_pkg_1"
    package.mkdir(parents=True)
    result = subprocess.run([sys.executable, "-m", "raybind", "build", "--config",
                             os.path.abspath("configs/quickstart.yaml"), "--input", str(tmp_path / "m.jsonl"),
                             "--output", "built"], cwd=package, capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert "--output: built resolves to" in result.stderr and "working-dir package" in result.stderr
    assert "Traceback" not in result.stderr   # the message is the whole story


def test_frames_above_the_pixel_limit_are_refused_before_decoding(media, monkeypatch):
    from raybind.data import media as media_module

    clip = media.video("wide.mp4", frames=8, height=48, width=64)
    monkeypatch.setattr(media_module, "MAX_FRAME_PIXELS", 64 * 48 - 1)   # this clip is one pixel over
    with pytest.raises(media_module.MediaError, match="frames of 64x48 exceed"):
        media_module.decode_video(str(clip), 4, 32)


def _proxied(s3_server: str, **faults) -> tuple[FaultProxy, str]:
    host, port = s3_server.removeprefix("http://").split(":")
    proxy = FaultProxy(host, int(port), seed=1, **faults)
    return proxy, proxy.start()


def test_transient_storage_faults_are_retried_and_a_read_that_keeps_failing_is_quarantined(s3_bucket, tmp_path):
    """Through the fault proxy: every request to the object is reset or throttled (503) on its first 8 tries,
    and the read still returns the object; a store that always throttles ends in `unreadable after N tries`."""
    client, bucket, _ = s3_bucket
    client.put_object(Bucket=bucket, Key="clip.bin", Body=b"x" * 5000)
    moto = s3_bucket[2].split("endpoint_override=")[1].split("&")[0]
    for faults, attempts in ((8, 6), (10_000, 2)):
        proxy, endpoint = _proxied(moto, reset=0.5, slow_down=0.5, faults_per_request=faults)
        try:
            uri = f"s3://{bucket}/clip.bin?region=us-east-1&scheme=http&endpoint_override={endpoint[len('http://'):]}"
            if faults == 8:
                assert read_media(uri, retry=(attempts, 0.01)) == b"x" * 5000
                assert proxy.counts["reset"] > 0 and proxy.counts["slow_down"] > 0, proxy.counts
            else:
                with pytest.raises(RowFailed, match="unreadable after 2 tries: .*AWS Error"):
                    read_media(uri, retry=(attempts, 0.01))
                # a job whose media storage answers nothing but 503s stops at start, naming it
                manifest = tmp_path / "m.jsonl"
                manifest.write_text(json.dumps({"id": "a", "text": "t", "video": uri}) + "\n")
                with pytest.raises(InputError, match=r"cannot reach the media storage: s3://.*/clip.bin.*'video' of "
                                                     r"the first row of .*m.jsonl\): .*AWS Error"):
                    check_media_storage(manifest_files(str(manifest)), ["video"])
        finally:
            proxy.stop()


def test_a_retry_burst_logs_one_line_when_it_starts_and_one_when_it_ends(caplog):
    errors = iter([ConnectionResetError("reset by peer"), OSError("AWS Error SLOW_DOWN: 503")])

    def flaky() -> bytes:
        error = next(errors, None)
        if error is not None:
            raise error
        return b"ok"

    with caplog.at_level("WARNING", logger="raybind.storage"):
        assert storage.with_retries(flaky, "s3://b/k?secret_key=hush", 3, 0.0) == b"ok"
    lines = [r.getMessage() for r in caplog.records if r.name == "raybind.storage"]
    assert lines == ["s3://b/k?secret_key=%2A%2A%2A: reset by peer; retrying, up to 3 tries",
                     "s3://b/k?secret_key=%2A%2A%2A: read after 3 tries"]
    with pytest.raises(FileNotFoundError):   # what is (not) there is never retried
        storage.with_retries(lambda: open("/nonexistent/x", "rb"), "/nonexistent/x", 3, 0.0)
