"""Batched augmentation of cell crops (torch), simulating other devices, stains and optics.

Everything works on whole batches of N x 3 x H x W float RGB in [0, 1] so it costs
little next to the network on a 2-core CPU. Order follows the imaging chain: geometry
(where the cell lies), stain (chemistry), illumination and camera colour, optics (blur),
sensor noise, JPEG compression. The result is quantised to uint8 like a camera frame,
then stain-normalised by the runtime's own code (``agent.vision.stain``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from agent.vision import stain


@dataclass(frozen=True)
class AugmentConfig:
    strong: bool = True
    scale: float = 0.15
    """Relative scale range (+-), for pixel-size calibration error and cell size spread."""
    p_wide_scale: float = 0.0
    """Fraction of crops whose scale is drawn log-uniform from ``wide_scale`` instead:
    cell spreading varies with smear thickness and technique between labs, and a
    device's pixel size is calibrated but not perfect; the rest stay near 1."""
    wide_scale: tuple[float, float] = (0.6, 1.4)
    pad_background: bool = False
    """Fill beyond the source image with its background colour, as the runtime pads
    (``crop_centred``), instead of mirroring it (a mirrored half-cell)."""
    shift_px: float = 6.0
    """Detector centring error, pixels at the reference scale."""
    p_colour: float = 0.85
    stain_amount: float = 0.35
    """Relative change of each stain's amount (+-)."""
    stain_vector: float = 0.12
    """Standard deviation of the perturbation of each stain's OD unit vector."""
    stain_vector_max: float = 0.0
    """If > 0: each sample's perturbation deviation is drawn from U(0, this) instead, so
    some crops get stain hues far from PBC's (other stains: Wright, Leishman, Giemsa)."""
    p_grey: float = 0.0
    """Fraction of crops turned to grey (colour-blind morphology) before the colour steps."""
    gain: float = 0.15
    """Per-channel illumination / white-balance gain range (+-)."""
    gamma: float = 0.35
    """log-gamma range (+-)."""
    contrast: float = 0.3
    contrast_low: float = 0.0
    """If > 0: contrast factor drawn from [1 - this, 1 + contrast] (washed-out optics)."""
    hue_rad: float = 0.25
    saturation: float = 0.4
    channel_od: float = 0.0
    """Per-channel optical-density gain range (log, +-): a camera's spectral response and
    a stain's absorption spectrum weight R, G and B differently (0: off)."""
    p_lowres: float = 0.0
    lowres: tuple[float, float] = (1.5, 3.0)
    """Downscale-upscale factor range: a coarser sensor or lens than the reference."""
    p_blur: float = 0.6
    blur_sigma: tuple[float, float] = (0.3, 2.2)
    """Gaussian blur sigma range, pixels at the reference scale (defocus, optics)."""
    p_noise: float = 0.5
    noise_sigma: tuple[float, float] = (0.004, 0.035)
    p_jpeg: float = 0.5
    jpeg_quality: tuple[int, int] = (25, 92)


