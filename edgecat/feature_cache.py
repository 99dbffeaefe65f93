"""Two-stage training on cached outputs of the frozen layers: the same math, computed once.

In both stages of the two-stage schedule the layers before the first trainable one never change and
BatchNormalization runs in inference mode, so what they output for a given (augmented) image is a
constant. Pushing every image through them every epoch is what made a 224 px pretrained run take
16 minutes on two cores. Instead, one pass over ``views`` augmented copies of the training set keeps

- the pooled features (stage 1 trains the head on them), and
- the activations at the stage-2 boundary, the last point before the first unfrozen layer where a
  single tensor carries everything (stage 2 trains the unfrozen tail on them).

Epoch ``e`` of a stage trains on view ``e mod views``: with at least as many views as epochs this is
what uncached training sees (a fresh augmentation of every image per epoch); fewer views repeat them.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: refuse to cache more than this share of the memory that is free (uncached training instead)
MEMORY_SHARE = 0.5


def boundary_index(base: Any, cut: int) -> int:
    """The largest ``b < cut`` such that ``base.layers[b]``'s output is the only tensor that layers
    from ``b + 1`` on read from earlier ones (no residual branch crosses it); -1 for the input."""
    layers = base.layers
    pos = {layer.name: i for i, layer in enumerate(layers)}
    last_read: dict[int, int] = {}
    for i, layer in enumerate(layers):
        for node in layer._inbound_nodes:
            for tensor in _flatten(node.input_tensors):
                producer = tensor._keras_history.operation.name
                if producer in pos:
                    last_read[pos[producer]] = max(last_read.get(pos[producer], -1), i)
    for b in range(min(cut, len(layers)) - 1, -1, -1):
        live = [p for p, reader in last_read.items() if p <= b < reader]
        if live == [b] or (not live and b == len(layers) - 1):
            return b
    return -1


def _flatten(x: Any) -> list[Any]:
    import keras

    return list(keras.tree.flatten(x))


@dataclass
class FrozenSplit:
    """The model cut where its frozen part ends; every model here shares the trained model's layers,
    so fitting ``tail`` or ``head`` trains the full model in place."""

    #: raw images -> [boundary activations, pooled features] (the boundary output is omitted when
    #: stage 2 has nothing to cache)
    extractor: Any
    #: pooled features -> probabilities
    head: Any
    #: boundary activations -> probabilities, or None
    tail: Any
    boundary: str
    boundary_shape: tuple[int, ...]


def split_frozen(model: Any, base: Any, cut: int | None) -> FrozenSplit:
    """Cut ``model`` (preprocessing -> ``base`` -> pool -> head) after the frozen part.

    ``cut``: index of the first base layer stage 2 trains; None when there is no stage 2."""
    import keras

    from edgecat.models import split_at_pool

    names = [layer.name for layer in model.layers]
    pre = model.layers[1:names.index(base.name)]
    pool = model.get_layer("pool")
    _, head = split_at_pool(model)
    b = boundary_index(base, cut) if cut is not None else len(base.layers) - 1
    x = model.input
    for layer in pre:
        x = layer(x)
    if b >= len(base.layers) - 1:  # nothing of the base trains: pooled features only
        feats = pool(base(x, training=False))
        return FrozenSplit(keras.Model(model.input, [feats], name="frozen_features"), head, None, "pool", ())
    bnd = base.input if b < 0 else base.layers[b].output
    inner = keras.Model(base.input, [bnd, base.output], name="frozen_part")
    boundary, full = inner(x, training=False)
    extractor = keras.Model(model.input, [boundary, pool(full)], name="frozen_features")
    t_in = keras.Input(tuple(bnd.shape[1:]), name="boundary")
    y = keras.Model(bnd, base.output, name="unfrozen_part")(t_in, training=False)
    y = pool(y)
    for layer in model.layers[names.index("pool") + 1:]:
        y = layer(y)
    name = "input" if b < 0 else base.layers[b].name
    return FrozenSplit(extractor, head, keras.Model(t_in, y, name="tail"), name, tuple(bnd.shape[1:]))


@dataclass
class FeatureCache:
    """``views`` x training samples of each cached quantity, validation samples once."""

    pooled: np.ndarray  # (views, n, features) float32
    labels: np.ndarray
    val_pooled: np.ndarray
    val_labels: np.ndarray
    boundary: np.ndarray | None = None  # (views, n, ...) float16: half the memory, ~1e-3 relative
    val_boundary: np.ndarray | None = None  # float32: the epoch a run keeps is chosen on these
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)


def cache_bytes(split: FrozenSplit, views: int, n_train: int, n_val: int) -> int:
    per = int(np.prod(split.boundary_shape)) if split.tail is not None else 0
    return per * (2 * views * n_train + 4 * n_val)


def fits_in_memory(nbytes: int) -> bool:
    import psutil

    return nbytes <= MEMORY_SHARE * psutil.virtual_memory().available


def collect(split: FrozenSplit, train_batches: Callable[[], Iterable[Any]], val_batches: Iterable[Any],
            views: int, progress: Callable[[int], None] | None = None) -> FeatureCache:
    """One pass per view over the (augmented, unshuffled) training batches, one over validation."""
    import tensorflow as tf

    run = tf.function(lambda x: split.extractor(x, training=False), reduce_retracing=True)
    with_boundary = split.tail is not None
    t0 = time.perf_counter()

    def one_pass(batches: Iterable[Any], fp16: bool) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
        bnd, pooled, ys = [], [], []
        for x, y in batches:
            outs = run(x)
            outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]  # Keras unwraps one output
            if with_boundary:
                bnd.append(outs[0].numpy().astype(np.float16 if fp16 else np.float32))
            pooled.append(outs[-1].numpy())
            ys.append(y.numpy())
            if progress:
                progress(len(ys[-1]))
        return (np.concatenate(bnd) if bnd else None), np.concatenate(pooled), np.concatenate(ys)

    passes = [one_pass(train_batches(), fp16=True) for _ in range(views)]
    vb, vp, vy = one_pass(val_batches, fp16=False)
    secs = time.perf_counter() - t0
    labels = passes[0][2]
    cache = FeatureCache(
        pooled=np.stack([p[1] for p in passes]), labels=labels, val_pooled=vp, val_labels=vy,
        boundary=np.stack([p[0] for p in passes]) if with_boundary else None, val_boundary=vb, seconds=secs)
    cache.info = {"views": views, "boundary": split.boundary, "train_images": int(len(labels)),
                  "val_images": int(len(vy)), "seconds": round(secs, 2),
                  "megabytes": round(sum(a.nbytes for a in (cache.pooled, cache.boundary, cache.val_boundary)
                                         if a is not None) / 2**20, 1)}
    log.info("feature cache: %d view(s) of %d training + %d validation images through the frozen layers "
             "in %.1fs (boundary %s, %.0f MB)", views, len(labels), len(vy), secs, split.boundary,
             cache.info["megabytes"])
    return cache


def view_batches(views: np.ndarray, labels: np.ndarray, batch_size: int, seed: int, first_epoch: int) -> Any:
    """A Keras dataset that serves view ``epoch mod len(views)``, reshuffled every epoch."""
    import keras

    class ViewBatches(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__()
            self.epoch = first_epoch
            self._shuffle()

        def _shuffle(self) -> None:
            self.order = np.random.default_rng(seed + self.epoch).permutation(len(labels))

        def __len__(self) -> int:
            return math.ceil(len(labels) / batch_size)

        def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
            idx = self.order[i * batch_size:(i + 1) * batch_size]
            return views[self.epoch % len(views)][idx].astype(np.float32), labels[idx]

        def on_epoch_end(self) -> None:
            self.epoch += 1
            self._shuffle()

    return ViewBatches()
