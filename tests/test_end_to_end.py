"""A tiny round on generated data: warm-up -> pseudo-labels -> bank -> self-training -> evaluation."""

import numpy as np
import pandas as pd
import pytest
import torch

from hiast import engine, h5io, pseudo, stages
from hiast.checkpoint import Interrupted
from fixtures import DEVICE, tiny_scenario


def _target_data(scenario, out, rows):
    """The tiny run's round-1 self-training data (pseudo-labels + bank), opened afresh."""
    from hiast.selftrain import PseudoLabelledTarget
    return PseudoLabelledTarget(stages.prepare.dataset(scenario, rows), h5io.read_pseudo_labels(out / "pl.h5"),
                                h5io.read_instance_bank(out / "bank.h5"), scenario.rounds[0].bank, scenario.scale)


def _with_round_1(scenario, section: str, **changes):
    """The scenario with round 1's `section` (pseudo, bank or train) changed."""
    import dataclasses
    first = scenario.rounds[0]
    changed = dataclasses.replace(first, **{section: dataclasses.replace(getattr(first, section), **changes)})
    return dataclasses.replace(scenario, rounds=(changed,))


def test_pseudo_label_file(tiny_run):
    scenario, out, _ = tiny_run
    labels = h5io.read_pseudo_labels(out / "pl.h5", expected_count=8)
    assert labels.attrs["policy"] == "IAS" and labels.attrs["alpha"] == 0.5
    assert labels.all_labels().shape == (8, 48, 96)  # 0.75 x the 64x128 base size
    values = np.unique(labels.all_labels())
    assert set(values.tolist()) <= set(range(19)) | {255}
    assert labels.thresholds.shape == (8, 19)
    # each image's stored thresholds are the post-update thresholds of its instance (pairs of images)
    order = labels.instance_order
    for k, group in enumerate(order):
        for index in group[group >= 0]:
            np.testing.assert_allclose(labels.thresholds[index], labels.threshold_trajectory[k])


def test_bank_file(tiny_run):
    scenario, out, _ = tiny_run
    bank = h5io.read_instance_bank(out / "bank.h5")
    assert len(bank.hard_classes) == 5
    assert bank.sampling_prob.sum() == pytest.approx(1.0)
    assert (bank.sampling_prob[np.setdiff1d(np.arange(19), bank.hard_classes)] == 0).all()


def test_eval_table_and_outputs(tiny_run):
    scenario, out, table = tiny_run
    assert list(table.model) == ["student", "teacher"]
    assert list(table.columns[:2]) == ["model", "mIoU-19"] and "bicycle" in table.columns
    back = pd.read_csv(out / "eval.csv")
    assert back["mIoU-19"].between(0, 100).all()
    assert not (out / "tstate").exists()  # the resumable state is dropped once the outputs are written
    assert any((out / "masks" / "student").iterdir())


def test_self_training_resumes_to_identical_weights(tiny_run, tmp_path):
    """Stopped at iteration 2 and resumed, training ends with exactly the uninterrupted run's weights."""
    from hiast.selftrain import train_round
    scenario, out, _ = tiny_run
    rows = stages.target_train(scenario, out / "target.csv")
    cfg = scenario.rounds[0]

    def run(stop_after=None, state=None):
        data = _target_data(scenario, out, rows)
        student = stages.load_model(scenario, out / "warmup.pt")
        teacher, history = train_round(student, data, cfg.train, DEVICE, seed=5, state_path=state,
                                       stop_after=stop_after)
        return student, teacher, history

    student_a, teacher_a, history_a = run()
    state = tmp_path / "state.pt"
    with pytest.raises(Interrupted):
        run(stop_after=1, state=state)
    assert state.is_file()
    student_b, teacher_b, history_b = run(state=state)
    for a, b in zip(list(student_a.state_dict().values()) + list(teacher_a.state_dict().values()),
                    list(student_b.state_dict().values()) + list(teacher_b.state_dict().values())):
        assert torch.equal(a, b)
    assert history_a == history_b


