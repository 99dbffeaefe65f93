"""Backbone registry and model construction.

Each backbone knows its default input size and its preprocessing; the preprocessing is built into
the model as plain Keras layers, so every saved or exported model takes raw RGB 0-255 and nobody
downstream has to remember that MobileNetV2 wants [-1, 1] and ResNet50 wants Caffe-style BGR means.

Only standard layers are used (Rescaling, a frozen Dense for the Caffe channel swap), which keeps
``model.keras`` loadable in safe mode and the ONNX graph to exactly one input.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgecat.errors import EdgecatError, first_line

log = logging.getLogger(__name__)

CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@dataclass(frozen=True)
class Backbone:
    """What edgecat must know about a keras.applications family to train and export it."""

    name: str
    #: dotted name of the keras.applications constructor
    constructor: str
    default_size: int
    #: what edgecat puts in front of the backbone, equal to the family's Keras ``preprocess_input``:
    #: "tf" ([-1, 1]), "caffe" (BGR, ImageNet mean subtracted), "torch" (ImageNet mean/std) or
    #: "none" (the Keras model rescales its input itself: EfficientNet, MobileNetV3)
    preprocessing: str
    #: base layers unfrozen in stage 2 when the user does not say (a block boundary of the family)
    default_unfreeze: int = 100
    min_size: int = 32
    #: False for families without BatchNormalization (VGG16): nothing to keep in inference mode
    #: during fine-tuning, nothing to recalibrate after training from scratch
    batchnorm: bool = True
    #: the keras.applications module whose ``preprocess_input`` the preprocessing reproduces
    keras_module: str = ""


#: One line per backbone. Unfreeze depths end on a block boundary: VGG16's block5, InceptionV3's
#: last two inception blocks (the Keras fine-tuning example's 249 frozen layers), EfficientNet's
#: stages 6-7, MobileNetV3's last two stages; MobileNetV2 and ResNet50 keep the guide's 100.
#: EfficientNet and MobileNetV3 rescale inside the Keras model (their ``preprocess_input`` is the
#: identity), so edgecat adds nothing in front of them.
BACKBONES: dict[str, Backbone] = {b.name: b for b in (
    Backbone("mobilenet_v2", "MobileNetV2", 224, "tf", 100, keras_module="mobilenet_v2"),
    Backbone("mobilenet_v3_small", "MobileNetV3Small", 224, "none", 77, keras_module="mobilenet_v3"),
    Backbone("mobilenet_v3_large", "MobileNetV3Large", 224, "none", 77, keras_module="mobilenet_v3"),
    Backbone("resnet50", "ResNet50", 224, "caffe", 100, keras_module="resnet50"),
    Backbone("vgg16", "VGG16", 224, "caffe", 4, batchnorm=False, keras_module="vgg16"),
    Backbone("inception_v3", "InceptionV3", 299, "tf", 62, min_size=75, keras_module="inception_v3"),
    Backbone("efficientnet_b0", "EfficientNetB0", 224, "none", 75, keras_module="efficientnet"),
    Backbone("efficientnet_b1", "EfficientNetB1", 240, "none", 105, keras_module="efficientnet"),
    Backbone("efficientnet_b2", "EfficientNetB2", 260, "none", 105, keras_module="efficientnet"),
    Backbone("efficientnet_b3", "EfficientNetB3", 300, "none", 120, keras_module="efficientnet"),
)}


def effective_unfreeze(spec: Backbone, value: int | None) -> int:
    """Stage-2 unfreeze depth: the user's value when given, else the backbone's own default
    (100 layers is all of VGG16 but a third of InceptionV3, so one global default fits none)."""
    if value is None:
        return spec.default_unfreeze
    if int(value) < 0:
        raise EdgecatError(f"--unfreeze must be >= 0 (got {value})")
    return int(value)


def get_backbone(name: str) -> Backbone:
    """``mobilenet_v3_small``, ``MobileNet-V3-Small`` and the Keras name ``MobileNetV3Small`` alike."""
    key = name.lower().replace("-", "").replace("_", "")
    for spec in BACKBONES.values():
        if key in (spec.name.replace("_", ""), spec.constructor.lower()):
            return spec
    raise EdgecatError(f"unknown backbone '{name}' (choose from: {', '.join(BACKBONES)})")


def preprocessing_layers(mode: str) -> list[Any]:
    """Layers that turn raw RGB 0-255 into what the backbone was trained on."""
    import keras
    import numpy as np

    if mode == "tf":
        return [keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocess_tf")]
    if mode == "caffe":
        # RGB -> BGR and mean subtraction as one frozen 3x3 matmul + bias: exact, and a plain layer.
        perm = np.zeros((3, 3), dtype="float32")
        for i in range(3):
            perm[i, 2 - i] = 1.0
        layer = keras.layers.Dense(3, name="preprocess_caffe", trainable=False)
        layer.build((None, None, None, 3))
        layer.set_weights([perm, -np.asarray(CAFFE_MEAN_BGR, dtype="float32")])
        return [layer]
    if mode == "torch":
        mean = np.asarray([0.485, 0.456, 0.406]) * 255.0
        std = np.asarray([0.229, 0.224, 0.225]) * 255.0
        return [keras.layers.Rescaling(list(1.0 / std), offset=list(-mean / std), name="preprocess_torch")]
    if mode == "none":
        return []
    raise EdgecatError(f"unknown preprocessing mode '{mode}'")


def resolve_weights(weights: str | None, spec: Backbone | None = None,
                    size: int | None = None) -> tuple[str | None, Path | None]:
    """``imagenet`` | ``none`` | PATH (a Keras weights file or a bundle) -> (keras arg, local path).

    ``imagenet`` is looked for locally first (see :mod:`edgecat.weights`): a found official file is
    linked into Keras' cache, so Keras builds what it builds online without a download, and an
    offline machine without it fails in one line; without ``spec`` it stays a plain Keras download."""
    if weights is None or str(weights).lower() in ("none", "null", "random", ""):
        return None, None
    if str(weights).lower() == "imagenet":
        if spec is None:
            return "imagenet", None
        from edgecat.weights import locate_imagenet, stage_for_keras

        local = locate_imagenet(spec.constructor, int(size or spec.default_size))
        if local is not None:
            stage_for_keras(local)
        return "imagenet", None
    path = Path(weights)
    if not path.exists():
        raise EdgecatError(
            f"weights file not found: {path} (use 'imagenet', 'none', a local Keras weights file or a bundle)"
        )
    return None, path


def bundle_backbone_weights(path: Path, backbone: str) -> list[Any]:
    """The backbone weights of a bundle's trained model: fine-tune from an earlier run offline."""
    import keras

    from edgecat.bundle import Bundle

    bundle = Bundle.open(path)
    if bundle.backbone != backbone:
        raise EdgecatError(f"--weights {path}: that bundle is a {bundle.backbone}, not a {backbone}")
    from edgecat.runtime.keras.loader import load_keras_model

    model = load_keras_model(bundle.artifact_path("keras"))
    bases = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if not bases:
        raise EdgecatError(f"--weights {path}: no backbone found in its model.keras")
    return bases[0].get_weights()


