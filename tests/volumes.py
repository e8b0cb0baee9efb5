"""Small hand-checkable boolean volumes shared by the metric and post-processing tests."""
import numpy as np


def cube(shape=(8, 16, 16), start=(2, 4, 4), size=4):
    """A (S, H, W) bool volume, False except one size³ cube whose first corner is ``start``."""
    volume = np.zeros(shape, bool)
    s, r, c = start
    volume[s:s + size, r:r + size, c:c + size] = True
    return volume
