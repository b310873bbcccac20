"""On-device data augmentation of a batch of pixel-space images, one independent draw per image.

Usage (inside the jitted step; ``x`` float (B, H, W, C) in [0, 1])::

    x = augment(key, x, "crop_flip")      # or "full"; "none" returns x

Modes (docs/reference-code.md §3 "Augmentation", the reference's torchvision pipeline, in its order):

- ``crop_flip``: RandomCrop(H×W, padding 4, zero fill) then RandomHorizontalFlip(p 0.5): the image is zero-padded
  to (H+8, W+8), a window at offsets (dy, dx) ~ U{0..8}² is cut out, and the columns are reversed with
  probability ½. Output pixel (i, j) = padded[i + dy, j' + dx] with j' = j or W−1−j.
- ``full``: ``crop_flip``, then ColorJitter(brightness 0.2, contrast 0.2, saturation 0.2, hue 0.1), then
  RandomAffine(degrees 15, translate 0.1, scale (0.9, 1.1), shear 10, bilinear, zero fill), as torchvision does:

  * jitter factors b, c, s ~ U[0.8, 1.2], h ~ U[−0.1, 0.1], applied in a random order (a uniform permutation):
    brightness x ← clip(b·x); contrast x ← clip(c·x + (1−c)·mean(gray(x))); saturation x ← clip(s·x + (1−s)·gray(x));
    hue: RGB → HSV, H ← (H + h) mod 1, HSV → RGB (torchvision's formulas); gray = 0.299 R + 0.587 G + 0.114 B.
    On one-channel images saturation and hue are the identity (as torchvision's).
  * affine: angle a ~ U[−15°, 15°], translation (round(U[−0.1 W, 0.1 W]), round(U[−0.1 H, 0.1 H])) pixels, scale
    ~ U[0.9, 1.1], x-shear ~ U[−10°, 10°]; output pixel at centred coordinates p = (col − (W−1)/2, row − (H−1)/2)
    samples the input bilinearly at M⁻¹·p with torchvision's inverse matrix (``_get_inverse_affine_matrix``,
    centre at the image centre); outside the image the value is 0.

Every operation maps [0, 1] into [0, 1] and acts on each image alone, so labels stay with their images. Per-image
keys are ``split(key, B)``; the trainer derives ``key`` from the member's key, a named stream and the step
(:func:`crobust.training.population.stream_key`), never from the member's position.
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
from jax.scipy.ndimage import map_coordinates

from crobust._errors import check_choice

MODES = ("none", "crop_flip", "full")
PAD = 4
JITTER = dict(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.1)
AFFINE = dict(degrees=15.0, translate=0.1, scale=(0.9, 1.1), shear=10.0)


def augment(key, x, mode: str):
    """Augment a batch x (B, H, W, C) in [0, 1]: each image its own draw from ``split(key, B)``."""
    check_choice("augment", mode, MODES)
    if mode == "none":
        return x
    one = crop_flip if mode == "crop_flip" else full
    return jax.vmap(one)(jax.random.split(key, x.shape[0]), x)


def crop_flip(key, img, pad: int = PAD):
    """One image (H, W, C): random crop of the zero-padded image, then a horizontal flip with probability ½."""
    h, w, c = img.shape
    k_y, k_x, k_f = jax.random.split(key, 3)
    padded = jnp.pad(img, ((pad, pad), (pad, pad), (0, 0)))
    dy = jax.random.randint(k_y, (), 0, 2 * pad + 1)
    dx = jax.random.randint(k_x, (), 0, 2 * pad + 1)
    out = jax.lax.dynamic_slice(padded, (dy, dx, jnp.zeros((), dy.dtype)), (h, w, c))
    return jnp.where(jax.random.bernoulli(k_f), out[:, ::-1], out)


def full(key, img):
    """One image: :func:`crop_flip`, :func:`color_jitter`, :func:`random_affine` (the reference's ``--aug full``)."""
    k1, k2, k3 = jax.random.split(key, 3)
    return random_affine(k3, color_jitter(k2, crop_flip(k1, img)))


# --------------------------------------------------------------------------------------------------------------
# Colour jitter

def _gray(img):
    if img.shape[-1] == 1:
        return img[..., 0]
    return 0.299 * img[..., 0] + 0.587 * img[..., 1] + 0.114 * img[..., 2]


def _rgb_to_hsv(img):
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    maxc, minc = jnp.max(img, -1), jnp.min(img, -1)
    eqc = maxc == minc
    cr = maxc - minc
    s = cr / jnp.where(eqc, 1.0, maxc)
    div = jnp.where(eqc, 1.0, cr)
    rc, gc, bc = (maxc - r) / div, (maxc - g) / div, (maxc - b) / div
    hr = jnp.where(maxc == r, bc - gc, 0.0)
    hg = jnp.where((maxc == g) & (maxc != r), 2.0 + rc - bc, 0.0)
    hb = jnp.where((maxc != g) & (maxc != r), 4.0 + gc - rc, 0.0)
    h = jnp.mod((hr + hg + hb) / 6.0 + 1.0, 1.0)
    return h, s, maxc


def _hsv_to_rgb(h, s, v):
    i = jnp.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.astype(jnp.int32) % 6
    p = jnp.clip(v * (1.0 - s), 0.0, 1.0)
    q = jnp.clip(v * (1.0 - s * f), 0.0, 1.0)
    t = jnp.clip(v * (1.0 - s * (1.0 - f)), 0.0, 1.0)
    pick = lambda *opts: jnp.select([i == k for k in range(6)], opts)
    return jnp.stack([pick(v, q, p, p, t, v), pick(t, v, v, q, p, p), pick(p, p, t, v, v, q)], -1)


def color_jitter(key, img, brightness=JITTER["brightness"], contrast=JITTER["contrast"],
                 saturation=JITTER["saturation"], hue=JITTER["hue"]):
    """torchvision ColorJitter on one image (H, W, C) in [0, 1] (module docstring)."""
    k_order, k_b, k_c, k_s, k_h = jax.random.split(key, 5)
    b = jax.random.uniform(k_b, (), minval=1 - brightness, maxval=1 + brightness)
    c = jax.random.uniform(k_c, (), minval=1 - contrast, maxval=1 + contrast)
    s = jax.random.uniform(k_s, (), minval=1 - saturation, maxval=1 + saturation)
    hh = jax.random.uniform(k_h, (), minval=-hue, maxval=hue)
    colour = img.shape[-1] == 3

    def f_brightness(x):
        return jnp.clip(b * x, 0.0, 1.0)

    def f_contrast(x):
        return jnp.clip(c * x + (1.0 - c) * jnp.mean(_gray(x)), 0.0, 1.0)

    def f_saturation(x):
        return jnp.clip(s * x + (1.0 - s) * _gray(x)[..., None], 0.0, 1.0) if colour else x

    def f_hue(x):
        if not colour:
            return x
        h, sat, v = _rgb_to_hsv(x)
        return _hsv_to_rgb(jnp.mod(h + hh, 1.0), sat, v)

    ops = [f_brightness, f_contrast, f_saturation, f_hue]
    order = jax.random.permutation(k_order, 4)
    for pos in range(4):
        img = jax.lax.switch(order[pos], ops, img)
    return img


# --------------------------------------------------------------------------------------------------------------
# Random affine

def inverse_affine_matrix(angle, translate, scale, shear_x):
    """torchvision's ``_get_inverse_affine_matrix`` about the centre (0, 0), angles in degrees: a (2, 3) matrix
    mapping an output pixel's centred (x, y, 1) to the input position it samples."""
    rot, sx = jnp.deg2rad(angle), jnp.deg2rad(shear_x)
    tx, ty = translate
    a = jnp.cos(rot)                       # y-shear is 0, so cos(rot − sy)/cos(sy) = cos(rot)
    b = -jnp.cos(rot) * jnp.tan(sx) - jnp.sin(rot)
    c = jnp.sin(rot)
    d = -jnp.sin(rot) * jnp.tan(sx) + jnp.cos(rot)
    m = jnp.stack([d, -b, 0.0 * a, -c, a, 0.0 * a]) / scale
    m = m.at[2].add(m[0] * (-tx) + m[1] * (-ty))
    m = m.at[5].add(m[3] * (-tx) + m[4] * (-ty))
    return m.reshape(2, 3)


def random_affine(key, img, degrees=AFFINE["degrees"], translate=AFFINE["translate"], scale=AFFINE["scale"],
                  shear=AFFINE["shear"]):
    """torchvision RandomAffine (bilinear, zero fill) on one image (H, W, C) (module docstring)."""
    h, w, _ = img.shape
    k_a, k_tx, k_ty, k_s, k_sh = jax.random.split(key, 5)
    angle = jax.random.uniform(k_a, (), minval=-degrees, maxval=degrees)
    tx = jnp.round(jax.random.uniform(k_tx, (), minval=-translate * w, maxval=translate * w))
    ty = jnp.round(jax.random.uniform(k_ty, (), minval=-translate * h, maxval=translate * h))
    sc = jax.random.uniform(k_s, (), minval=scale[0], maxval=scale[1])
    sh = jax.random.uniform(k_sh, (), minval=-shear, maxval=shear)
    return warp(img, inverse_affine_matrix(angle, (tx, ty), sc, sh))


def warp(img, matrix):
    """out[row, col] = bilinear sample of img at M·(col − (W−1)/2, row − (H−1)/2, 1) (centred, zero outside)."""
    h, w, _ = img.shape
    rows, cols = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32), indexing="ij")
    pts = jnp.stack([cols - (w - 1) / 2.0, rows - (h - 1) / 2.0, jnp.ones_like(rows)])       # (3, H, W)
    src = jnp.einsum("ij,jhw->ihw", matrix, pts)
    src_col, src_row = src[0] + (w - 1) / 2.0, src[1] + (h - 1) / 2.0
    sample = lambda ch: map_coordinates(ch, [src_row, src_col], order=1, mode="constant", cval=0.0)
    return jnp.clip(jax.vmap(sample, in_axes=-1, out_axes=-1)(img), 0.0, 1.0)


__all__ = ["MODES", "augment", "crop_flip", "full", "color_jitter", "random_affine", "inverse_affine_matrix", "warp"]
