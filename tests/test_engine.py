"""Inference helpers: multi-scale and flip averaging of engine.predict, and engine.evaluate's confusion."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from hiast import engine


class SizeLogits(nn.Module):
    """Two-class logits [H_in / 100, 0] everywhere, at the input's resolution: they reveal the scale used."""

    def forward(self, x):
        logits = torch.zeros(x.shape[0], 2, *x.shape[-2:])
        logits[:, 0] = x.shape[-2] / 100
        return logits


class ShiftRight(nn.Module):
    """Logits [first channel moved one column right, 0]: not flip-equivariant, so flipping shows."""

    def forward(self, x):
        logits = torch.zeros(x.shape[0], 2, *x.shape[-2:])
        logits[:, 0, :, 1:] = x[:, 0, :, :-1]
        return logits


def sigmoid(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def test_multi_scale_averages_the_softmax_of_each_scale():
    images = torch.zeros(1, 3, 16, 32)
    probs = engine.predict(SizeLogits(), images, scales=(1.0, 0.5))
    # scale 1: logits (0.16, 0) ; scale 0.5 (8x16 input): (0.08, 0); softmax of class 0 = sigmoid(difference)
    expected = (sigmoid(0.16) + sigmoid(0.08)) / 2
    assert probs.shape == (1, 2, 16, 32)
    torch.testing.assert_close(probs[:, 0], torch.full((1, 16, 32), expected), rtol=0, atol=1e-6)
    torch.testing.assert_close(probs.sum(1), torch.ones(1, 16, 32))


def test_input_size_resizes_before_the_model_and_output_returns_to_the_label_size():
    images = torch.zeros(2, 3, 8, 16)
    probs = engine.predict(SizeLogits(), images, input_size=(20, 40), out_size=(4, 8))
    assert probs.shape == (2, 2, 4, 8)
    torch.testing.assert_close(probs[:, 0], torch.full((2, 4, 8), sigmoid(0.20)), rtol=0, atol=1e-6)


def test_flip_averages_the_prediction_on_the_mirrored_image_mirrored_back():
    images = torch.zeros(1, 3, 8, 10)   # (8 rows: inference never goes below 8 pixels a side)
    images[:, 0, :, 0] = 1.0     # a bright first column
    plain = engine.predict(ShiftRight(), images)
    flipped = engine.predict(ShiftRight(), images, flip=True)
    # without flip, column 1 gets logit 1; on the mirrored image the bright column (now the last) is pushed
    # out of the frame, so the flipped view contributes logit 0 everywhere
    assert math.isclose(plain[0, 0, 0, 1].item(), sigmoid(1.0), rel_tol=1e-6)
    assert math.isclose(flipped[0, 0, 0, 1].item(), (sigmoid(1.0) + 0.5) / 2, rel_tol=1e-6)
    others = torch.ones(10, dtype=torch.bool)
    others[1] = False
    torch.testing.assert_close(flipped[0, 0][:, others], torch.full((8, 9), 0.5))


def test_evaluate_counts_every_pixel_of_the_split():
    class Items(torch.utils.data.Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            label = torch.zeros(4, 6, dtype=torch.uint8)
            label[:, 3:] = 1
            label[0, 0] = 255
            return {"image": torch.zeros(3, 4, 6, dtype=torch.uint8), "label": label, "image_id": str(i)}

    # SizeLogits predicts class 0 everywhere: class-1 pixels are confused with 0, ignored pixels are not counted
    confusion = engine.evaluate(SizeLogits(), Items(), 2, torch.device("cpu"), batch_size=2)
    assert confusion.tolist() == [[3 * 11, 0], [3 * 12, 0]]



def test_evaluate_predicts_the_first_of_tied_classes_as_argmax_does():
    """Ties are where max's indices and argmax could part: every pixel below has classes 1 and 2 tied at the
    top, and a channels-last input (the model's layout) must not change which one wins."""
    class Tied(nn.Module):
        def forward(self, x):
            logits = torch.zeros(x.shape[0], 4, *x.shape[-2:])
            logits[:, 1:3] = 2.0
            logits[:, 3] = 1.0
            return logits.contiguous(memory_format=torch.channels_last)

    class Items(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return {"image": torch.zeros(3, 8, 8, dtype=torch.uint8), "label": torch.full((8, 8), 2, dtype=torch.uint8),
                    "image_id": str(i)}

    probs = engine.predict(Tied(), torch.zeros(1, 3, 8, 8))
    assert probs.argmax(1).unique().tolist() == [1]
    confusion = engine.evaluate(Tied(), Items(), 4, torch.device("cpu"), batch_size=2)
    assert confusion[2].tolist() == [0, 2 * 64, 0, 0]    # every class-2 pixel predicted as 1, the first tied
    assert int(confusion.sum()) == 2 * 64


def test_one_view_returns_the_softmax_itself():
    images = torch.zeros(1, 3, 16, 32)
    probs = engine.predict(SizeLogits(), images)
    expected = torch.nn.functional.softmax(SizeLogits()(images), 1)
    assert torch.equal(probs, expected)

# --- prefetched: a background thread loads ahead ---------------------------------------------------------------

def test_prefetched_yields_every_item_in_order():
    assert list(engine.prefetched(iter(range(50)), depth=3)) == list(range(50))
    assert list(engine.prefetched([], depth=1)) == []


def test_prefetched_reraises_the_iterables_error_after_the_items_before_it():
    def failing():
        yield 1
        yield 2
        raise KeyError("image 7 is not a donor image")

    got = []
    with pytest.raises(KeyError, match="image 7"):
        for item in engine.prefetched(failing()):
            got.append(item)
    assert got == [1, 2]


def _counting(pulled: list):
    """0, 1, 2, ... without end, each appended to `pulled` as it is drawn: how far ahead a consumer read."""
    k = 0
    while True:
        pulled.append(k)
        yield k
        k += 1


def test_prefetched_closed_early_stops_its_thread_and_reads_at_most_depth_ahead():
    import threading
    pulled = []

    stream = engine.prefetched(_counting(pulled), depth=2)
    assert [next(stream) for _ in range(3)] == [0, 1, 2]
    stream.close()
    assert not [t for t in threading.enumerate() if t.name == "hiast-prefetch"]
    # 3 consumed, at most 2 waiting in the queue, at most 1 held by the blocked producer
    assert 3 <= len(pulled) <= 6
    with pytest.raises(ValueError, match="depth"):
        next(engine.prefetched([1], depth=0))


# --- mapped_in_streams: single-threaded torch calls side by side ------------------------------------------------

def _stream_report(item):
    import threading
    return item, torch.get_num_threads(), threading.current_thread().name


def test_mapped_in_streams_keeps_the_order_runs_each_call_on_one_thread_and_restores_the_count():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        results = list(engine.mapped_in_streams(_stream_report, range(20), streams=3))
        assert [item for item, _, _ in results] == list(range(20))
        assert {threads for _, threads, _ in results} == {1}
        assert all(name.startswith("hiast-stream") for _, _, name in results)
        assert torch.get_num_threads() == 2
        assert list(engine.mapped_in_streams(_stream_report, [], streams=2)) == []
    finally:
        torch.set_num_threads(previous)


def test_mapped_in_streams_gives_the_one_thread_result_of_a_sum():
    # a float32 sum of 4M values splits its work by thread, so 2 threads round it otherwise than 1
    inputs = [torch.randn(4_000_000, generator=torch.Generator().manual_seed(k)) for k in range(4)]
    one_thread = [x.sum() for x in inputs]  # the session runs at 1 thread (conftest)
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        two_threads = [x.sum() for x in inputs]
        streamed = list(engine.mapped_in_streams(torch.sum, inputs, streams=2))
    finally:
        torch.set_num_threads(previous)
    assert not all(torch.equal(a, b) for a, b in zip(one_thread, two_threads))  # else this test shows nothing
    assert all(torch.equal(a, b) for a, b in zip(one_thread, streamed))


def test_mapped_in_streams_raises_at_the_failing_item_and_restores_the_count():
    def fails_at_5(item):
        if item == 5:
            raise ValueError("item 5 is bad")
        return item

    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    got = []
    try:
        with pytest.raises(ValueError, match="item 5 is bad"):
            for item in engine.mapped_in_streams(fails_at_5, range(10), streams=2):
                got.append(item)
        assert got == [0, 1, 2, 3, 4]
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)
    with pytest.raises(ValueError, match="streams"):
        next(engine.mapped_in_streams(fails_at_5, [1], streams=0))


def test_mapped_in_streams_closed_early_reads_at_most_lookahead_times_streams_ahead():
    pulled = []

    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        stream = engine.mapped_in_streams(lambda x: x * 10, _counting(pulled), streams=2, lookahead=3)
        assert [next(stream) for _ in range(4)] == [0, 10, 20, 30]
        stream.close()
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)
    # items are pulled only to fill the 2 x 3 slots: 4 yielded + at most 6 in flight
    assert 6 <= len(pulled) <= 10


def _thread_nice() -> int:
    import os
    import threading
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


class _PriorityItems:
    """Items that report the CPU priority of whoever loads them."""

    def __len__(self):
        return 4

    def item(self, index, rng):
        return {"nice": _thread_nice()}


@pytest.mark.skipif(not hasattr(__import__("os"), "getpriority") or __import__("sys").platform != "linux",
                    reason="per-thread priorities are Linux's")
def test_loading_runs_at_lower_priority_only_where_asked():
    from hiast.supervised import iteration_loader
    base = _thread_nice()
    expected = min(19, base + engine.LOADER_NICE)

    def report():
        yield _thread_nice()
    assert list(engine.prefetched(report(), nice=engine.LOADER_NICE)) == [expected]
    assert list(engine.prefetched(report())) == [base]
    assert _thread_nice() == base                          # the training thread keeps its priority
    for low, nice in ((True, expected), (False, base)):
        batches = list(iteration_loader(_PriorityItems(), 2, seed=0, start=0, stop=2, workers=1, low_priority=low))
        assert [int(v) for b in batches for v in b["nice"]] == [nice] * 4
    assert _thread_nice() == base


def test_spare_core_compares_torch_threads_with_the_cpus_the_process_may_use(monkeypatch):
    monkeypatch.setattr(engine.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert engine.spare_core()
        torch.set_num_threads(2)
        assert not engine.spare_core()
        monkeypatch.setattr(engine.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
        assert engine.spare_core()
    finally:
        torch.set_num_threads(threads)
