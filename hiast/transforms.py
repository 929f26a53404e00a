"""Joint image/mask transforms (torchvision.transforms.v2) with the official code's parameters.

The official sizes refer to 1024x2048 Cityscapes frames; every size here is multiplied by
`scale = base_height / 1024`, so the same transforms serve full-size data and small CPU images.

- `ms(scale)`: the weak view: HorizontalFlip(p=0.5) + RandomSizedCrop(heights 341-1000, w/h = 2, output
  512x1024), albumentations semantics (reference §1.4).
- `oms(scale, max_height)`: the Cityscapes->Oxford crop (official `OMS`): HorizontalFlip(p=0.5) +
  RandomSizedCrop(heights 341-max_height, w/h = 1280/960, output 768x1024); its sizes refer to 960x1280
  Oxford frames (scale = base_height / 960). Heights go to 1000 for Cityscapes, 900 for Oxford (§6.3).
- `cca(scale)`: the strong colour view: 3 of 8 colour operations drawn without replacement, each applied
  with p = 0.5; it never touches masks.
- `inference_resize(scale)`: the fixed resize used for pseudo-labelling (768x1536).
- `normalize()`: uint8 -> float in [0, 1] -> ImageNet mean/std.
"""

from __future__ import annotations

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
REFERENCE_HEIGHT = 1024  # Cityscapes frames: the sizes below are the official ones at this height


def scaled(value: float, scale: float, minimum: int = 1) -> int:
    return max(minimum, int(round(value * scale)))


def _randint(low: int, high: int) -> int:
    """Uniform integer in [low, high] from torch's generator (seeded like everything else)."""
    return int(torch.randint(low, high + 1, (1,)).item())


class RandomSizedCrop(v2.Transform):
    """Crop of random height in [min_height, max_height] and width = height * w2h_ratio, at a random position,
    resized to `size` (bilinear for images, nearest for masks). Crops larger than the input are clipped."""

    def __init__(self, min_max_height: tuple[int, int], size: tuple[int, int], w2h_ratio: float = 2.0):
        super().__init__()
        self.min_height, self.max_height = min_max_height
        if not 0 < self.min_height <= self.max_height:
            raise ValueError(f"min_max_height must satisfy 0 < min <= max, got {min_max_height}")
        self.size = tuple(size)
        self.w2h_ratio = w2h_ratio

    def make_params(self, flat_inputs: list) -> dict:
        height, width = v2.query_size(flat_inputs)
        crop_h = min(_randint(self.min_height, self.max_height), height)
        crop_w = min(int(crop_h * self.w2h_ratio), width)
        return {"top": _randint(0, height - crop_h), "left": _randint(0, width - crop_w),
                "height": crop_h, "width": crop_w}

    def transform(self, inpt, params: dict):
        return self._call_kernel(F.resized_crop, inpt, size=list(self.size), antialias=True, **params)


