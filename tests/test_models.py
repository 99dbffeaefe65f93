"""Backbone registry, built-in preprocessing, heads and stage-2 unfreezing (weights=None, 32 px)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import needs_tf
from edgecat.errors import EdgecatError
from edgecat.models import BACKBONES, get_backbone

pytestmark = needs_tf


def test_registry_knows_input_size_and_preprocessing() -> None:
    assert {"mobilenet_v2", "resnet50"} <= set(BACKBONES)
    assert get_backbone("MobileNet-V2").preprocessing == "tf"
    assert get_backbone("resnet50").preprocessing == "caffe"
    assert get_backbone("resnet50").default_size == 224


def test_unknown_backbone_is_a_clear_error() -> None:
    with pytest.raises(EdgecatError, match="unknown backbone 'vgg99'.*mobilenet_v2"):
        get_backbone("vgg99")


@pytest.mark.parametrize("backbone", ["mobilenet_v2", "resnet50"])
def test_build_takes_raw_rgb_and_outputs_probabilities(backbone: str) -> None:
    from edgecat.models import build_model

    model, base = build_model(backbone, num_classes=2, img_size=32, weights="none")
    assert base.name == "backbone"
    assert len(model.inputs) == 1 and tuple(model.inputs[0].shape) == (None, 32, 32, 3)
    assert model.get_layer("head_dropout").rate == pytest.approx(0.2)
    out = model.predict(np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32"), verbose=0)
    assert out.shape == (2, 1)
    assert np.all((out >= 0) & (out <= 1))
    # the preprocessing is a layer of the model, not a step the caller must remember
    names = [layer.name for layer in model.layers]
    assert any(n.startswith("preprocess_") for n in names)


def test_caffe_preprocessing_layer_matches_keras() -> None:
    import keras

    from edgecat.models import preprocessing_layers

    (layer,) = preprocessing_layers("caffe")
    x = np.random.default_rng(1).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    want = keras.applications.resnet50.preprocess_input(x.copy())
    np.testing.assert_allclose(np.asarray(layer(x)), want, atol=1e-4)


def test_dense256_head_and_multiclass() -> None:
    from edgecat.models import build_model

    model, _ = build_model("mobilenet_v2", num_classes=3, img_size=32, weights="none", head="dense256")
    assert model.get_layer("head_dense").units == 256
    assert model.get_layer("head_dropout").rate == pytest.approx(0.5)
    assert model.output_shape == (None, 3)


def test_bad_head_weights_and_size() -> None:
    from edgecat.models import build_model

    with pytest.raises(EdgecatError, match="unknown head"):
        build_model("mobilenet_v2", img_size=32, weights="none", head="mlp")
    with pytest.raises(EdgecatError, match="weights file not found"):
        build_model("mobilenet_v2", img_size=32, weights="/nonexistent/w.h5")
    with pytest.raises(EdgecatError, match="too small"):
        build_model("mobilenet_v2", img_size=8, weights="none")


def test_local_weights_path_loads(tmp_path) -> None:
    from edgecat.models import build_model

    _, base = build_model("mobilenet_v2", img_size=32, weights="none")
    path = tmp_path / "mnv2.weights.h5"
    base.save_weights(str(path))
    _, base2 = build_model("mobilenet_v2", img_size=32, weights=str(path))
    for a, b in zip(base.get_weights(), base2.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_stage2_unfreezes_last_layers_and_keeps_bn_frozen() -> None:
    import keras

    from edgecat.models import build_model, set_trainable

    _, base = build_model("mobilenet_v2", img_size=32, weights="none")
    assert set_trainable(base, "frozen") == 0 and not base.trainable
    n = set_trainable(base, "partial", unfreeze=30)
    tail = base.layers[-30:]
    assert all(not layer.trainable for layer in base.layers[:-30])
    assert all(not layer.trainable for layer in tail if isinstance(layer, keras.layers.BatchNormalization))
    assert n == sum(1 for layer in tail if not isinstance(layer, keras.layers.BatchNormalization))
    assert n > 0


def test_split_at_pool_shares_weights() -> None:
    from edgecat.models import build_model, split_at_pool

    model, _ = build_model("mobilenet_v2", img_size=32, weights="none")
    features, head = split_at_pool(model)
    x = np.random.default_rng(2).uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(head(features(x)), model(x), atol=1e-6)
    dense = head.get_layer("probabilities")
    assert dense is model.get_layer("probabilities")


def test_weights_from_a_bundle(tiny_bundle) -> None:
    """--weights BUNDLE starts from an earlier run's backbone (offline fine-tuning)."""
    import keras

    from edgecat.models import build_model

    src = keras.models.load_model(str(tiny_bundle / "model.keras"), compile=False)
    src_base = [layer for layer in src.layers if isinstance(layer, keras.Model)][0]
    _, base = build_model("mobilenet_v2", img_size=64, weights=str(tiny_bundle))  # another size is fine
    for a, b in zip(src_base.get_weights(), base.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(EdgecatError, match="is a mobilenet_v2, not a resnet50"):
        build_model("resnet50", img_size=32, weights=str(tiny_bundle))


def test_recalibrate_batchnorm_matches_batch_statistics() -> None:
    """Stale moving statistics (as after a few from-scratch epochs) are recomputed for the current
    weights: inference mode then agrees with training mode on the data, and momentum is restored."""
    import keras

    from edgecat.models import build_model, recalibrate_batchnorm

    model, base = build_model("mobilenet_v2", img_size=32, weights=None, freeze_bn=False)
    x = np.random.default_rng(0).uniform(0, 255, (16, 32, 32, 3)).astype("float32")
    bns = [lyr for lyr in base.layers if isinstance(lyr, keras.layers.BatchNormalization)]
    for lyr in bns:  # stale statistics, far from what these weights produce
        lyr.moving_mean.assign(np.full(lyr.moving_mean.shape, 5.0, "float32"))
        lyr.moving_variance.assign(np.full(lyr.moving_variance.shape, 50.0, "float32"))
    xb = x / 127.5 - 1.0  # the backbone's own input range (the model's preprocessing layers do this)

    def gap() -> float:  # backbone only: the head's dropout would make training mode random
        return float(np.abs(base(xb, training=False).numpy() - base(xb, training=True).numpy()).max())

    before = gap()
    assert recalibrate_batchnorm(model, [(x, None)]) == 1
    assert before > 0.5 and gap() < 1e-3, (before, gap())
    assert all(lyr.momentum == 0.9 for lyr in bns)

    # Several batches: the moving mean is the plain average of the batch means (not a decayed one).
    inp = keras.Input((3,))
    bn = keras.layers.BatchNormalization(momentum=0.99)
    tiny = keras.Model(inp, bn(inp))
    batches = [np.full((4, 3), v, "float32") for v in (1.0, 2.0, 6.0, 100.0)]
    assert recalibrate_batchnorm(tiny, batches, max_batches=3) == 3
    np.testing.assert_allclose(np.asarray(bn.moving_mean), [3.0, 3.0, 3.0], rtol=1e-6)
    assert bn.momentum == 0.99
