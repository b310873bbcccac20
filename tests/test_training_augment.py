"""crobust.training.augmentation: crop+flip is exactly a shifted/flipped copy of the same image; every mode keeps
[0, 1] and treats each image alone (so labels stay with their images); the colour and affine pieces against
independent references (colorsys, integer shifts, a 90° rotation)."""

import colorsys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crobust._errors import CrobustError
from crobust.training import augmentation as A

B, H, W = 32, 8, 8


def _images(c, seed=0):
    return jax.random.uniform(jax.random.key(seed), (B, H, W, c), jnp.float32)


def _candidates(img, pad=4):
    """Every output crop+flip can give for one image: (dy, dx, flip) → array, built in numpy."""
    padded = np.pad(img, ((pad, pad), (pad, pad), (0, 0)))
    out = {}
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = padded[dy:dy + H, dx:dx + W]
            out[(dy, dx, False)] = crop
            out[(dy, dx, True)] = crop[:, ::-1]
    return out


def test_crop_flip_is_an_exact_shifted_or_flipped_copy_of_the_same_image():
    # distinct values everywhere, so each output matches one candidate of its own image and of no other
    x = (np.arange(B * H * W * 3, dtype=np.float32).reshape(B, H, W, 3) + 1) / (B * H * W * 3 + 1)
    out = np.asarray(A.augment(jax.random.key(1), jnp.asarray(x), "crop_flip"))
    assert out.shape == x.shape and out.dtype == np.float32
    seen = set()
    for i in range(B):
        hits = [k for k, v in _candidates(x[i]).items() if np.array_equal(out[i], v)]
        assert len(hits) == 1, (i, hits)
        seen.add(hits[0])
        for j in (i - 1, (i + 1) % B):                  # not a crop of a neighbour (labels kept)
            assert not any(np.array_equal(out[i], v) for v in _candidates(x[j]).values())
    assert len(seen) > B // 2 and {k[2] for k in seen} == {False, True}       # really random per image


@pytest.mark.parametrize("mode", ["crop_flip", "full"])
@pytest.mark.parametrize("channels", [1, 3])
def test_modes_keep_the_unit_range_and_treat_each_image_alone(mode, channels):
    x = _images(channels)
    key = jax.random.key(2)
    out = np.asarray(A.augment(key, x, mode))
    assert out.shape == x.shape and np.all(np.isfinite(out))
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert not np.array_equal(out, np.asarray(x))
    # changing image 0 changes no other output: image i's result depends on image i (and its key) only
    x2 = x.at[0].set(1.0 - x[0])
    out2 = np.asarray(A.augment(key, x2, mode))
    np.testing.assert_array_equal(out2[1:], out[1:])
    assert not np.array_equal(out2[0], out[0])
    np.testing.assert_array_equal(np.asarray(A.augment(key, x, mode)), out)    # deterministic in the key
    assert A.augment(key, x, "none") is x


def test_rgb_hsv_conversions_match_colorsys():
    rgb = np.array(jax.random.uniform(jax.random.key(3), (200, 3)))
    rgb[:5] = [[0.2, 0.2, 0.2], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0.5, 0.5, 0.0]]   # grey and pure hues
    h, s, v = (np.asarray(a) for a in A._rgb_to_hsv(jnp.asarray(rgb, jnp.float32)))
    ref = np.array([colorsys.rgb_to_hsv(*p) for p in rgb.astype(np.float64)])
    np.testing.assert_allclose(np.stack([h, s, v], -1), ref, atol=2e-6)       # float32 of values in [0, 1]
    back = np.asarray(A._hsv_to_rgb(jnp.asarray(h), jnp.asarray(s), jnp.asarray(v)))
    np.testing.assert_allclose(back, rgb, atol=2e-6)


def test_brightness_alone_scales_every_pixel_by_one_factor():
    x = _images(3) * 0.5                                 # ≤ 0.5, so a factor ≤ 1.2 never clips
    out = np.asarray(jax.vmap(lambda k, im: A.color_jitter(k, im, contrast=0.0, saturation=0.0, hue=0.0))(
        jax.random.split(jax.random.key(4), B), x))
    x = np.asarray(x, np.float64)
    b = np.sum(out * x, axis=(1, 2, 3)) / np.sum(x * x, axis=(1, 2, 3))      # least-squares factor per image
    # hue 0 still goes through RGB→HSV→RGB: float32 round-off of values ≤ 0.6 only
    np.testing.assert_allclose(out, b[:, None, None, None] * x, atol=2e-6)
    assert np.all((b >= 0.8 - 1e-6) & (b <= 1.2 + 1e-6)) and np.ptp(b) > 0.05


def test_affine_warp_translates_and_rotates_about_the_centre():
    img = np.asarray(_images(2)[0])
    # an integer translation (tx, ty) = (2, −1): out[r, c] = img[r + 1, c − 2], zero where that is outside
    out = np.asarray(A.warp(jnp.asarray(img), A.inverse_affine_matrix(0.0, (2.0, -1.0), 1.0, 0.0)))
    ref = np.zeros_like(img)
    ref[:H - 1, 2:] = img[1:, :W - 2]
    np.testing.assert_array_equal(out, ref)
    # a quarter turn of a square image about its centre is a rot90 (bilinear weights 0/1 up to cos(90°) round-off)
    out = np.asarray(A.warp(jnp.asarray(img), A.inverse_affine_matrix(90.0, (0.0, 0.0), 1.0, 0.0)))
    assert min(np.max(np.abs(out - np.rot90(img, k, axes=(0, 1)))) for k in (1, 3)) < 1e-5
    # scale 1, no rotation/shear/translation: the identity
    np.testing.assert_array_equal(np.asarray(A.warp(jnp.asarray(img), A.inverse_affine_matrix(0.0, (0.0, 0.0), 1.0,
                                                                                               0.0))), img)


def test_unknown_mode_is_refused():
    with pytest.raises(CrobustError, match="augment.*crop_flip"):
        A.augment(jax.random.key(0), _images(1), "flip")
