"""Decoding real encoded files (no Ray)."""

import struct

import numpy as np
import pytest

from raybind.data.media import MediaError, decode_audio, decode_depth, decode_image, decode_video, sample_indices
from raybind.data.media_encode import write_video
from tests.raybind.conftest import moving_frames


@pytest.mark.parametrize("name", ["clip.mp4", "clip.avi"])
def test_video_frames_sampled_uniformly_and_resized(media, name):
    path = media.video(name, frames=24, height=48, width=64)
    frames = decode_video(str(path), 8, 32)
    assert frames.shape == (8, 32, 32, 3) and frames.dtype == np.uint8
    # the red block moves right: its centre of mass must increase over the sampled frames
    red = (frames[..., 0] > 180) & (frames[..., 1] < 100)
    xs = [np.nonzero(r)[1].mean() for r in red]
    assert all(b >= a for a, b in zip(xs, xs[1:])) and xs[-1] > xs[0]


def test_portrait_video_is_centre_cropped_square(tmp_path):
    """A 48x96 portrait clip keeps its middle 48x48 square: top and bottom bands are cut, not squeezed in."""
    frames = np.zeros((10, 96, 48, 3), np.uint8)
    frames[:, :24], frames[:, 24:72], frames[:, 72:] = (250, 0, 0), (0, 250, 0), (0, 0, 250)   # red, green, blue
    out = decode_video(str(write_video(tmp_path / "portrait.mp4", frames, fps=10)), 4, 24)
    assert out.shape == (4, 24, 24, 3)
    inner = out[:, 2:-2, 2:-2].reshape(-1, 3).astype(int)   # away from the crop's edges (codec blur)
    assert (inner[:, 1] > 200).all() and (inner[:, 0] < 60).all() and (inner[:, 2] < 60).all()


@pytest.mark.parametrize("rotate", [0, 90, 180, 270])
def test_rotated_video_is_decoded_as_displayed(tmp_path, rotate):
    """A phone clip stored landscape with a rotation tag comes out upright, as players show it."""
    frames = np.zeros((6, 48, 96, 3), np.uint8)
    frames[:, :, :48], frames[:, :, 48:] = (250, 0, 0), (0, 0, 250)  # stored: left half red, right half blue
    path = write_video(tmp_path / f"rot{rotate}.mp4", frames, fps=6, rotate=rotate)
    out = decode_video(str(path), 2, 32)
    assert out.shape == (2, 32, 32, 3)
    top, bottom, left, right = (out[0, 4, 16], out[0, 27, 16], out[0, 16, 4], out[0, 16, 27])
    red = {0: left, 90: top, 180: right, 270: bottom}[rotate]    # where the stored left edge is displayed
    blue = {0: right, 90: bottom, 180: left, 270: top}[rotate]
    assert red[0] > 200 and red[2] < 50, (rotate, red)
    assert blue[2] > 200 and blue[0] < 50, (rotate, blue)


def test_variable_frame_rate_is_sampled_uniformly_in_time(tmp_path):
    """15 frames in the first half second, then one a second: index-uniform sampling would take three
    of five samples from the burst (frames 0, 5, 10, 14, 19); uniform in time it takes one."""
    times = [i / 30 for i in range(15)] + [0.5 + i for i in range(5)]
    frames = np.stack([np.full((48, 64, 3), i * 12, np.uint8) for i in range(20)])  # brightness = 12 x index
    path = write_video(tmp_path / "vfr.mp4", frames, fps=30, frame_times=times)
    out = decode_video(str(path), 5, 32)
    assert [int(round(f.mean() / 12)) for f in out] == [0, 16, 17, 18, 19]
    constant = write_video(tmp_path / "cfr.mp4", frames, fps=30)
    assert [int(round(f.mean() / 12)) for f in decode_video(str(constant), 5, 32)] == sample_indices(20, 5).tolist()


