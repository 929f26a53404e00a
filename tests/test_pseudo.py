import numpy as np
import pytest
import torch

from hiast import pseudo
from hiast.speed import instance_arrays


@pytest.fixture(autouse=True, params=["cpu_path", "device_path"])
def code_path(request, monkeypatch):
    """Every test runs on both code paths: the CPU's, and the one a GPU takes (no host waits inside the step,
    integer atomics), forced here on the CPU so that its logic is checked without a GPU."""
    if request.param == "device_path":
        monkeypatch.setattr(pseudo, "_sync_free", lambda tensor: True)
    return request.param


def official_ias_update(thresholds, conf, pred, alpha, beta, gamma):
    """The official way (HIAST `IASPseudoGenerator`, in float64): a loop over classes with np.quantile."""
    thresholds = np.asarray(thresholds, dtype=np.float64)
    conf = np.asarray(conf, dtype=np.float64).reshape(-1)
    pred = np.asarray(pred).reshape(-1)
    psi = np.ones(len(thresholds))
    for c in range(len(thresholds)):
        values = np.concatenate([[thresholds[c]], conf[pred == c]])
        psi[c] = np.quantile(values, 1 - alpha * thresholds[c] ** gamma)
    new = beta * thresholds + (1 - beta) * psi
    new[new >= 1] = 0.999
    return new


def official_cbst(conf, pred, num_classes, p):
    out = np.ones(num_classes)
    for c in range(num_classes):
        values = np.asarray(conf, dtype=np.float64)[np.asarray(pred) == c]
        if values.size:
            out[c] = np.quantile(values, 1 - p)
    return out


# --- IAS ---------------------------------------------------------------------------------------------------

CONF5 = np.array([0.95, 0.7, 0.99, 0.6, 0.85])
PRED5 = np.array([0, 0, 1, 1, 0])


def test_ias_update_hand_case():
    # theta_prev = [0.9, 0.8], alpha 0.5, beta 0.9, gamma 1:
    # class 0: S = {0.9, 0.95, 0.7, 0.85} -> sorted [0.7, 0.85, 0.9, 0.95]; q = 1 - 0.5*0.9 = 0.55;
    #   virtual index 3*0.55 = 1.65 -> 0.85 + 0.65*(0.9 - 0.85) = 0.8825; theta = 0.9*0.9 + 0.1*0.8825 = 0.89825
    # class 1: S = {0.8, 0.99, 0.6} -> sorted [0.6, 0.8, 0.99]; q = 1 - 0.5*0.8 = 0.6;
    #   virtual index 2*0.6 = 1.2 -> 0.8 + 0.2*(0.99 - 0.8) = 0.838; theta = 0.9*0.8 + 0.1*0.838 = 0.8038
    new = pseudo.ias_update(np.array([0.9, 0.8]), CONF5, PRED5, alpha=0.5, beta=0.9, gamma=1.0)
    assert new == pytest.approx([0.89825, 0.8038], abs=1e-12)
    # labelled with the updated thresholds: 0.95 >= 0.89825 -> 0; 0.7 -> 255; 0.99 >= 0.8038 -> 1;
    # 0.6 -> 255; 0.85 < 0.89825 -> 255
    assert pseudo.select(CONF5, PRED5, new).tolist() == [0, 255, 1, 255, 255]


def test_ias_kept_fraction_follows_alpha_theta_gamma():
    # reference example: alpha 0.5, gamma 8, theta 0.9 -> kept fraction 0.5 * 0.9**8 = 0.5 * 0.43046721 = 0.2152336
    assert 0.5 * 0.9 ** 8 == pytest.approx(0.215233605)
    conf = np.arange(10000) / 10000.0
    psi = pseudo.ias_update(np.array([0.9]), conf, np.zeros(10000, int), alpha=0.5, beta=0.0, gamma=8.0)[0]
    values = np.append(conf, 0.9)
    assert abs((values > psi).mean() - 0.215233605) < 2e-4
    # a low running threshold keeps far fewer: 0.5 * 0.6**8 = 0.0084
    psi_low = pseudo.ias_update(np.array([0.6]), conf, np.zeros(10000, int), alpha=0.5, beta=0.0, gamma=8.0)[0]
    assert abs((np.append(conf, 0.6) > psi_low).mean() - 0.5 * 0.6 ** 8) < 2e-4