def test_loader_workers_do_not_change_the_result(tiny_run):
    """Batches and augmentations are a function of (seed, iteration): 0 or 2 loader processes agree."""
    import dataclasses
    from hiast.selftrain import train_round
    scenario, out, _ = tiny_run
    rows = stages.target_train(scenario, out / "target.csv")
    cfg = scenario.rounds[0]
    weights = []
    for workers in (0, 2):
        data = _target_data(scenario, out, rows)
        student = stages.load_model(scenario, out / "warmup.pt")
        train_round(student, data, dataclasses.replace(cfg.train, iterations=2, workers=workers), DEVICE, seed=3)
        weights.append(student.state_dict())
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key


@pytest.mark.parametrize("threads", [1, 2])
def test_overlap_does_not_change_the_result(tiny_run, threads):
    """train.overlap (next batch loaded in a thread, teacher forward beside the student's) gives the serial
    loop's weights, teacher and loss history bit for bit, at one and at two torch threads."""
    import dataclasses
    from hiast.selftrain import train_round
    scenario, out, _ = tiny_run
    rows = stages.target_train(scenario, out / "target.csv")
    cfg = scenario.rounds[0]
    assert cfg.train.consistency_weight > 0   # else the teacher thread is not exercised
    runs = []
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for overlap in (False, True):
            data = _target_data(scenario, out, rows)
            student = stages.load_model(scenario, out / "warmup.pt")
            teacher, history = train_round(student, data, dataclasses.replace(cfg.train, iterations=3, overlap=overlap),
                                           DEVICE, seed=3)
            runs.append((student.state_dict(), teacher.state_dict(), history))
    finally:
        torch.set_num_threads(previous)
    (student_a, teacher_a, history_a), (student_b, teacher_b, history_b) = runs
    for key in student_a:
        assert torch.equal(student_a[key], student_b[key]), key
        assert torch.equal(teacher_a[key], teacher_b[key]), key
    assert history_a == history_b and len(history_a["loss"]) == 3


def test_fused_objective_trains_as_the_taped_one(tiny_run):
    """train.fused_objective through a round: the loss history and weights of the official way of adding the
    terms, up to float32 rounding (the sums are the same, their order is not)."""
    import dataclasses
    from hiast.selftrain import train_round
    scenario, out, _ = tiny_run
    rows = stages.target_train(scenario, out / "target.csv")
    cfg = scenario.rounds[0].train
    runs = []
    for fused in (False, True):
        student = stages.load_model(scenario, out / "warmup.pt")
        teacher, history = train_round(student, _target_data(scenario, out, rows),
                                       dataclasses.replace(cfg, iterations=3, fused_objective=fused), DEVICE, seed=3)
        runs.append((student.state_dict(), history))
    (taped, history_taped), (fused, history_fused) = runs
    assert history_fused.keys() == history_taped.keys() == {"loss", "ce", "kld", "entropy", "consistency"}
    for key in history_taped:
        assert history_fused[key] == pytest.approx(history_taped[key], rel=1e-4), key
    initial = stages.load_model(scenario, out / "warmup.pt").state_dict()
    moved = 0
    for key in taped:
        if taped[key].is_floating_point():
            torch.testing.assert_close(fused[key], taped[key], rtol=1e-4, atol=1e-6)
            moved += not torch.equal(taped[key], initial[key])
    assert moved > 0


def test_overlap_interrupted_then_resumed_matches_serial(tiny_run, tmp_path):
    """An overlapped run stopped at iteration 1 (the prefetch thread and the teacher thread are shut down
    mid-stream) resumes to the uninterrupted serial run's weights."""
    import dataclasses
    import threading
    from hiast.selftrain import train_round
    scenario, out, _ = tiny_run
    rows = stages.target_train(scenario, out / "target.csv")
    cfg = scenario.rounds[0]

    def run(overlap, stop_after=None, state=None):
        data = _target_data(scenario, out, rows)
        student = stages.load_model(scenario, out / "warmup.pt")
        train_round(student, data, dataclasses.replace(cfg.train, iterations=3, overlap=overlap), DEVICE, seed=4,
                    state_path=state, stop_after=stop_after)
        return student.state_dict()

    serial = run(False)
    state = tmp_path / "state.pt"
    with pytest.raises(Interrupted):
        run(True, stop_after=1, state=state)
    assert not [t for t in threading.enumerate() if t.name.startswith(("hiast-prefetch", "hiast-teacher"))]
    resumed = run(True, state=state)
    for key in serial:
        assert torch.equal(serial[key], resumed[key]), key


