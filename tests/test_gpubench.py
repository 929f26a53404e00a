"""The cluster benchmark's code (`hiast bench gpu`), checked on a CPU at toy sizes so that it is known to run
before a GPU is lent; the FLOP accounting against hand-computed counts."""
import pytest
import torch

from hiast import gpubench
from hiast.model import build_model


def test_train_step_flops_of_a_1x1_convolution_by_hand():
    # Conv2d(3 -> 19, 1x1) on [2, 3, 4, 8]: 2 * (2*19*4*8 outputs) * 3 inputs = 7296 FLOPs forward; the input
    # needs no gradient, so the backward computes only the weight's gradient: 7296 more.
    conv = torch.nn.Conv2d(3, 19, 1, bias=False)
    x, y = torch.randn(2, 3, 4, 8), torch.randint(0, 19, (2, 4, 8))
    assert gpubench.train_step_flops(conv, x, y) == 2 * 7296
    assert conv.weight.grad is None  # cleared after counting
    # with the input's gradient too: three times the forward
    assert gpubench.train_step_flops(conv, x.requires_grad_(True), y) == 3 * 7296


def test_train_step_flops_scale_with_the_image_area():
    model = build_model("resnet18", 19)
    small = gpubench.train_step_flops(model, torch.randn(1, 3, 32, 64), torch.randint(0, 19, (1, 32, 64)))
    large = gpubench.train_step_flops(model, torch.randn(1, 3, 64, 128), torch.randint(0, 19, (1, 64, 128)))
    assert small > 0 and large == 4 * small


def test_the_whole_benchmark_runs_on_a_cpu_at_toy_sizes():
    result = gpubench.run("cpu", train_size=(32, 64), pseudo_size=(32, 64), iterations=1, instances=1,
                          matmul_n=64)
    assert result["device"] == "cpu" and result["machine"]["cpus"] >= 1
    assert set(result["matmul_tflops"]) == {"fp32", "tf32", "bf16"}
    assert all(rate > 0 for rate in result["matmul_tflops"].values())
    fp32, bf16 = result["train"]
    assert (fp32["precision"], fp32["channels_last"], bf16["precision"], bf16["channels_last"]) == \
        ("fp32", False, "bf16", True)
    for entry in result["train"]:
        assert entry["backbone"] == "resnet101" and entry["size"] == [32, 64] and entry["peak_memory_gib"] is None
        assert entry["images_per_s"] == pytest.approx(entry["batch"] / entry["step_s"])
        assert entry["tflops_achieved"] == pytest.approx(entry["flops_per_step"] / entry["step_s"] / 1e12)
        # on a CPU, "fp32" convolutions are compared with the fp32 rate (TF32 exists only on CUDA)
        assert entry["matmul_rate_compared"] == ("bf16" if entry["precision"] == "bf16" else "fp32")
        assert entry["ratio_to_matmul_rate"] == pytest.approx(
            entry["tflops_achieved"] / result["matmul_tflops"][entry["matmul_rate_compared"]])
    assert fp32["flops_per_step"] == bf16["flops_per_step"]  # the same network, whatever its arithmetic
    for entry in result["pseudo"]:
        assert entry["ias_labels_device"] == "cpu"  # the step stays on the forward's device
        assert entry["forward_images_per_s"] == pytest.approx(2 / entry["forward_s_per_instance"])
        assert entry["ias_share_of_forward"] == pytest.approx(entry["ias_step_s"] / entry["forward_s_per_instance"])
        assert entry["ias_share_bar_met"] == (entry["ias_share_of_forward"] <= gpubench.IAS_SHARE_BAR)
    assert result["wall_s"] > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given where CUDA is missing")
def test_asking_for_cuda_without_it_says_so():
    with pytest.raises(SystemExit, match="no CUDA device here"):
        gpubench.run("cuda")


def test_the_gpu_benchmark_imports_without_pypng():
    # A GPU node's image may lack pypng (only the writers of SYNTHIA-style labels need it): the benchmark's
    # imports must not pull it in.
    import subprocess
    import sys
    code = ("import sys, hiast.cli, hiast.gpubench, hiast.speed, hiast.stages, hiast.imageio; "
            "sys.exit('png' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_the_convolutions_fp32_arithmetic_is_read_from_either_api(monkeypatch):
    from types import SimpleNamespace
    new_api = SimpleNamespace(conv=SimpleNamespace(fp32_precision="ieee"), allow_tf32=True)
    monkeypatch.setattr(torch.backends, "cudnn", new_api)
    assert gpubench._cudnn_conv_fp32_precision() == "ieee"  # the per-operator setting wins
    new_api.conv.fp32_precision = "none"                     # not set: the legacy flag decides
    assert gpubench._cudnn_conv_fp32_precision() == "tf32"
    monkeypatch.setattr(torch.backends, "cudnn", SimpleNamespace(allow_tf32=False))  # torch < 2.9
    assert gpubench._cudnn_conv_fp32_precision() == "ieee"
