"""The job's own console lines: progress per log step, a table when new validation results arrive."""

from raybind.console import ProgressLines


def _report(step: int, **extra) -> dict:
    return {"step": step, "loss/video": 3.2 - step / 100, "loss/audio": 3.4, "samples_per_s": 51.25,
            "data_wait_frac": 0.125, **extra}


def test_one_line_per_report_with_losses_rate_wait_and_eta():
    lines = ProgressLines(200, ("video", "audio"))
    assert lines.lines(_report(10), now=100.0) == [
        "step  10/200  loss video 3.100 audio 3.400  51.2 samples/s  data wait 12%"]
    # 10 steps took 20 s: 180 steps to go -> 360 s
    assert lines.lines(_report(20), now=120.0) == [
        "step  20/200  loss video 3.000 audio 3.400  51.2 samples/s  data wait 12%  ETA 6m00s"]
    assert "ETA" not in lines.lines(_report(200), now=500.0)[0]


def test_validation_table_only_when_results_change():
    lines = ProgressLines(100, ("video", "audio"))
    val = {"val_r1/video": 0.25, "val_r5/video": 0.5, "val_r10/video": 0.75, "val_loss/video": 2.5,
           "val_r1/audio": 0.125, "val_r5/audio": 0.375, "val_r10/audio": 0.625, "val_loss/audio": 2.75}
    first = lines.lines(_report(10, val_step=0, **val), now=0.0)
    assert first[1].strip() == "validation before training:"
    assert first[2].split() == ["tower", "R@1", "R@5", "R@10", "loss"]
    assert first[3].split() == ["video", "0.250", "0.500", "0.750", "2.500"]
    assert first[4].split() == ["audio", "0.125", "0.375", "0.625", "2.750"]
    assert len(lines.lines(_report(20, val_step=0, **val), now=1.0)) == 1  # same results: no table again
    changed = lines.lines(_report(30, val_step=30, **{**val, "val_r1/video": 0.5}), now=2.0)
    assert changed[1].strip() == "validation at step 30:" and len(changed) == 5