def test_class_without_pixels_keeps_its_threshold():
    # class 2 has no pixel: S = {theta_prev} -> Psi = theta_prev -> theta = beta*theta + (1-beta)*theta
    new = pseudo.ias_update(np.array([0.9, 0.8, 0.7]), CONF5, PRED5, alpha=0.5, beta=0.9, gamma=8.0)
    assert new[2] == 0.9 * 0.7 + (1 - 0.9) * 0.7
    assert new[2] == pytest.approx(0.7, abs=1e-15)


def test_threshold_clamped_below_one():
    # theta_prev 1.0, every pixel of class 0 at 1.0 -> Psi = 1 -> theta = 1 -> clamped to 0.999
    new = pseudo.ias_update(np.array([1.0, 0.5]), np.ones(4), np.zeros(4, int), alpha=0.5, beta=0.5, gamma=8.0)
    assert new[0] == 0.999 and new[1] == 0.5


@pytest.mark.parametrize("seed", range(6))
def test_ias_update_equals_official_loop_bit_for_bit(seed):
    rng = np.random.default_rng(seed)
    num_classes, n = 7, 3000
    # float32 confidences on a coarse grid (ties), class 6 never predicted, class 0 rare
    conf = (rng.integers(0, 200, n) / 200).astype(np.float32) if seed % 2 else rng.random(n, dtype=np.float32)
    pred = rng.choice(6, size=n, p=[0.01, 0.29, 0.2, 0.2, 0.2, 0.1])
    thresholds = rng.uniform(0.3, 0.99, num_classes)
    alpha, beta, gamma = [(0.5, 0.9, 8.0), (0.2, 0.9, 8.0), (0.3, 0.5, 1.0)][seed % 3]
    expected = official_ias_update(thresholds, conf, pred, alpha, beta, gamma)
    got = pseudo.ias_update(thresholds, conf, pred, alpha, beta, gamma)
    assert isinstance(got, np.ndarray) and got.dtype == np.float64
    assert np.array_equal(got, expected)
    got_torch = pseudo.ias_update(torch.from_numpy(thresholds), torch.from_numpy(conf).double(),
                                  torch.from_numpy(pred), alpha, beta, gamma)
    assert isinstance(got_torch, torch.Tensor) and got_torch.dtype == torch.float64
    np.testing.assert_allclose(got_torch.numpy(), expected, rtol=0, atol=1e-12)
    assert np.array_equal(got_torch.numpy(), expected)
    # float32 tensors and numpy thresholds are accepted too (widened exactly)
    got_f32 = pseudo.ias_update(thresholds, torch.from_numpy(conf), torch.from_numpy(pred), alpha, beta, gamma)
    assert np.array_equal(got_f32.numpy(), expected)


def test_ias_update_sequence_equals_official():
    rng = np.random.default_rng(11)
    thr_ours = thr_official = np.full(5, 0.9)
    for _ in range(20):
        conf, pred = rng.random(500) ** 0.3, rng.integers(0, 5, 500)
        thr_ours = pseudo.ias_update(thr_ours, conf, pred, 0.5, 0.9, 8.0)
        thr_official = official_ias_update(thr_official, conf, pred, 0.5, 0.9, 8.0)
    assert np.array_equal(thr_ours, thr_official)


def test_ias_update_rejects_bad_prediction():
    with pytest.raises(ValueError):
        pseudo.ias_update(np.full(2, 0.9), np.ones(3), np.array([0, 1, 2]), 0.5, 0.9, 8.0)
    with pytest.raises(ValueError):
        pseudo.ias_update(np.full(2, 0.9), np.ones(2), np.array([0, -1]), 0.5, 0.9, 8.0)


# --- select, CBST, CT, NT ----------------------------------------------------------------------------------

def test_select_hand_case_numpy_and_torch():
    conf = np.array([[0.5, 0.9], [0.7, 0.3]])
    pred = np.array([[0, 1], [1, 2]])
    thresholds = np.array([0.5, 0.95, 0.2])
    # 0.5 >= 0.5 keeps 0 (equality keeps); 0.9 < 0.95 -> 255; 0.7 < 0.95 -> 255; 0.3 >= 0.2 keeps 2
    expected = [[0, 255], [255, 2]]
    out = pseudo.select(conf, pred, thresholds)
    assert out.dtype == np.uint8 and out.tolist() == expected
    out_t = pseudo.select(torch.tensor(conf, dtype=torch.float32), torch.from_numpy(pred), thresholds)
    assert out_t.dtype == torch.uint8 and out_t.tolist() == expected
    assert pseudo.select(conf, pred, pseudo.nt_thresholds(3)).tolist() == pred.tolist()
    assert pseudo.select(conf, pred, pseudo.ct_thresholds(3)).tolist() == [[255, 1], [255, 255]]


