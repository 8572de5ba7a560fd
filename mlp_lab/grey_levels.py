"""The one check every way into a trained model makes of its input: raw 0-255 grey levels, or a clear no."""

from __future__ import annotations

import numpy as np


def problem(rows: np.ndarray) -> str | None:
    """What is wrong with ``rows`` as raw 0-255 grey levels, which a model would otherwise misread silently; None if
    nothing is.

    Caught: NaN or infinite values, negative ones (standardised inputs), values above 255 (16-bit
    images), fractions within 0-1 (inputs scaled to 0-1) and images of only 0 and 1 (binarised, or
    bool): as raw grey levels those are black, and a model trained on 0-255 reads them as noise.
    An all-black image passes, as does an empty batch.
    """
    if rows.size == 0:
        return None
    if not np.isfinite(rows).all():
        return "holds NaN or infinite values"
    low, high = float(rows.min()), float(rows.max())
    if low < 0:
        return f"holds negative values (down to {low:g}); expected raw grey levels 0-255, not standardised"
    if high > 255:
        return f"values reach {high:g}; expected raw 8-bit grey levels 0-255"
    if high <= 1 and (rows != np.round(rows)).any():
        return "values lie between 0 and 1; expected raw grey levels 0-255 (multiply by 255)"
    if high == 1:
        return "values are only 0 and 1 (a binarised image?); expected raw grey levels 0-255 (times 255)"
    return None