class _ImageOnly(v2.Transform):
    """A colour operation: applied to images, masks pass through unchanged."""

    def transform(self, inpt, params: dict):
        if isinstance(inpt, tv_tensors.Mask):
            return inpt
        return self.apply(inpt, params)

    def apply(self, image: torch.Tensor, params: dict) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class RandomGaussianBlur(_ImageOnly):
    """Gaussian blur with an odd kernel size drawn in [low, high]; sigma from the size as OpenCV does
    (sigma = 0.3 * ((k - 1) / 2 - 1) + 0.8), like albumentations' GaussianBlur(blur_limit)."""

    def __init__(self, blur_limit: tuple[int, int] = (3, 41)):
        super().__init__()
        low, high = blur_limit
        self.low, self.high = max(3, low | 1), max(3, high | 1)

    def make_params(self, flat_inputs: list) -> dict:
        size = 2 * _randint(self.low // 2, self.high // 2) + 1
        return {"size": size, "sigma": 0.3 * ((size - 1) * 0.5 - 1) + 0.8}

    def apply(self, image, params):
        return F.gaussian_blur(image, [params["size"]] * 2, [params["sigma"]] * 2)


class RandomLinear(_ImageOnly):
    """uint8 image -> clip(alpha * image + beta * 255): albumentations' RandomContrast (alpha in 1 + limit)
    and RandomBrightness (beta in limit), brightness by max value."""

    def __init__(self, alpha_range: tuple[float, float] = (1.0, 1.0), beta_range: tuple[float, float] = (0.0, 0.0)):
        super().__init__()
        self.alpha_range, self.beta_range = alpha_range, beta_range

    def make_params(self, flat_inputs: list) -> dict:
        def uniform(lo, hi):
            return lo + (hi - lo) * float(torch.rand(1).item())
        return {"alpha": uniform(*self.alpha_range), "beta": uniform(*self.beta_range)}

    def apply(self, image, params):
        out = (image.float() * params["alpha"] + params["beta"] * 255.0).clamp_(0, 255).to(image.dtype)
        return tv_tensors.wrap(out, like=image) if isinstance(image, tv_tensors.TVTensor) else out


class SomeOf(v2.Transform):
    """Draw `n` of `transforms` without replacement (random order); apply each with probability `p`."""

    def __init__(self, transforms: list, n: int = 3, p: float = 0.5):
        super().__init__()
        if not 0 <= n <= len(transforms):
            raise ValueError(f"SomeOf: n={n} must be within 0..{len(transforms)}")
        self.transforms = list(transforms)
        self.n, self.p = n, p

    def forward(self, *inputs):
        sample = inputs if len(inputs) > 1 else inputs[0]
        for index in torch.randperm(len(self.transforms))[: self.n].tolist():
            if float(torch.rand(1).item()) < self.p:
                sample = self.transforms[index](*sample) if isinstance(sample, tuple) else self.transforms[index](sample)
        return sample


def ms(scale: float = 1.0) -> v2.Compose:
    """The weak view (official `MS`): flip p=0.5 + RandomSizedCrop(341-1000, w/h 2) -> 512x1024, scaled."""
    return v2.Compose([
        v2.RandomHorizontalFlip(p=0.5),
        RandomSizedCrop((scaled(341, scale), scaled(1000, scale)), (scaled(512, scale), scaled(1024, scale)),
                        w2h_ratio=2.0),
    ])


def oms(scale: float = 1.0, max_height: int = 1000) -> v2.Compose:
    """The Cityscapes->Oxford crop (official `OMS`): flip p=0.5 + RandomSizedCrop(341-max_height, w/h 4:3) ->
    768x1024, every size times `scale` (base height / 960)."""
    return v2.Compose([
        v2.RandomHorizontalFlip(p=0.5),
        RandomSizedCrop((scaled(341, scale), scaled(max_height, scale)), (scaled(768, scale), scaled(1024, scale)),
                        w2h_ratio=1280 / 960),
    ])


def crop_view(crop: str, base_height: int, max_height: int = 1000) -> v2.Compose:
    """The training crop named by a dataset's `crop` setting, sized for images of `base_height` rows."""
    if crop == "ms":
        return ms(base_height / 1024)
    if crop == "oms":
        return oms(base_height / 960, max_height)
    raise ValueError(f"crop: expected 'ms' or 'oms', got {crop!r}")


def cca_operations(scale: float = 1.0) -> list:
    """The 8 colour operations of the official `CCA`, in its order (reference §1.4)."""
    return [
        v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.2),
        RandomGaussianBlur((scaled(3, scale, 3), scaled(41, scale, 3))),
        RandomLinear(alpha_range=(1.0, 4.0)),               # RandomContrast(limit=(0, 3))
        RandomLinear(beta_range=(-0.5, 0.5)),               # RandomBrightness(limit=0.5)
        v2.RandomPosterize(bits=4, p=1.0),
        v2.RandomEqualize(p=1.0),
        v2.RandomSolarize(threshold=128, p=1.0),
        v2.Grayscale(num_output_channels=3),
    ]


def cca(scale: float = 1.0, n: int = 3, p: float = 0.5) -> SomeOf:
    """The strong view's colour augmentation (official `CCA`): 3 of 8 operations, each with p = 0.5."""
    return SomeOf(cca_operations(scale), n=n, p=p)


def inference_size(scale: float = 1.0) -> tuple[int, int]:
    """The pseudo-labelling / evaluation input size: 768x1536 at Cityscapes scale."""
    return scaled(768, scale), scaled(1536, scale)


def inference_resize(scale: float = 1.0) -> v2.Resize:
    return v2.Resize(inference_size(scale), antialias=True)


def normalize() -> v2.Compose:
    return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def scale_of(base_height: int) -> float:
    """The factor applied to every official size for images of `base_height` rows."""
    if base_height <= 0:
        raise ValueError(f"base_height must be positive, got {base_height}")
    return base_height / REFERENCE_HEIGHT


def denormalize(image: torch.Tensor) -> torch.Tensor:
    """Inverse of `normalize` for display: float [.., 3, H, W] -> uint8."""
    mean = torch.tensor(IMAGENET_MEAN, device=image.device).view(-1, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=image.device).view(-1, 1, 1)
    return ((image * std + mean).clamp(0, 1) * 255).round().to(torch.uint8)


__all__ = ["RandomSizedCrop", "RandomGaussianBlur", "RandomLinear", "SomeOf", "ms", "cca", "cca_operations",
           "inference_size", "inference_resize", "normalize", "scale_of", "denormalize", "scaled", "oms", "crop_view"]