@contextlib.contextmanager
def _hard_sigmoid_as_one_layer() -> Iterator[None]:
    """Keras' MobileNetV3 writes hard-sigmoid as ``ReLU(6.0)(x + 3.0) * (1.0 / 6.0)``: two bare ops
    in the functional graph, which legacy HDF5 cannot load back ("Only input tensors may be passed
    as positional arguments"), so model.h5 would be unusable. The same function as one standard
    ``Activation("hard_sigmoid")`` layer (relu6(x + 3) / 6, no weights either way) loads anywhere;
    ImageNet weights load unchanged. Swapped in only while the constructor runs."""
    import keras

    try:
        from keras.src.applications import mobilenet_v3
    except ImportError:  # another Keras layout: build as Keras does (export --h5 then says so)
        yield
        return
    original = getattr(mobilenet_v3, "hard_sigmoid", None)
    if original is None:
        yield
        return
    mobilenet_v3.hard_sigmoid = lambda x: keras.layers.Activation("hard_sigmoid")(x)
    try:
        yield
    finally:
        mobilenet_v3.hard_sigmoid = original


def _constructor(spec: Backbone) -> Callable[..., Any]:
    """The keras.applications constructor of ``spec`` (MobileNetV3: with a one-layer hard-sigmoid)."""
    import keras

    ctor: Callable[..., Any] = getattr(keras.applications, spec.constructor)
    if not spec.constructor.startswith("MobileNetV3"):
        return ctor

    def build(**kwargs: Any) -> Any:
        with _hard_sigmoid_as_one_layer():
            return ctor(**kwargs)

    return build


