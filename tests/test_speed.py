"""The speed benchmarks' reference implementations compute what ours compute (else a ratio means nothing)."""

import numpy as np
import pytest
import torch

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


def test_stage_benchmarks_run_on_the_tiny_benchmark(tiny_benchmark, tmp_path, monkeypatch):
    from fixtures import tiny_scenario
    probe = speed.core_scaling
    monkeypatch.setattr(speed, "core_scaling", lambda: probe({"matmul": 2, "elementwise": 2}, rounds=1))
    scenario = tiny_scenario(tiny_benchmark)
    result = speed.pseudo_stage_speed(scenario, tmp_path / "p")
    assert result["images"] == 8 and result["inference_size"] == [48, 96]
    assert result["forward_images_per_s"] > 0 and result["stage_images_per_s"] > 0
    assert (tmp_path / "p" / "pseudo_labels_2.h5").is_file()          # the stage really ran, three times
    assert result["forward_streams"] == 1 and "forward_streamed_images_per_s" not in result
    assert result["ratio_stage_to_forward"] == pytest.approx(result["stage_images_per_s"] / result["forward_images_per_s"])
    assert result["baseline_forward"] == "intra_op" and set(result["cpu_s"]) == {"intra_op", "stage"}
    assert result["repeats"] == 3 and all(len(v) == 3 for v in result["samples_s"].values())
    samples = result["samples_s"]
    assert result["ratio_stage_to_forward_paired"] == pytest.approx(
        float(np.median([f / s for f, s in zip(samples["intra_op"], samples["stage"])])))
    assert result["cpu_s"]["stage"] == pytest.approx(float(np.median(result["cpu_samples_s"]["stage"])))
    assert result["cpu_s"]["stage"] > 0 and result["usable_cpus"] >= 1
    assert result["ratio_forward_cpu_to_stage_cpu"] == pytest.approx(result["cpu_s"]["intra_op"] / result["cpu_s"]["stage"])
    # CPU time of the process over wall time times its CPUs: never above 1 (small slack for clock reads)
    assert all(0 < share <= 1.05 for share in result["cpu_utilisation"].values())
    torch.set_num_threads(2)   # two single-threaded forwards side by side, timed against one on two threads
    try:
        two = speed.pseudo_stage_speed(scenario, tmp_path / "p2", model_path=tmp_path / "p" / "model.pt", repeats=2)
        with pytest.raises(ValueError, match="repeats"):
            speed.pseudo_stage_speed(scenario, tmp_path / "p3", model_path=tmp_path / "p" / "model.pt", repeats=0)
    finally:
        torch.set_num_threads(1)
    assert two["torch_threads"] == two["forward_streams"] == 2
    assert two["forward_images_per_s"] == max(two["forward_intra_op_images_per_s"],
                                              two["forward_streamed_images_per_s"])
    assert two["ratio_stage_to_forward"] == pytest.approx(two["stage_images_per_s"] / two["forward_images_per_s"])
    assert two["ratio_stage_to_intra_op_forward"] == pytest.approx(
        two["stage_images_per_s"] / two["forward_intra_op_images_per_s"])
    assert set(two["cpu_s"]) == {"intra_op", "streamed", "stage"} and two["repeats"] == 2
    pairs = [min(i, s) / t for i, s, t in zip(two["samples_s"]["intra_op"], two["samples_s"]["streamed"],
                                              two["samples_s"]["stage"])]
    assert two["ratio_stage_to_forward_paired"] == pytest.approx(float(np.median(pairs)))
    fastest = two["baseline_forward"]
    assert two[f"forward_{fastest}_images_per_s"] == two["forward_images_per_s"]
    assert two["ratio_forward_cpu_to_stage_cpu"] == pytest.approx(two["cpu_s"][fastest] / two["cpu_s"]["stage"])
    train = speed.train_step_speed(scenario, tmp_path / "t", iterations=2, repeats=2)
    assert all(len(v) == 2 for v in train["samples_s"].values())
    assert train["iteration_overlap_s"] == pytest.approx(float(np.median(train["samples_s"]["overlap"])))
    assert train["bare_fwd_bwd_s"] > 0   # the iteration is a difference of two timed rounds: no sign asserted
    assert train["student_objective_s"] == train[f"student_objective_{'fused' if train['fused_objective'] else 'taped'}_s"]
    assert train["ratio"] == pytest.approx(train["iteration_s"] / train["bare_fwd_bwd_s"])
    assert train["ratio_overlap"] == pytest.approx(train["iteration_overlap_s"] / train["bare_fwd_bwd_s"])
    assert train["iteration_s"] == train["iteration_serial_s" if not train["overlap"] else "iteration_overlap_s"]
    assert set(train["core_scaling"]) == set(speed.PROBE_WORKLOADS)
    assert {"data_loading_s", "teacher_forward_s", "ema_s", "full_objective_fwd_bwd_s", "student_objective_s"} <= set(train)
    profile = train["profile_objective_minus_bare_ms"]
    assert profile and {"op", "ms", "ms_in_step"} <= set(profile[0])


def test_profile_difference_names_the_operator_only_the_step_runs():
    """exp over 4M floats is in the step and not in the baseline: it tops the difference, with its whole time."""
    x = torch.rand(1 << 22)
    y = torch.rand(64, 64)

    def baseline(k):
        y @ y

    def step(k):
        y @ y
        torch.exp(x)

    rows = speed._profile_difference(step, baseline, iterations=3)
    assert rows[0]["op"] == "aten::exp"
    assert rows[0]["ms"] == rows[0]["ms_in_step"] > 0


