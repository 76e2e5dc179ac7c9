"""MNIST digits for the examples: IDX (gzip) reading and the random-label task stream.

The package ships the same 2,000 real MNIST digits that ``safestep run`` embeds
(``safestep/data/``, provenance in ``data/PROVENANCE.md``); :func:`load` reads them, or
any IDX pair given by path (e.g. the 10,000-digit set ``images-idx3-ubyte.gz`` /
``labels-idx1-ubyte.gz`` in a folder). NumPy only.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Iterator, Optional, Tuple, Union

import numpy as np

DATA = Path(__file__).with_name("data")
#: The shipped digits.
IMAGES = DATA / "mnist2000-images-idx3-ubyte.gz"
LABELS = DATA / "mnist2000-labels-idx1-ubyte.gz"


def read_idx(path: Union[str, Path]) -> np.ndarray:
    """An IDX file (gzip or plain) of unsigned bytes as an array of its shape."""
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path}: not an IDX file of unsigned bytes")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: {data.size} bytes for shape {dims}")
    return data.reshape(dims)


def load(folder: Optional[Union[str, Path]] = None) -> Tuple[np.ndarray, np.ndarray]:
    """``(images, labels)``: ``n × 784`` float32 pixels in ``[0, 1]`` (byte/255, as
    ``safestep run``) and ``n`` int64 labels. ``folder=None``: the shipped 2,000 digits;
    else a folder holding ``images-idx3-ubyte.gz`` and ``labels-idx1-ubyte.gz``."""
    if folder is None:
        images, labels = IMAGES, LABELS
    else:
        images = Path(folder) / "images-idx3-ubyte.gz"
        labels = Path(folder) / "labels-idx1-ubyte.gz"
    x = read_idx(images)
    y = read_idx(labels)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{images}: {x.shape[0]} images but {y.shape[0]} labels")
    return x.reshape(x.shape[0], -1).astype(np.float32) / 255.0, y.astype(np.int64)


def random_label_tasks(
    images: np.ndarray, examples: int, tasks: int, seed: int = 0
) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """Random-label MNIST: a fixed seeded subset of ``examples`` images; every task gives
    them fresh uniformly random labels in 0..9."""
    if examples > images.shape[0]:
        raise ValueError(f"examples = {examples}: only {images.shape[0]} images available")
    rng = np.random.default_rng(seed)
    subset = images[rng.choice(images.shape[0], size=examples, replace=False)]
    for _ in range(tasks):
        yield subset, rng.integers(0, 10, size=examples)


def epoch_batches(n: int, batch: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """One epoch of shuffled minibatch indices; a last batch is kept only if it has at
    least two examples (as ``safestep run``)."""
    order = rng.permutation(n)
    for start in range(0, n, batch):
        idx = order[start : start + batch]
        if idx.size >= 2:
            yield idx