def test_select_largest_class_id_and_non_contiguous_input():
    # 255 thresholds: class 254 is the largest id a uint8 label can hold beside 255 (ignore)
    thresholds = np.full(255, 0.5)
    conf = np.array([[0.6, 0.4], [0.5, 0.1]], dtype=np.float32)
    pred = np.array([[254, 254], [0, 7]], dtype=np.int64)
    assert pseudo.select(conf, pred, thresholds).tolist() == [[254, 255], [0, 255]]
    # transposed (non-contiguous) torch input: the same as the contiguous one, transposed
    out = pseudo.select(torch.from_numpy(conf).T, torch.from_numpy(pred).T, thresholds)
    assert out.tolist() == [[254, 0], [255, 255]]


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.uint8])
def test_ias_step_leaves_the_callers_arrays_unchanged(dtype):
    # the histogram key is built in place: it must be on a copy of the predictions, whatever their dtype
    gen = torch.Generator().manual_seed(0)
    conf = torch.rand(2, 6, 8, generator=gen, dtype=torch.float32)
    pred = torch.randint(0, 4, (2, 6, 8), generator=gen).to(dtype)
    conf_before, pred_before = conf.clone(), pred.clone()
    pseudo.IASState(4, 0.5, 0.9, 8.0).step(conf, pred)
    pseudo.ias_update(np.full(4, 0.9), conf.double(), pred, 0.5, 0.9, 8.0)
    assert torch.equal(conf, conf_before) and torch.equal(pred, pred_before)


def test_ct_nt_thresholds():
    assert pseudo.ct_thresholds(3).tolist() == [0.9, 0.9, 0.9]
    assert pseudo.ct_thresholds(2, 0.7).tolist() == [0.7, 0.7]
    assert pseudo.nt_thresholds(2).tolist() == [0.0, 0.0]


def test_cbst_hand_case():
    conf = np.array([0.5, 0.9, 0.7, 0.6, 0.8])
    pred = np.array([0, 0, 0, 1, 1])
    # p = 0.2 -> level 0.8. class 0: [0.5, 0.7, 0.9], index 2*0.8 = 1.6 -> 0.7 + 0.6*0.2 = 0.82
    # class 1: [0.6, 0.8], index 0.8 -> 0.6 + 0.8*0.2 = 0.76; class 2: no pixel -> 1.0
    out = pseudo.cbst_thresholds(conf, pred, 3, 0.2)
    assert out == pytest.approx([0.82, 0.76, 1.0], abs=1e-12)
    out_t = pseudo.cbst_thresholds(torch.from_numpy(conf), torch.from_numpy(pred), 3, 0.2)
    assert np.array_equal(out_t.numpy(), out)


def test_cbst_equals_np_quantile():
    rng = np.random.default_rng(3)
    conf, pred = rng.random(5000).astype(np.float32), rng.integers(0, 6, 5000)
    expected = official_cbst(conf, pred, 8, 0.2)
    assert np.array_equal(pseudo.cbst_thresholds(conf, pred, 8, 0.2), expected)
    assert np.array_equal(pseudo.cbst_thresholds(torch.from_numpy(conf), torch.from_numpy(pred), 8, 0.2).numpy(),
                          expected)
    assert pseudo.cbst_thresholds(np.zeros(0), np.zeros(0, int), 2, 0.2).tolist() == [1.0, 1.0]


# --- statistics --------------------------------------------------------------------------------------------