def _uniform(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


def geometric(
    images_u8: torch.Tensor, out_size: int, cfg: AugmentConfig, g: torch.Generator
) -> torch.Tensor:
    """Random rotation, flip, scale and shift; N x H x W x 3 uint8 -> N x 3 x S x S float."""
    n, _, w, _ = images_u8.shape
    x = images_u8.permute(0, 3, 1, 2).float().div_(255.0)
    angle = _uniform(n, 0.0, 2.0 * math.pi, g)
    log_scale = _uniform(n, -math.log(1 + cfg.scale), math.log(1 + cfg.scale), g)
    if cfg.p_wide_scale > 0:
        wide = _uniform(n, math.log(cfg.wide_scale[0]), math.log(cfg.wide_scale[1]), g)
        log_scale = torch.where(torch.rand(n, generator=g) < cfg.p_wide_scale, wide, log_scale)
    scale = torch.exp(log_scale)
    flip = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
    # affine_grid maps output coords in [-1, 1] to input coords in [-1, 1].
    k = (out_size / w) / scale
    cos, sin = torch.cos(angle) * k, torch.sin(angle) * k
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = cos * flip
    theta[:, 0, 1] = -sin
    theta[:, 1, 0] = sin * flip
    theta[:, 1, 1] = cos
    theta[:, :, 2] = _uniform(2 * n, -1.0, 1.0, g).view(n, 2) * (2.0 * cfg.shift_px / w)
    grid = F.affine_grid(theta, [n, 3, out_size, out_size], align_corners=False)
    if not cfg.pad_background:
        return F.grid_sample(
            x, grid, mode="bilinear", padding_mode="reflection", align_corners=False
        )
    white = background(x)
    out = F.grid_sample(x - white, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out + white


def background(x: torch.Tensor) -> torch.Tensor:
    """N x 3 x 1 x 1 background colour: median of the brightest 10 % (as the runtime)."""
    sub = x[:, :, ::4, ::4].flatten(2)  # N x 3 x P
    brightness = sub.sum(dim=1)
    k = max(1, int(0.1 * brightness.shape[1]))
    idx = brightness.topk(k, dim=1).indices  # N x k
    bright = torch.gather(sub, 2, idx.unsqueeze(1).expand(-1, 3, -1))
    return bright.median(dim=2).values.view(-1, 3, 1, 1)


def _apply_matrix(m: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-sample 3 x 3 colour matrix ``m`` (N x 3 x 3) applied to N x 3 x H x W."""
    n, c, h, w = x.shape
    return torch.bmm(m, x.reshape(n, c, h * w)).view(n, c, h, w)


def _subset(
    x: torch.Tensor,
    p: float,
    g: torch.Generator,
    fn: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """Apply ``fn`` to a random fraction ``p`` of the batch (only those are computed)."""
    idx = torch.nonzero(torch.rand(x.shape[0], generator=g) < p).flatten()
    if len(idx) == 0:
        return x
    x = x.clone()
    x[idx] = fn(x[idx])
    return x


def _grey(x: torch.Tensor) -> torch.Tensor:
    luma = 0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
    return luma.expand(-1, 3, -1, -1).contiguous()


def _noise(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    sigma = _uniform(x.shape[0], *cfg.noise_sigma, g).view(-1, 1, 1, 1)
    return (x + sigma * torch.randn(x.shape, generator=g)).clamp(0.0, 1.0)


def stain_jitter(
    x: torch.Tensor, stains: torch.Tensor, cfg: AugmentConfig, g: torch.Generator
) -> torch.Tensor:
    """Change each stain's amount and hue in optical density space (HED-style jitter).

    ``stains`` is 2 x 3 (nuclear, eosin unit OD vectors); the third basis vector is
    their cross product, for what neither explains.
    """
    n = x.shape[0]
    basis = torch.cat([stains, torch.linalg.cross(stains[0], stains[1]).abs().view(1, 3)])
    basis = basis / basis.norm(dim=1, keepdim=True)
    od = -torch.log(x.clamp_min(1.0 / 255.0))  # N x 3 x H x W
    amount = 1.0 + _uniform(3 * n, -cfg.stain_amount, cfg.stain_amount, g).view(n, 3, 1)
    sigma = torch.full((n, 1, 1), cfg.stain_vector)
    if cfg.stain_vector_max > 0:
        sigma = _uniform(n, 0.0, cfg.stain_vector_max, g).view(n, 1, 1)
    new_basis = basis.unsqueeze(0) + sigma * torch.randn(n, 3, 3, generator=g)
    new_basis = new_basis.abs()
    new_basis = new_basis / new_basis.norm(dim=2, keepdim=True)
    # od' = new_basis^T diag(amount) basis^-T od: one 3 x 3 matrix per sample.
    m = new_basis.transpose(1, 2) @ (amount * torch.linalg.inv(basis).T.unsqueeze(0))
    od = _apply_matrix(m, od)
    if cfg.channel_od > 0:
        od = od * torch.exp(_uniform(3 * n, -cfg.channel_od, cfg.channel_od, g)).view(n, 3, 1, 1)
    return torch.exp(-od.clamp_min(0.0))


def colour(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """Illumination colour, gamma, contrast, hue and saturation of the camera."""
    n = x.shape[0]
    gain = 1.0 + _uniform(3 * n, -cfg.gain, cfg.gain, g).view(n, 3, 1, 1)
    gain = gain * (1.0 + _uniform(n, -cfg.gain, cfg.gain, g).view(n, 1, 1, 1))
    x = (x * gain).clamp(0.0, 1.0)
    gamma = torch.exp(_uniform(n, -cfg.gamma, cfg.gamma, g)).view(n, 1, 1, 1)
    x = x.clamp_min(1e-4) ** gamma
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    low = cfg.contrast_low if cfg.contrast_low > 0 else cfg.contrast
    c = 1.0 + _uniform(n, -low, cfg.contrast, g).view(n, 1, 1, 1)
    x = (x - mean) * c + mean
    # Hue: rotation about the grey axis (Rodrigues); saturation: distance from grey.
    a = _uniform(n, -cfg.hue_rad, cfg.hue_rad, g)
    s = 1.0 + _uniform(n, -cfg.saturation, cfg.saturation, g)
    u = torch.full((3,), 1.0 / math.sqrt(3.0))
    uu = torch.outer(u, u)
    ux = torch.tensor([[0.0, -u[2], u[1]], [u[2], 0.0, -u[0]], [-u[1], u[0], 0.0]])
    cos, sin = torch.cos(a).view(n, 1, 1), torch.sin(a).view(n, 1, 1)
    rot = cos * torch.eye(3) + sin * ux + (1 - cos) * uu
    m = uu + s.view(n, 1, 1) * (rot - uu)  # keep grey, scale chroma by s after rotating
    return _apply_matrix(m, x).clamp(0.0, 1.0)


def lowres(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Area-downscale by ``factor`` and bilinear upscale back: lost resolution."""
    h, w = x.shape[2:]
    small = F.interpolate(
        x, size=(max(4, round(h / factor)), max(4, round(w / factor))), mode="area"
    )
    return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)


def blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur with one sigma (pixels) per sample."""
    n, c, h, w = x.shape
    radius = max(1, math.ceil(3.0 * float(sigma.max())))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t.view(1, -1) / sigma.view(-1, 1).clamp_min(1e-3)) ** 2)
    k = k / k.sum(dim=1, keepdim=True)  # n x K
    k = k.repeat_interleave(c, dim=0)  # (n*c) x K
    y = F.pad(x.reshape(1, n * c, h, w), (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, k.view(n * c, 1, 1, -1), groups=n * c)
    y = F.conv2d(y, k.view(n * c, 1, -1, 1), groups=n * c)
    return y.view(n, c, h, w)


_JPEG_LUMA = torch.tensor(
    [
        [16, 11, 10, 16, 24, 40, 51, 61],
        [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56],
        [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77],
        [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101],
        [72, 92, 95, 98, 112, 100, 103, 99],
    ],
    dtype=torch.float32,
)
_JPEG_CHROMA = torch.full((8, 8), 99.0)
_JPEG_CHROMA[:4, :4] = torch.tensor(
    [[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99], [47, 66, 99, 99]], dtype=torch.float32
)


def _dct_matrix() -> torch.Tensor:
    i = torch.arange(8, dtype=torch.float32)
    m = torch.cos((2 * i.view(1, -1) + 1) * i.view(-1, 1) * math.pi / 16) * math.sqrt(2 / 8)
    m[0] /= math.sqrt(2.0)
    return m


_DCT = _dct_matrix()
_DCT_FILTERS = torch.einsum("ui,vj->uvij", _DCT, _DCT).reshape(64, 1, 8, 8)
"""Basis image (u, v) of the orthonormal 8 x 8 DCT-II, as conv2d weights."""
_RGB2YCC = torch.tensor(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]]
)
_YCC2RGB = torch.linalg.inv(_RGB2YCC)
_YCC_OFFSET = torch.tensor([128.0, 0.0, 0.0]).view(1, 3, 1, 1)


def jpeg(x: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """JPEG round trip (4:2:0 chroma, IJG quality scaling), one quality per sample.

    H and W must be multiples of 16.
    """
    n, _, h, w = x.shape
    ycc = _apply_matrix(_RGB2YCC.expand(n, 3, 3), x * 255.0) - _YCC_OFFSET
    q = quality.float().clamp(1, 100)
    scale = torch.where(q < 50, 5000 / q, 200 - 2 * q) / 100

    def roundtrip(ch: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        # 8 x 8 block DCT as a stride-8 convolution with the 64 DCT basis images.
        coef = F.conv2d(ch, _DCT_FILTERS, stride=8)
        qt = (table.reshape(1, 64, 1, 1) * scale.view(n, 1, 1, 1)).floor().clamp(1, 255)
        coef = torch.round(coef / qt) * qt
        return F.conv_transpose2d(coef, _DCT_FILTERS, stride=8)

    y = roundtrip(ycc[:, :1], _JPEG_LUMA)
    chroma = F.avg_pool2d(ycc[:, 1:], 2).reshape(2 * n, 1, h // 2, w // 2)
    scale = scale.repeat_interleave(2)
    n = 2 * n
    chroma = roundtrip(chroma, _JPEG_CHROMA).reshape(-1, 2, h // 2, w // 2)
    chroma = F.interpolate(chroma, scale_factor=2.0, mode="bilinear")
    out = torch.cat([y, chroma], dim=1) + _YCC_OFFSET
    rgb = _apply_matrix(_YCC2RGB.expand(out.shape[0], 3, 3), out) / 255.0
    return rgb.clamp(0.0, 1.0)


def augment(
    images_u8: torch.Tensor,
    out_size: int,
    stains: torch.Tensor,
    cfg: AugmentConfig,
    g: torch.Generator,
) -> torch.Tensor:
    """N x H x W x 3 uint8 RGB -> N x S x S x 3 uint8 RGB, augmented."""
    x = geometric(images_u8, out_size, cfg, g)
    if cfg.strong:
        if cfg.p_grey > 0:
            x = _subset(x, cfg.p_grey, g, _grey)
        x = _subset(x, cfg.p_colour, g, lambda v: stain_jitter(v, stains, cfg, g))
        x = _subset(x, cfg.p_colour, g, lambda v: colour(v, cfg, g))
        x = _subset(x, cfg.p_blur, g, lambda v: blur(v, _uniform(len(v), *cfg.blur_sigma, g)))
        if cfg.p_lowres > 0:
            factor = float(_uniform(1, *cfg.lowres, g))  # one factor per batch: one resize
            x = _subset(x, cfg.p_lowres, g, lambda v: lowres(v, factor))
        x = _subset(x, cfg.p_noise, g, lambda v: _noise(v, cfg, g))
        x = _subset(
            x,
            cfg.p_jpeg,
            g,
            lambda v: jpeg(
                v,
                torch.randint(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1, (len(v),), generator=g),
            ),
        )
    u8 = (x * 255.0 + 0.5).clamp(0, 255).to(torch.uint8)
    return u8.permute(0, 2, 3, 1).contiguous()


def stain_basis(images: np.ndarray, crop: int) -> torch.Tensor:
    """The training images' own stain vectors (Macenko, on every 25th centre crop): the
    basis the stain-jitter augmentation perturbs."""
    h, w = images.shape[1:3]
    y0, x0 = (h - crop) // 2, (w - crop) // 2
    crops = images[::25, y0 : y0 + crop, x0 : x0 + crop]
    ref = stain.fit_reference(list(crops), "macenko")
    return torch.tensor(ref.stains, dtype=torch.float32)