def build_model(
    backbone: str,
    num_classes: int = 2,
    img_size: int | None = None,
    weights: str | None = "imagenet",
    head: str = "gap",
    dropout: float = 0.2,
    freeze_bn: bool = True,
) -> tuple[Any, Any]:
    """Build (model, base). ``model`` takes raw RGB 0-255 NHWC and outputs probabilities.

    ``head='gap'``: GlobalAveragePooling -> Dropout -> Dense (the Keras transfer-learning guide);
    ``head='dense256'``: GAP -> Dense(256, relu) -> Dropout(0.5) -> Dense.
    ``freeze_bn``: BatchNormalization always in inference mode (fine-tuning pretrained weights);
    False only for training from scratch, where batch statistics must be learnt.
    """
    import keras

    spec = get_backbone(backbone)
    size = int(img_size or spec.default_size)
    if size < spec.min_size:
        raise EdgecatError(f"--img-size {size} is too small for {spec.name} (minimum {spec.min_size})")
    base = _backbone(spec, size, weights, freeze_bn)
    inputs = keras.Input((size, size, 3), name="image", dtype="float32")
    x = inputs
    for layer in preprocessing_layers(spec.preprocessing):
        x = layer(x)
    # training=False keeps BatchNormalization in inference mode even when the base is unfrozen.
    x = base(x, training=False) if freeze_bn else base(x)
    out = _head(keras.layers.GlobalAveragePooling2D(name="pool")(x), head, dropout, num_classes)
    return keras.Model(inputs, out, name=f"edgecat_{spec.name}"), base


def _backbone(spec: Backbone, size: int, weights: str | None, freeze_bn: bool) -> Any:
    """The keras.applications base with its weights (ImageNet, a local file or a bundle's)."""
    import keras

    kw_weights, local = resolve_weights(weights, spec, size)
    ctor: Callable[..., Any] = _constructor(spec)
    try:
        base = ctor(input_shape=(size, size, 3), include_top=False, weights=kw_weights)
    except Exception as exc:  # download failures surface as many exception types
        if kw_weights == "imagenet":
            raise EdgecatError(
                f"cannot get ImageNet weights for {spec.name} ({first_line(exc)[:120]}); "
                "offline, pass --weights PATH (a local Keras weights file) or --weights none"
            ) from exc
        raise
    if local is not None:
        try:
            if local.is_dir():
                base.set_weights(bundle_backbone_weights(local, spec.name))
            else:
                base.load_weights(str(local), skip_mismatch=False)
        except EdgecatError:
            raise
        except Exception as exc:
            raise EdgecatError(f"cannot load weights {local} into {spec.name}: {str(exc)[:200]}") from exc
    if not freeze_bn and spec.batchnorm:
        # Keras' 0.99/0.999 momentum suits fine-tuning; from scratch, moving statistics must
        # follow the fast-changing weights or inference-mode outputs stay meaningless for epochs.
        for layer in base.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = 0.9
    base.name = "backbone"  # stable name: stage-2 unfreezing and feature caching find it
    return base


