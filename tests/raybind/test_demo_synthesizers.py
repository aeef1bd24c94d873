"""The demo's depth and thermal synthesizers: fitted to the scenes' ground truth, saved as real weights are."""

import numpy as np
import pytest

from raybind.config import SynthesisSettings
from raybind.data.demo_data import BACKGROUND_DEPTH_M, OBJECT_DEPTH_M, OBJECT_HEAT
from raybind.data.demo_synthesizers import _training_frames, fit_demo_synthesizers
from raybind.data.synthesis import load_synthesizer


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_fitted_synthesizers_load_like_real_weights_and_show_the_object(tmp_path):
    paths = fit_demo_synthesizers(tmp_path, seed=0, frames=128)   # the demo's own number of steps
    assert (tmp_path / "synthesizers" / "depth" / "config.json").is_file()  # a transformers folder
    depth_model = load_synthesizer("depth", SynthesisSettings(model=paths["depth"]), "cpu")
    thermal_model = load_synthesizer("thermal", SynthesisSettings(model=paths["thermal"]), "cpu")  # weights-only
    rgb, depth, heat = _training_frames(24, 96, 64, seed=123)  # scenes the fit never saw
    on_object = depth < BACKGROUND_DEPTH_M - 0.5
    predicted_depth = depth_model(rgb)
    predicted_heat = thermal_model(rgb)[..., 0].astype(np.float32)
    # the object stands out: nearer than the background in the depth maps, hotter in the thermal ones
    assert predicted_depth[on_object].mean() < predicted_depth[~on_object].mean() - 0.5
    assert predicted_heat[on_object].mean() > predicted_heat[~on_object].mean() + 20
    # and its colour shows, as the captions need: the four colours' objects keep their order in distance
    # and heat (fits with a constant rate, or with L1 under one thread, put three of the four at one distance)
    by_depth = sorted(OBJECT_DEPTH_M, key=OBJECT_DEPTH_M.get)
    by_heat = sorted(OBJECT_HEAT, key=OBJECT_HEAT.get)
    depth_of = [predicted_depth[np.isclose(depth, OBJECT_DEPTH_M[c])].mean() for c in by_depth]
    heat_of = [predicted_heat[np.isclose(depth, OBJECT_DEPTH_M[c])].mean() for c in by_heat]
    assert all(b - a > 0.3 for a, b in zip(depth_of, depth_of[1:])), dict(zip(by_depth, depth_of))
    assert all(b - a > 10 for a, b in zip(heat_of, heat_of[1:])), dict(zip(by_heat, heat_of))