@pytest.mark.parametrize("policy, extra", [("NT", {}), ("CT", {"ct_threshold": 0.5}), ("CBST", {"cbst_p": 0.5})])
def test_other_policies_through_the_stage(tiny_run, policy, extra):
    """NT keeps every argmax; CT one constant threshold; CBST one threshold per class for the whole round
    (the p-quantile of the class's confidences). Checked against the model's own outputs."""
    scenario, out, _ = tiny_run
    rounds = [{"pseudo": {"policy": policy, **extra}, "bank": {"num_hard": 5},
               "train": {"iterations": 4, "batch_size": 2}}]
    variant = tiny_scenario(out.parent / "none", rounds=rounds, source=scenario.source.__dict__,
                            target=scenario.target.__dict__)
    path = out / f"pl_{policy}.h5"
    stages.pseudo_labels(variant, 1, out / "warmup.pt", out / "target.csv", path, DEVICE)
    stored = h5io.read_pseudo_labels(path, expected_count=8)
    assert stored.attrs["policy"] == policy
    thresholds = stored.thresholds
    assert (thresholds == thresholds[0]).all()    # not adaptive: one set for every image
    model = stages.load_model(variant, out / "warmup.pt").eval()
    rows = stages.target_train(variant, out / "target.csv")
    data = stages.prepare.dataset(variant, rows)
    conf, pred = stages.infer(model, data, range(len(rows)), variant.sized(0.75), DEVICE)
    if policy == "NT":
        np.testing.assert_array_equal(thresholds[0], 0)
        np.testing.assert_array_equal(stored.all_labels(), pred.numpy())
    elif policy == "CT":
        np.testing.assert_array_equal(thresholds[0], np.float32(0.5))
        expected = np.where(conf.numpy() >= 0.5, pred.numpy(), 255)
        np.testing.assert_array_equal(stored.all_labels(), expected)
    else:
        expected = pseudo.select(conf.double(), pred, torch.as_tensor(thresholds[0], dtype=torch.float64))
        np.testing.assert_array_equal(stored.all_labels(), expected.numpy())
        # each predicted class keeps about (1 - p) = half of its pixels (quantile of its confidences)
        labelled = (stored.all_labels() != 255).sum() / stored.all_labels().size
        assert 0.4 < labelled < 0.7


def test_sharded_inference_gives_byte_identical_labels_and_thresholds(tiny_run):
    """Two inference shards, then the sequential IAS pass over their stored outputs == one process."""
    import h5py
    scenario, out, _ = tiny_run
    rounds = [{"pseudo": {"alpha": 0.5, "shards": 2}, "bank": {"num_hard": 5},
               "train": {"iterations": 4, "batch_size": 2}}]
    sharded = tiny_scenario(out.parent / "none", rounds=rounds, source=scenario.source.__dict__,
                            target=scenario.target.__dict__)
    shard_paths = [out / f"outputs_{k}.h5" for k in range(2)]
    for k, path in enumerate(shard_paths):
        stages.pseudo_shard(sharded, 1, out / "warmup.pt", out / "target.csv", k, path, DEVICE)
    assert sorted(np.concatenate([h5io.read_model_outputs(p).image_index for p in shard_paths]).tolist()) == \
        list(range(8))
    stages.pseudo_labels(sharded, 1, out / "warmup.pt", out / "target.csv", out / "pl_sharded.h5", DEVICE,
                         shard_paths=shard_paths)
    with h5py.File(out / "pl.h5") as one, h5py.File(out / "pl_sharded.h5") as two:
        for name in ("labels", "thresholds", "pixel_counts", "threshold_trajectory", "instance_order"):
            assert one[name][()].tobytes() == two[name][()].tobytes(), name
        assert one.attrs["class_mean_conf"].tobytes() == two.attrs["class_mean_conf"].tobytes()
    # outputs of another model or manifest, or the shards in the wrong order, are refused
    with pytest.raises(ValueError, match="expected shard 0"):
        stages.pseudo_labels(sharded, 1, out / "warmup.pt", out / "target.csv", out / "x.h5", DEVICE,
                             shard_paths=shard_paths[::-1])
    with pytest.raises(h5io.H5FormatError, match="model"):
        stages.pseudo_labels(sharded, 1, out / "student.pt", out / "target.csv", out / "x.h5", DEVICE,
                             shard_paths=shard_paths)
    assert not (out / "x.h5").exists()