def test_sharded_pseudo_labelling_benchmark_runs_real_commands_and_compares_bytes(tiny_benchmark, tmp_path):
    import yaml
    from fixtures import tiny_scenario_data
    scenario_file = tmp_path / "tiny.yaml"
    scenario_file.write_text(yaml.safe_dump(tiny_scenario_data(tiny_benchmark)))
    result = speed.shard_speed(scenario_file, tmp_path / "work", shards=2, threads=2)
    assert result["images"] == 8 and result["threads_per_shard"] == 1
    assert result["identical_to_one_process_same_threads"] is True
    assert result["sharded_total_s"] == pytest.approx(result["shard_inference_s"] + result["ias_pass_s"])
    assert result["speedup_over_one_process"] == pytest.approx(result["one_process_s"] / result["sharded_total_s"])
    assert sorted(p.name for p in (tmp_path / "work").glob("model_outputs_*.h5")) == ["model_outputs_0.h5",
                                                                                      "model_outputs_1.h5"]


def _benchmark_file(path, seconds, rss, cpu):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
                    f"{seconds}\t0:00:00\t{rss}\t1\t1\t1\t0\t0\t0\t{cpu}\n")


def test_rule_runtimes_gathers_the_run_wide_and_per_scenario_benchmark_files(tmp_path):
    _benchmark_file(tmp_path / "benchmarks" / "generate_synthetic.tsv", 100.0, 500.5, 190.0)
    _benchmark_file(tmp_path / "a" / "benchmarks" / "warmup.tsv", 300.0, 1200.0, 590.0)
    _benchmark_file(tmp_path / "a" / "benchmarks" / "self_train_1.tsv", 60.5, 900.0, 110.0)
    _benchmark_file(tmp_path / "b" / "benchmarks" / "warmup.tsv", 200.0, 1500.0, 390.0)
    table = speed.rule_runtimes(tmp_path)
    assert sorted(zip(table.scenario, table.rule)) == [("", "generate_synthetic"), ("a", "self_train_1"),
                                                       ("a", "warmup"), ("b", "warmup")]
    assert table.seconds.sum() == pytest.approx(660.5)
    text = speed.runtime_markdown(table)
    assert "| a | **total** | **360.5** | 1200 | 700.0 |" in text
    assert "| **all** | **total** | **660.5** (11.0 min) | **1500** | 1280.0 |" in text


def test_rule_runtimes_names_a_broken_file_and_an_empty_results_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no benchmarks"):
        speed.rule_runtimes(tmp_path)
    bad = tmp_path / "a" / "benchmarks" / "warmup.tsv"
    bad.parent.mkdir(parents=True)
    bad.write_text("nothing useful\n")
    with pytest.raises(ValueError, match="warmup.tsv: not a Snakemake benchmark file"):
        speed.rule_runtimes(tmp_path)


def test_core_scaling_times_one_process_then_two_together():
    result = speed.core_scaling({"matmul": 3, "elementwise": 2}, rounds=1)
    assert set(result) == set(speed.PROBE_WORKLOADS)
    for figures in result.values():
        assert figures["alone_s"] > 0 and figures["two_together_s"] > 0
        assert figures["throughput_of_two"] == pytest.approx(2 * figures["alone_s"] / figures["two_together_s"])


def test_cpu_info_reads_the_first_processors_model_and_kernel_flags():
    cpuinfo = ("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9R14\n"
               "flags\t\t: fpu sse avx2 avx512f avx512_bf16 avx512_vnni\n\n"
               "processor\t: 1\nmodel name\t: Other CPU\nflags\t\t: amx_tile amx_bf16\n")
    assert speed.cpu_info(cpuinfo) == {"cpu_model": "AMD EPYC 9R14", "cpu_flags": ["avx2", "avx512f", "avx512_bf16"]}
    intel = "model name : Intel Xeon\nflags : avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n"
    assert speed.cpu_info(intel)["cpu_flags"] == ["avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"]
    assert speed.cpu_info("") == {"cpu_model": None, "cpu_flags": []}


def test_machine_records_the_cpu_next_to_the_platform():
    record = speed.machine()
    assert {"platform", "cpus", "cpu_model", "cpu_flags", "torch"} <= set(record)
    assert record["cpu_flags"] is None or set(record["cpu_flags"]) <= set(speed.KERNEL_FLAGS)


def test_wall_and_cpu_counts_every_thread_and_the_children_waited_for():
    import subprocess
    import sys
    import threading

    def burn():
        total = 0
        for k in range(3_000_000):
            total += k * k
        return total

    def in_a_thread():       # the calling thread only waits: its own CPU time would read ~0
        worker = threading.Thread(target=burn)
        worker.start()
        worker.join()

    def in_a_child():        # likewise; the child's time is counted once it has been waited for
        subprocess.run([sys.executable, "-c", "sum(k * k for k in range(3_000_000))"], check=True)

    for fn in (in_a_thread, in_a_child):
        wall, cpu = speed.wall_and_cpu(fn)
        assert wall > 0 and 0.3 * wall < cpu <= 1.05 * wall * speed.usable_cpus(), fn.__name__