def test_rotation_needs_an_mp4_and_a_right_angle(tmp_path):
    frames = np.zeros((2, 16, 16, 3), np.uint8)
    with pytest.raises(ValueError, match="rotate=45"):
        write_video(tmp_path / "a.mp4", frames, fps=2, rotate=45)
    with pytest.raises(ValueError, match="rotate=90"):
        write_video(tmp_path / "a.avi", frames, fps=2, rotate=90)


def test_short_clip_repeats_frames(media):
    path = media.video("short.mp4", frames=3, seconds=0.3)
    frames = decode_video(str(path), 8, 32)
    assert frames.shape == (8, 32, 32, 3)
    assert np.array_equal(frames[0], frames[1]) and not np.array_equal(frames[0], frames[-1])
    assert sorted(set(sample_indices(3, 8).tolist())) == [0, 1, 2]


def test_container_overstating_frame_count_is_decoded_over_true_count(tmp_path):
    path = write_video(tmp_path / "lying.avi", moving_frames(20, 48, 64), fps=10)
    data = bytearray(path.read_bytes())
    for tag, offset in ((b"avih", 16), (b"strh", 32)):  # total frames / stream length fields
        struct.pack_into("<I", data, data.find(tag) + 8 + offset, 30)
    path.write_bytes(bytes(data))
    frames = decode_video(str(path), 8, 32)
    honest = decode_video(str(write_video(tmp_path / "honest.avi", moving_frames(20, 48, 64), fps=10)), 8, 32)
    assert frames.shape == (8, 32, 32, 3)
    np.testing.assert_allclose(frames.astype(int), honest.astype(int), atol=3)


@pytest.mark.parametrize("bad,reason", [(b"this is not a video", "cannot open as video"),
                                        (b"\x00" * 4096, "cannot open as video")])
def test_undecodable_video_raises_media_error(media, bad, reason):
    path = media.file("bad.mp4", bad)
    with pytest.raises(MediaError, match=reason):
        decode_video(str(path), 8, 32)


def test_truncated_mp4_is_an_error(media):
    path = media.video("cut.mp4", frames=30)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(MediaError):
        decode_video(str(path), 8, 32)


@pytest.mark.parametrize("name", ["a.wav", "a.flac", "a.ogg", "a.mp3"])
def test_audio_files_decode_to_mono_16k(media, name):
    wave = decode_audio(str(media.audio(name, seconds=1.5)), 16_000)
    assert wave.dtype == np.float32 and abs(len(wave) - 24_000) < 2_000
    spectrum = np.abs(np.fft.rfft(wave[2000:18000]))
    assert abs(np.argmax(spectrum) * 16_000 / 16_000 - 440) < 5  # the 440 Hz tone survives


def test_audio_track_of_mp4_and_missing_track(media):
    wave = decode_audio(str(media.video("with.mp4", audio=True)), 16_000)
    assert abs(len(wave) - 32_000) < 2_500
    with pytest.raises(MediaError, match="no audio track"):
        decode_audio(str(media.video("silent.mp4", audio=False)), 16_000)
    with pytest.raises(MediaError, match="cannot open as audio"):
        decode_audio(str(media.file("text.wav", b"hello")), 16_000)


def test_images_and_depth_files():
    import cv2

    ok, png = cv2.imencode(".png", np.full((30, 40, 3), 200, np.uint8))
    assert decode_image(png.tobytes(), 16).shape == (16, 16, 3)
    with pytest.raises(MediaError, match="cannot decode as image"):
        decode_image(b"garbage", 16)
    ok, png16 = cv2.imencode(".png", np.full((10, 12), 2500, np.uint16))
    np.testing.assert_allclose(decode_depth(png16.tobytes(), "d.png"), 2.5)
    import io

    buffer = io.BytesIO()
    np.save(buffer, np.full((5, 6), 3.0, np.float32))
    np.testing.assert_allclose(decode_depth(buffer.getvalue(), "d.npy"), 3.0)