def test_loader_workers_for_pseudo_labels_change_nothing(tiny_run):
    """Images decoded ahead by 2 loader processes: byte-identical labels and thresholds."""
    import h5py
    scenario, out, _ = tiny_run
    rounds = [{"pseudo": {"alpha": 0.5, "workers": 2}, "bank": {"num_hard": 5}, "train": {"iterations": 4}}]
    variant = tiny_scenario(out.parent / "none", rounds=rounds, source=scenario.source.__dict__,
                            target=scenario.target.__dict__)
    stages.pseudo_labels(variant, 1, out / "warmup.pt", out / "target.csv", out / "pl_workers.h5", DEVICE)
    with h5py.File(out / "pl.h5") as one, h5py.File(out / "pl_workers.h5") as two:
        for name in ("labels", "thresholds", "pixel_counts"):
            assert one[name][()].tobytes() == two[name][()].tobytes(), name


def test_pseudo_labels_decoded_ahead_in_a_thread_change_nothing(tiny_run, tmp_path, monkeypatch):
    """With a free CPU the images are decoded by a background thread (engine.prefetched), without one in
    the loop itself: byte-identical labels, thresholds and counts either way."""
    import h5py
    scenario, out, _ = tiny_run
    calls = []
    real_prefetched = engine.prefetched

    def counted(*args, **kwargs):
        calls.append(kwargs.get("nice"))
        return real_prefetched(*args, **kwargs)

    monkeypatch.setattr(engine, "prefetched", counted)
    arrays = {}
    for spare in (False, True):
        monkeypatch.setattr(engine, "spare_core", lambda spare=spare: spare)
        path = tmp_path / f"pl_{spare}.h5"
        stages.pseudo_labels(scenario, 1, out / "warmup.pt", out / "target.csv", path, DEVICE)
        with h5py.File(path) as f:
            arrays[spare] = {name: f[name][()].tobytes() for name in ("labels", "thresholds", "pixel_counts")}
        assert calls == ([engine.LOADER_NICE] if spare else []), "the thread decodes only where a CPU is free"
    assert arrays[False] == arrays[True]


def test_pseudo_labels_are_the_same_at_any_thread_count(tiny_run, tmp_path):
    """On a CPU the labeller runs one single-threaded forward per torch thread (stages.forward_streams), so
    the labels, thresholds and counts at 2 and 3 threads are those of 1 thread, byte for byte."""
    import h5py
    scenario, out, _ = tiny_run
    assert stages.forward_streams(torch.device("cuda")) == 1  # a GPU runs one forward at a time
    arrays = {}
    previous = torch.get_num_threads()
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            assert stages.forward_streams(DEVICE) == threads
            path = tmp_path / f"pl_{threads}.h5"
            stages.pseudo_labels(scenario, 1, out / "warmup.pt", out / "target.csv", path, DEVICE)
            assert torch.get_num_threads() == threads  # restored after the stage
            with h5py.File(path) as f:
                arrays[threads] = {name: f[name][()].tobytes() for name in ("labels", "thresholds", "pixel_counts")}
    finally:
        torch.set_num_threads(previous)
    assert arrays[1] == arrays[2] == arrays[3]


def test_oracle_trains_on_target_labels_and_evaluates(tiny_run, tmp_path):
    scenario, out, _ = tiny_run
    table = stages.oracle(scenario, out / "target.csv", tmp_path / "oracle.pt", tmp_path / "oracle_eval.csv",
                          tmp_path / "state", DEVICE)
    assert list(table.model) == ["oracle"] and 0 <= table["mIoU-19"].iloc[0] <= 100
    assert (tmp_path / "oracle.pt").is_file() and not (tmp_path / "state").exists()
    back = pd.read_csv(tmp_path / "oracle_eval.csv")
    assert back["mIoU-19"].iloc[0] == pytest.approx(table["mIoU-19"].iloc[0], abs=1e-4)