def test_class_mean_confidence_update_init_and_ema():
    mean_conf = np.array([0.0, 0.5, 0.7])
    conf = np.array([0.9, 0.7, 0.6, 0.8, 0.3])
    labels = np.array([0, 0, 1, 255, 255], dtype=np.uint8)
    # class 0: first value initialises: (0.9 + 0.7) / 2 = 0.8
    # class 1: EMA 0.9*0.5 + 0.1*0.6 = 0.51; class 2: no kept pixel -> unchanged; the 255 pixels are skipped
    new = pseudo.class_mean_confidence_update(mean_conf, conf, labels, momentum=0.9)
    assert new == pytest.approx([0.8, 0.51, 0.7], abs=1e-12)
    assert mean_conf.tolist() == [0.0, 0.5, 0.7]  # not modified in place
    # default momentum 0.99: class 0 again with batch mean 0.6 -> 0.99*0.8 + 0.01*0.6 = 0.798
    again = pseudo.class_mean_confidence_update(new, np.array([0.6]), np.array([0]))
    assert again[0] == pytest.approx(0.798, abs=1e-12)
    out_t = pseudo.class_mean_confidence_update(torch.tensor(mean_conf), torch.tensor(conf), torch.from_numpy(labels),
                                                momentum=0.9)
    assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.float64
    assert np.array_equal(out_t.numpy(), new)


def test_class_pixel_counts():
    labels = np.array([[0, 2, 255], [2, 2, 255]], dtype=np.uint8)
    assert pseudo.class_pixel_counts(labels, 4).tolist() == [1, 0, 3, 0]
    assert pseudo.class_pixel_counts(torch.from_numpy(labels), 4).tolist() == [1, 0, 3, 0]
    assert pseudo.image_class_pixel_counts(labels[:, None], 3).tolist() == [[1, 0, 1], [0, 0, 2]]
    with pytest.raises(ValueError):
        pseudo.class_pixel_counts(labels, 2)


# --- sequential pass ---------------------------------------------------------------------------------------

def test_instance_order_reproducible_partition():
    order = pseudo.instance_order(7, 2, seed=5)
    assert [len(g) for g in order] == [2, 2, 2, 1]
    assert sorted(np.concatenate(order).tolist()) == list(range(7))
    assert [g.tolist() for g in order] == [g.tolist() for g in pseudo.instance_order(7, 2, seed=5)]
    assert np.concatenate(order).tolist() == np.random.default_rng(5).permutation(7).tolist()
    assert pseudo.instance_order(0, 2, 0) == []


def test_run_ias_labels_with_post_update_thresholds():
    rng = np.random.default_rng(0)
    instances = [(rng.random((2, 4, 5)) ** 0.2, rng.integers(0, 3, (2, 4, 5))) for _ in range(4)]
    steps = list(pseudo.run_ias(instances, 3, alpha=0.5, beta=0.9, gamma=8.0))
    thresholds, mean_conf = np.full(3, 0.9), np.zeros(3)
    for (conf, pred), step in zip(instances, steps):
        thresholds = official_ias_update(thresholds, conf, pred, 0.5, 0.9, 8.0)
        labels = pseudo.select(conf, pred, thresholds)
        mean_conf = pseudo.class_mean_confidence_update(mean_conf, conf, labels, 0.99)
        assert np.array_equal(step.thresholds, thresholds)
        assert np.array_equal(step.labels, labels)
        assert np.array_equal(step.class_mean_conf, mean_conf)
        assert step.pixel_counts.tolist() == [pseudo.class_pixel_counts(labels[k], 3).tolist() for k in range(2)]
    # torch instances give the same thresholds and labels
    torch_steps = list(pseudo.run_ias([(torch.from_numpy(c), torch.from_numpy(p)) for c, p in instances], 3,
                                      alpha=0.5, beta=0.9, gamma=8.0))
    for a, b in zip(steps, torch_steps):
        assert np.array_equal(a.thresholds, b.thresholds) and np.array_equal(a.labels, b.labels.numpy())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_ias_update_cuda_equals_official_loop():
    rng = np.random.default_rng(1)
    conf, pred = rng.random(200_000, dtype=np.float32), rng.integers(0, 19, 200_000)
    thresholds = np.full(19, 0.9)
    expected = official_ias_update(thresholds, conf, pred, 0.5, 0.9, 8.0)
    got = pseudo.ias_update(torch.tensor(thresholds, device="cuda"), torch.from_numpy(conf).cuda().double(),
                            torch.from_numpy(pred).cuda(), 0.5, 0.9, 8.0)
    assert got.device.type == "cuda" and np.array_equal(got.cpu().numpy(), expected)
    labels = pseudo.select(torch.from_numpy(conf).cuda(), torch.from_numpy(pred).cuda(), got)
    assert np.array_equal(labels.cpu().numpy(), pseudo.select(conf, pred, expected))
    cbst = pseudo.cbst_thresholds(torch.from_numpy(conf).cuda(), torch.from_numpy(pred).cuda(), 19, 0.2)
    assert np.array_equal(cbst.cpu().numpy(), official_cbst(conf, pred, 19, 0.2))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ias_update_bit_for_bit_on_confidences_crowded_below_one(dtype):
    """The selection bins by the distance to 1: exactly-1 values, values a few ulps below 1, ties across bins,
    zeros, and a class with a single pixel must all come out as np.quantile's."""
    rng = np.random.default_rng(5)
    n = 20000
    conf = 1 - rng.beta(0.3, 4, n) * 0.9
    conf[rng.random(n) < 0.2] = 1.0
    conf[:50] = np.nextafter(dtype(1), dtype(0))       # one ulp below 1 in conf's dtype
    conf[50:60] = 0.0
    conf = conf.astype(dtype)
    pred = rng.choice(6, size=n, p=[0.3, 0.3, 0.2, 0.1, 0.1, 0.0])
    pred[123] = 5                                        # a one-pixel class
    for alpha, beta, gamma in ((0.5, 0.9, 8.0), (0.2, 0.5, 1.0), (1.0, 0.0, 0.0)):
        thresholds = np.array([0.9, 0.99, 0.5, 1.0, 0.999, 0.7, 0.8])   # class 6: no pixel
        expected = official_ias_update(thresholds, conf, pred, alpha, beta, gamma)
        assert np.array_equal(pseudo.ias_update(thresholds, conf, pred, alpha, beta, gamma), expected)


