import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from hiast import transforms as T


def coordinate_pair(height=64, width=128):
    """An image whose pixels encode their own (row, column) and a mask with a chequered class pattern:
    any misalignment between the two after a geometric transform shows up when they are compared."""
    rows = torch.arange(height).view(-1, 1).expand(height, width)
    cols = torch.arange(width).view(1, -1).expand(height, width)
    image = torch.stack([rows * 255 // (height - 1), cols * 255 // (width - 1), torch.zeros_like(rows)]).to(torch.uint8)
    mask = ((rows // 16 + cols // 16) % 19).to(torch.uint8)
    return tv_tensors.Image(image), tv_tensors.Mask(mask)


def test_scaled_sizes():
    assert T.scale_of(1024) == 1.0 and T.scale_of(256) == 0.25
    assert T.inference_size(1.0) == (768, 1536) and T.inference_size(0.25) == (192, 384)
    crop = T.ms(0.25).transforms[1]
    assert (crop.min_height, crop.max_height, crop.size) == (85, 250, (128, 256))
    with pytest.raises(ValueError):
        T.scale_of(0)


def test_random_sized_crop_matches_manual_crop():
    image, mask = coordinate_pair()
    crop = T.RandomSizedCrop((20, 40), (16, 32))
    torch.manual_seed(3)
    params = crop.make_params([image, mask])
    assert 20 <= params["height"] <= 40 and params["width"] == 2 * params["height"]
    torch.manual_seed(3)
    out_image, out_mask = crop(image, mask)
    expected_mask = F.resized_crop(mask, size=[16, 32], **params)
    assert torch.equal(out_mask, expected_mask)
    assert out_image.shape == (3, 16, 32) and out_mask.dtype == torch.uint8


def test_ms_keeps_mask_aligned_with_image():
    """After flip + crop, each mask pixel must equal the class of the source pixel the image pixel came from."""
    height, width = 64, 128
    image, mask = coordinate_pair(height, width)
    for seed in range(10):
        torch.manual_seed(seed)
        out_image, out_mask = T.ms(1 / 16)(image, mask)  # crops of 21..62 rows -> 32x64
        assert out_image.shape == (3, 32, 64) and out_mask.shape == (32, 64)
        # recover source coordinates from the image's encoded channels, at pixel centres away from edges
        src_rows = torch.round(out_image[0].float() * (height - 1) / 255).long()
        src_cols = torch.round(out_image[1].float() * (width - 1) / 255).long()
        expected = ((src_rows // 16 + src_cols // 16) % 19).to(torch.uint8)
        agree = (expected == out_mask).float().mean().item()
        assert agree > 0.85, (seed, agree)  # boundaries blur under bilinear resize; interiors must agree


def test_flip_is_applied_jointly():
    image, mask = coordinate_pair()
    flips = 0
    for seed in range(20):
        torch.manual_seed(seed)
        out_image, out_mask = T.ms(1 / 16)(image, mask)
        col_increasing = out_image[1, 0, -1] > out_image[1, 0, 0]
        flips += int(not col_increasing)
    assert 3 <= flips <= 17  # p = 0.5


def test_cca_leaves_mask_unchanged_and_changes_image():
    image, mask = coordinate_pair()
    changed = 0
    for seed in range(20):
        torch.manual_seed(seed)
        out_image, out_mask = T.cca(0.25)(image, mask)
        assert torch.equal(out_mask, mask)
        assert out_image.dtype == torch.uint8 and out_image.shape == image.shape
        changed += int(not torch.equal(out_image, image))
    assert changed >= 15  # with 3 draws at p = 0.5, P(no op applied) = 1/8


def test_some_of_draws_n_without_replacement():
    calls = []

    def recorder(k):
        def op(x):
            calls.append(k)
            return x
        return op

    some = T.SomeOf([recorder(k) for k in range(8)], n=3, p=1.0)
    for seed in range(30):
        calls.clear()
        torch.manual_seed(seed)
        some(torch.zeros(1))
        assert len(calls) == 3 and len(set(calls)) == 3
    with pytest.raises(ValueError):
        T.SomeOf([recorder(0)], n=2)


def test_random_linear_hand_case():
    image = tv_tensors.Image(torch.tensor([[[10, 100, 200]]], dtype=torch.uint8))
    op = T.RandomLinear(alpha_range=(2.0, 2.0), beta_range=(0.1, 0.1))
    out = op(image)
    # 2 * x + 25.5, rounded down by the uint8 cast, clipped at 255
    assert out.tolist() == [[[45, 225, 255]]]


def test_gaussian_blur_kernel_is_odd_and_in_range():
    blur = T.RandomGaussianBlur((3, 41))
    for seed in range(20):
        torch.manual_seed(seed)
        params = blur.make_params([])
        assert params["size"] % 2 == 1 and 3 <= params["size"] <= 41
        assert params["sigma"] == pytest.approx(0.3 * ((params["size"] - 1) / 2 - 1) + 0.8)
    assert T.RandomGaussianBlur((1, 2)).make_params([])["size"] == 3  # sizes below 3 are raised to 3


def test_normalize_round_trip():
    image, _ = coordinate_pair()
    normalized = T.normalize()(image)
    assert normalized.dtype == torch.float32
    assert torch.equal(T.denormalize(normalized), image.as_subclass(torch.Tensor))


def test_deterministic_given_seed():
    image, mask = coordinate_pair()
    torch.manual_seed(7)
    a = T.cca(0.25)(*T.ms(1 / 16)(image, mask))
    torch.manual_seed(7)
    b = T.cca(0.25)(*T.ms(1 / 16)(image, mask))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_oms_is_the_oxford_crop_at_960_rows():
    # official OMS: heights 341-1000 (Cityscapes) or 341-900 (Oxford), w/h 1280/960, output 768x1024 at 960 rows
    crop = T.oms(1.0, 900).transforms[1]
    assert (crop.min_height, crop.max_height, crop.size) == (341, 900, (768, 1024))
    assert crop.w2h_ratio == pytest.approx(4 / 3)
    half = T.crop_view("oms", 480, 1000).transforms[1]          # base height 480 -> scale 0.5
    assert (half.min_height, half.max_height, half.size) == (170, 500, (384, 512))
    ms = T.crop_view("ms", 512).transforms[1]                   # MS keeps its 1024-row reference
    assert (ms.min_height, ms.max_height, ms.size) == (170, 500, (256, 512))
    with pytest.raises(ValueError, match="crop"):
        T.crop_view("xx", 512)


def test_oms_keeps_mask_aligned_and_the_4_to_3_crop():
    height, width = 96, 128
    image, mask = coordinate_pair(height, width)
    for seed in range(5):
        torch.manual_seed(seed)
        params = T.oms(0.1, 900).transforms[1].make_params([image, mask])
        assert params["width"] == min(int(params["height"] * 1280 / 960), width)
        torch.manual_seed(seed)
        out_image, out_mask = T.oms(0.1, 900)(image, mask)     # 77x102 output at scale 0.1
        assert out_image.shape == (3, 77, 102) and out_mask.shape == (77, 102)
        src_rows = torch.round(out_image[0].float() * (height - 1) / 255).long()
        src_cols = torch.round(out_image[1].float() * (width - 1) / 255).long()
        expected = ((src_rows // 16 + src_cols // 16) % 19).to(torch.uint8)
        assert (expected == out_mask).float().mean().item() > 0.85