def test_source_term_through_the_stage(tiny_run, tmp_path):
    """train.source_weight > 0 (not in the official recipe) adds a CE on labelled source batches: it needs the
    source manifest, logs a "source" term, leaves the target batches as they were (same first-iteration CE
    from the same start) and changes the weights; 0 reads no source."""
    import dataclasses
    from hiast.selftrain import train_round
    from hiast.supervised import Augmented
    scenario, out, _ = tiny_run
    with_source = _with_round_1(scenario, "train", iterations=3, source_weight=1.0)
    with pytest.raises(ValueError, match=r"rounds\[0\].train.source_weight = 1.0 needs the source manifest"):
        stages.self_train(with_source, 1, out / "warmup.pt", out / "pl.h5", out / "bank.h5", out / "target.csv",
                          tmp_path / "s.pt", tmp_path / "t.pt", tmp_path / "state", DEVICE)
    assert not (tmp_path / "s.pt").exists()

    rows = stages.target_train(scenario, out / "target.csv")
    source_rows = stages.prepare.split_rows(stages.read_manifest(out / "source.csv"), scenario.source, "train",
                                            scenario.seed)
    source = Augmented(stages.prepare.dataset(scenario, source_rows), scenario.crop_view("source"))
    runs = {}
    for weight in (0.0, 1.0):
        data = _target_data(scenario, out, rows)
        student = stages.load_model(scenario, out / "warmup.pt")
        cfg = dataclasses.replace(scenario.rounds[0].train, iterations=3, source_weight=weight)
        _, history = train_round(student, data, cfg, DEVICE, seed=5, source=source if weight else None)
        runs[weight] = (student.state_dict(), history)
    assert "source" not in runs[0.0][1] and len(runs[1.0][1]["source"]) == 3
    assert all(np.isfinite(runs[1.0][1]["source"]))
    assert runs[1.0][1]["ce"][0] == pytest.approx(runs[0.0][1]["ce"][0], rel=1e-6)
    assert runs[1.0][1]["loss"][0] == pytest.approx(runs[0.0][1]["loss"][0] + runs[1.0][1]["source"][0], rel=1e-5)
    assert any(not torch.equal(runs[0.0][0][k], runs[1.0][0][k]) for k in runs[0.0][0])

    stages.self_train(with_source, 1, out / "warmup.pt", out / "pl.h5", out / "bank.h5", out / "target.csv",
                      tmp_path / "s.pt", tmp_path / "t.pt", tmp_path / "state", DEVICE,
                      source_manifest=out / "source.csv")
    assert (tmp_path / "s.pt").is_file() and (tmp_path / "t.pt").is_file()


def _bn_buffers(model) -> dict:
    return {name: value for name, value in model.state_dict().items()
            if name.endswith(("running_mean", "running_var", "num_batches_tracked"))}


def _conv_weights(model) -> dict:
    return {name: value for name, value in model.state_dict().items() if name.endswith("conv1.weight")}


@pytest.mark.parametrize("mode", ["student", "frozen"])
def test_bn_statistics_frozen_or_updated_by_the_student(tiny_run, mode):
    """train.bn_statistics: "frozen" keeps the initial model's running statistics in student and teacher while
    the weights train; "student" (the official code) updates them."""
    import dataclasses
    from hiast.selftrain import train_round
    scenario, out, _ = tiny_run
    rows = stages.target_train(scenario, out / "target.csv")
    initial = stages.load_model(scenario, out / "warmup.pt")
    student = stages.load_model(scenario, out / "warmup.pt")
    cfg = dataclasses.replace(scenario.rounds[0].train, iterations=2, bn_statistics=mode)
    teacher, _ = train_round(student, _target_data(scenario, out, rows), cfg, DEVICE, seed=3)
    before = _bn_buffers(initial)
    assert before
    for model in (student, teacher):
        after = _bn_buffers(model)
        unchanged = [torch.equal(before[name], after[name]) for name in before]
        assert all(unchanged) if mode == "frozen" else not any(unchanged)
    for name, weight in _conv_weights(initial).items():
        assert not torch.equal(weight, student.state_dict()[name]), name     # the weights did train
    norms_training = {m.training for m in student.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}
    assert student.training and norms_training == {mode == "student"}