def _head(x: Any, head: str, dropout: float, num_classes: int) -> Any:
    import keras

    if head == "dense256":
        x = keras.layers.Dense(256, activation="relu", name="head_dense")(x)
        x = keras.layers.Dropout(0.5, name="head_dropout")(x)
    elif head == "gap":
        x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    else:
        raise EdgecatError(f"unknown head '{head}' (choose gap or dense256)")
    if num_classes == 2:
        return keras.layers.Dense(1, activation="sigmoid", name="probabilities", dtype="float32")(x)
    return keras.layers.Dense(num_classes, activation="softmax", name="probabilities", dtype="float32")(x)


def split_at_pool(model: Any) -> tuple[Any, Any]:
    """(feature extractor up to pooling, head on pooled features) sharing the model's own layers.

    Training the head model updates the full model's head weights in place: the stage-1 feature
    cache needs no weight copying.
    """
    import keras

    pool = model.get_layer("pool")
    features = keras.Model(model.input, pool.output, name="features")
    feat_in = keras.Input(pool.output.shape[1:], name="features")
    x = feat_in
    idx = [layer.name for layer in model.layers].index("pool")
    for layer in model.layers[idx + 1 :]:
        x = layer(x)
    head = keras.Model(feat_in, x, name="head")
    return features, head


def set_trainable(base: Any, stage: str, unfreeze: int = 100, freeze_bn: bool = True) -> int:
    """Freeze for stage 1, unfreeze the last ``unfreeze`` base layers for stage 2, or all for 'full'.

    BatchNormalization layers stay frozen unless ``freeze_bn`` is False (training from scratch).
    Returns the number of trainable base layers.
    """
    import keras

    if stage == "frozen":
        base.trainable = False
        return 0
    base.trainable = True
    layers = base.layers
    cut = 0 if stage == "full" else max(0, len(layers) - int(unfreeze))
    n = 0
    for i, layer in enumerate(layers):
        is_bn = isinstance(layer, keras.layers.BatchNormalization)
        trainable = i >= cut and not (is_bn and freeze_bn)
        layer.trainable = trainable
        n += int(trainable)
    return n


def recalibrate_batchnorm(model: Any, batches: Any, max_batches: int = 16) -> int:
    """Recompute every BatchNormalization layer's moving statistics for the current weights.

    Training from scratch moves the weights faster than the moving averages follow, so in inference
    mode a network that is right on 90% of its training batches can answer one constant for every
    image (seen in `make demo`). Averaging the batch statistics of a few training batches under the
    current weights (as SWA's ``update_bn`` does) fixes inference without touching the weights.
    Returns the number of batches used.
    """
    import keras
    import numpy as np

    layers = [lyr for lyr in _all_layers(model) if isinstance(lyr, keras.layers.BatchNormalization)]
    if not layers:
        return 0
    momenta = [lyr.momentum for lyr in layers]
    snapshot = [(np.asarray(lyr.moving_mean), np.asarray(lyr.moving_variance)) for lyr in layers]
    used = 0
    try:
        for batch in batches:
            if used >= max_batches:
                break
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            for lyr in layers:
                lyr.momentum = used / (used + 1.0)  # cumulative mean: batch k weighs 1/(k+1)
            model(x, training=True)
            used += 1
    except BaseException:
        for lyr, (mean, var) in zip(layers, snapshot):  # never leave half-updated statistics behind
            lyr.moving_mean.assign(mean)
            lyr.moving_variance.assign(var)
        raise
    finally:
        for lyr, m in zip(layers, momenta):
            lyr.momentum = m
    return used


def _all_layers(model: Any) -> list[Any]:
    out = []
    for layer in model.layers:
        out.append(layer)
        if hasattr(layer, "layers"):
            out.extend(_all_layers(layer))
    return out