def test_confidences_outside_zero_one_are_refused():
    for bad in (np.array([0.5, 1.5]), np.array([0.5, -0.1]), np.array([0.5, np.nan])):
        with pytest.raises(ValueError, match="confidences must lie in"):
            pseudo.ias_update(np.full(2, 0.9), bad, np.array([0, 1]), 0.5, 0.9, 8.0)
    with pytest.raises(ValueError, match="pixels"):
        pseudo.ias_update(np.full(2, 0.9), np.ones(3), np.array([0, 1]), 0.5, 0.9, 8.0)


def test_both_code_paths_give_the_same_step_bit_for_bit(monkeypatch):
    conf, pred = (torch.from_numpy(a) for a in instance_arrays(48, 96, seed=3))
    runs = {}
    for name, sync_free in (("cpu", False), ("device", True)):
        monkeypatch.setattr(pseudo, "_sync_free", lambda tensor, value=sync_free: value)
        state = pseudo.IASState(19, 0.5, 0.9, 8.0)
        runs[name] = [state.step(conf[:, k:k + 16], pred[:, k:k + 16]) for k in range(0, 96, 16)]
    for a, b in zip(runs["cpu"], runs["device"]):
        assert torch.equal(a.labels, b.labels) and np.array_equal(a.pixel_counts, b.pixel_counts)
        assert np.array_equal(a.thresholds, b.thresholds)
        assert np.array_equal(a.class_mean_conf, b.class_mean_conf)   # the fixed-point sums are exact here


def test_device_path_step_waits_for_the_device_once(monkeypatch):
    """On a GPU the step's time is its launches and waits, not its arithmetic (BENCHMARKS.md, "The IAS step
    on a device"): the device path must not dispatch the operators that make the host wait (bincount, which
    reads its input's max on CUDA; item / float / int), but for the one nonzero that sizes the sorted pixels."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Dispatched(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(str(func))
            return func(*args, **(kwargs or {}))

    monkeypatch.setattr(pseudo, "_sync_free", lambda tensor: True)
    conf, pred = (torch.from_numpy(a) for a in instance_arrays(32, 64))
    state = pseudo.IASState(19, 0.5, 0.9, 8.0)
    with Dispatched() as dispatched:
        state.step(conf, pred)
    waits = [op for op in dispatched.ops if op.split(".")[1] in ("bincount", "_local_scalar_dense", "nonzero")]
    assert waits == ["aten.nonzero.default"]
    assert len(dispatched.ops) < 100      # 69 with torch 2.14; the previous device path dispatched 250