def test_bn_statistics_target_through_the_stage(tiny_run, tmp_path):
    """train.bn_statistics: "target" starts the round from the model's statistics re-estimated on target
    train crops (AdaBN, as `hiast bench adabn` does) and keeps them: the saved student's and teacher's running
    statistics are those of the warm-up adapted by hand."""
    from hiast import adabn
    scenario, out, _ = tiny_run
    rows = stages.target_train(scenario, out / "target.csv")
    variant = _with_round_1(scenario, "train", iterations=2, bn_statistics="target")
    stages.self_train(variant, 1, out / "warmup.pt", out / "pl.h5", out / "bank.h5", out / "target.csv",
                      tmp_path / "s.pt", tmp_path / "t.pt", tmp_path / "state", DEVICE)
    by_hand = stages.load_model(scenario, out / "warmup.pt")
    assert adabn.adapt(by_hand, scenario, rows, DEVICE, scenario.seed) == len(rows)   # fewer than 400 images
    expected, as_saved = _bn_buffers(by_hand), _bn_buffers(stages.load_model(scenario, out / "warmup.pt"))
    assert not torch.equal(expected["backbone.bn1.running_mean"], as_saved["backbone.bn1.running_mean"])
    for path in (tmp_path / "s.pt", tmp_path / "t.pt"):
        saved = _bn_buffers(stages.load_model(scenario, path))
        for name in expected:
            assert torch.equal(saved[name], expected[name]), (path.name, name)


def test_pseudo_bn_statistics_target_labels_with_the_adapted_model(tiny_run, tmp_path):
    """pseudo.bn_statistics: "target" labels with the model's statistics re-estimated on target train crops:
    byte-identical to labelling, as saved, a copy of the model adapted by hand; different from the as-saved
    labeller's thresholds."""
    import h5py
    from hiast import adabn
    from hiast.model import save_weights
    scenario, out, _ = tiny_run
    rows = stages.target_train(scenario, out / "target.csv")
    variant = _with_round_1(scenario, "pseudo", bn_statistics="target")
    stages.pseudo_labels(variant, 1, out / "warmup.pt", out / "target.csv", tmp_path / "pl_target.h5", DEVICE)
    adapted = stages.load_model(scenario, out / "warmup.pt")
    adabn.adapt(adapted, scenario, rows, DEVICE, scenario.seed)
    save_weights(adapted, tmp_path / "adapted.pt")
    stages.pseudo_labels(scenario, 1, tmp_path / "adapted.pt", out / "target.csv", tmp_path / "pl_by_hand.h5", DEVICE)
    with h5py.File(tmp_path / "pl_target.h5") as one, h5py.File(tmp_path / "pl_by_hand.h5") as two, \
            h5py.File(out / "pl.h5") as as_saved:
        for name in ("labels", "thresholds", "pixel_counts"):
            assert one[name][()].tobytes() == two[name][()].tobytes(), name
        assert one["thresholds"][()].tobytes() != as_saved["thresholds"][()].tobytes()


def test_load_model_without_initialising_gives_the_same_model(tiny_run, tmp_path, monkeypatch):
    """initialise=False (the labeller, evaluation) builds on the meta device: the same parameters, buffers,
    strides and outputs as the usual build, nothing drawn from torch's global generator, and the BatchNorm
    counters an older file lacks start at 0, not at whatever the empty memory held."""
    scenario, out, _ = tiny_run
    usual = stages.load_model(scenario, out / "warmup.pt").eval()
    before = torch.random.get_rng_state()
    quick = stages.load_model(scenario, out / "warmup.pt", initialise=False).eval()
    assert torch.equal(torch.random.get_rng_state(), before)
    expected, got = usual.state_dict(), quick.state_dict()
    assert list(got) == list(expected)
    for key in expected:
        assert torch.equal(got[key], expected[key]) and got[key].stride() == expected[key].stride(), key
    x = torch.rand(1, 3, 48, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(quick(x), usual(x))
    empty = torch.nn.Module.to_empty

    def garbage(module, **kwargs):           # what uninitialised memory may hold, made certain
        module = empty(module, **kwargs)
        with torch.no_grad():
            for tensor in (*module.parameters(), *module.buffers()):
                tensor.fill_(7)
        return module

    monkeypatch.setattr(torch.nn.Module, "to_empty", garbage)
    older = {k: v for k, v in expected.items() if not k.endswith("num_batches_tracked")}
    torch.save(older, tmp_path / "older.pt")
    counters = {k: v for k, v in stages.load_model(scenario, tmp_path / "older.pt", initialise=False)
                .state_dict().items() if k.endswith("num_batches_tracked")}
    assert counters and all(int(v) == 0 for v in counters.values())
