"""The speed benchmarks' reference implementations compute what ours compute (else a ratio means nothing)."""

import numpy as np
import pytest

from hiast import pseudo, speed


def test_official_way_of_the_ias_step_agrees_with_ours_on_float16_exact_confidences():
    rng = np.random.default_rng(0)
    conf = (rng.integers(0, 1025, size=(2, 16, 32)) / 1024).astype(np.float32)   # exact in float16
    pred = rng.integers(0, 5, size=(2, 16, 32)).astype(np.uint8)
    state = pseudo.IASState(6, 0.5, 0.9, 8.0)
    mean_conf, thresholds = np.zeros(6), np.full(6, 0.9)
    loop_mean, loop_thresholds = np.zeros(6), np.full(6, 0.9)
    for _ in range(3):
        step = state.step(conf, pred)
        thresholds, labels, mean_conf, counts = speed.official_ias_step(thresholds, conf, pred, 0.5, 0.9, 8.0,
                                                                        mean_conf)
        # the official stores the instance thresholds in float32: equal up to that rounding
        np.testing.assert_allclose(step.thresholds, thresholds, rtol=0, atol=1e-7)
        np.testing.assert_allclose(step.class_mean_conf, mean_conf, rtol=1e-6)
        loop_thresholds, loop_labels, loop_mean, loop_counts = speed.numpy_loop_ias_step(
            loop_thresholds, conf, pred, 0.5, 0.9, 8.0, loop_mean)
        assert np.array_equal(step.thresholds, loop_thresholds)      # float64 all along: bit for bit
        assert np.array_equal(step.labels, loop_labels) and np.array_equal(step.pixel_counts, loop_counts)
        assert np.array_equal(counts, loop_counts) or not np.array_equal(labels, loop_labels)
        np.testing.assert_allclose(step.class_mean_conf, loop_mean, rtol=1e-12)
        conf = np.flip(conf, 0).copy()


def test_instance_arrays_look_like_model_outputs():
    conf, pred = speed.instance_arrays(32, 64, seed=1)
    assert conf.dtype == np.float32 and pred.dtype == np.uint8 and conf.shape == pred.shape == (2, 32, 64)
    assert conf.min() >= 1 / 19 - 1e-6 and conf.max() == 1.0
    assert 0.1 < (conf == 1).mean() < 0.2
    assert np.bincount(pred.reshape(-1), minlength=19).argmax() == 0     # road is the most frequent class
    with pytest.raises(ValueError, match="num_classes"):
        speed.instance_arrays(4, 4, num_classes=30)


def test_stage_benchmarks_run_on_the_tiny_benchmark(tiny_benchmark, tmp_path):
    from fixtures import tiny_scenario
    scenario = tiny_scenario(tiny_benchmark)
    result = speed.pseudo_stage_speed(scenario, tmp_path / "p")
    assert result["images"] == 8 and result["inference_size"] == [48, 96]
    assert result["forward_images_per_s"] > 0 and result["stage_images_per_s"] > 0
    assert (tmp_path / "p" / "pseudo_labels_2.h5").is_file()          # the stage really ran, three times
    train = speed.train_step_speed(scenario, tmp_path / "t", iterations=2)
    assert train["iteration_s"] > 0 and train["bare_fwd_bwd_s"] > 0
    assert train["ratio"] == pytest.approx(train["iteration_s"] / train["bare_fwd_bwd_s"])
    assert {"data_loading_s", "teacher_forward_s", "ema_s", "full_objective_fwd_bwd_s"} <= set(train)
