"""docs/protocol.md's preprocessing parameters and the :class:`Geometry` of a preprocessed volume.

The implementation is :mod:`tfseg.data.preprocess` (TensorFlow). These live apart from it,
without TensorFlow, because the packing cache key, the TFRecord format and the manifest
need them in processes that never preprocess (packing's parent process, tools that only
read a packed folder), and importing TensorFlow costs seconds.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

# Parameters of the reference; part of the TFRecord cache key (tfseg.data.pack).
CROP_THRESHOLD = 0.1  # step 2: voxels below this fraction of the volume's maximum become 0
PERCENTILES = (10.0, 99.0)  # step 5: this intensity range is rescaled to [0, 1]
IMAGE_ORDER = 2  # step 4: spline order of the image resize (masks: order 0)
MIN_SLICES = 3  # the first and the last slice are dropped: at least one must remain


@dataclass(frozen=True)
class Geometry:
    """Where a preprocessed volume sits in its original (S, 256, 256) volume.

    The kept slices are ``z0:z1`` of the original numbering (first and last
    dropped, then cropped), rows ``y0:y1`` and columns ``x0:x1``; the crop was
    padded by ``pad_y = (before, after)`` rows and ``pad_x`` columns to the
    square ``side``, then resized to ``image_size``.

    Stored and passed between graph ops as its flat list of 14 ints (:meth:`to_list`).
    """

    num_slices: int
    height: int
    width: int
    z0: int
    z1: int
    y0: int
    y1: int
    x0: int
    x1: int
    pad_y: tuple[int, int]
    pad_x: tuple[int, int]
    image_size: int

    @property
    def side(self) -> int:
        return self.y1 - self.y0 + sum(self.pad_y)

    def to_list(self) -> list[int]:
        """Flat int list (stored in every TFRecord example; the graph's (14,) int32 tensor)."""
        return [self.num_slices, self.height, self.width, self.z0, self.z1, self.y0, self.y1,
                self.x0, self.x1, *self.pad_y, *self.pad_x, self.image_size]

    @classmethod
    def from_list(cls, values) -> "Geometry":
        v = [int(x) for x in values]
        return cls(*v[:9], pad_y=(v[9], v[10]), pad_x=(v[11], v[12]), image_size=v[13])

    def to_dict(self) -> dict:
        return asdict(self)


GEOMETRY_LENGTH = 14
