"""Network description (``cnnforge.hw.frontend.network``): every user error names the layer (index and
type) and what is wrong; shape inference, MAC counts and parameter names of the digits net."""

import re
from pathlib import Path

import numpy as np
import pytest

from cnnforge.hw.frontend.network import (
    Conv2d, Flatten, Linear, MaxPool2d, NetworkError, ReLU, ReLU6, Sequential,
)
from cnnforge.hw.frontend.loader import load_network
from cnnforge.hw.frontend.quantize import quantize
from cnnforge.sim.golden import pads

REPO = Path(__file__).resolve().parent.parent
DIGITS = REPO / "examples" / "digits" / "net.py"


def raises(*parts):
    """pytest.raises(NetworkError) whose message contains every literal part, in order."""
    return pytest.raises(NetworkError, match=".*".join(re.escape(p) for p in parts))


def small():
    """0 Conv2d(1, 4, 3) -> 1 ReLU -> 2 MaxPool2d(2) -> 3 Flatten -> 4 Linear(36, 5), on 1x8x8."""
    return [Conv2d(1, 4, 3), ReLU(), MaxPool2d(2), Flatten(), Linear(36, 5)]


def small_state():
    rng = np.random.default_rng(0)
    return {"0.weight": rng.standard_normal((4, 1, 3, 3)), "0.bias": np.zeros(4),
            "4.weight": rng.standard_normal((5, 36)), "4.bias": np.zeros(5)}


# ------------------------------------------------------------------------------------------------
# Shapes


def test_small_network_is_valid():
    net = Sequential(*small(), input_shape=(1, 8, 8))
    assert net.output_shape == (5,)
    net.load_state_dict(small_state())
    assert net(np.zeros((2, 1, 8, 8), np.float32)).shape == (2, 5)


def test_in_channels_mismatch_with_input():
    with raises("layer 0 (Conv2d)", "in_channels=3 but its input has 1 channels"):
        Sequential(Conv2d(3, 4, 3), input_shape=(1, 8, 8))


def test_in_channels_mismatch_between_layers():
    with raises("layer 2 (Conv2d)", "in_channels=8 but its input has 4 channels"):
        Sequential(Conv2d(1, 4, 3, padding=1), ReLU(), Conv2d(8, 4, 3), input_shape=(1, 8, 8))


def test_linear_in_features_mismatch():
    layers = small()
    layers[4] = Linear(64, 5)
    with raises("layer 4 (Linear)", "in_features=64 but its input has 36 features"):
        Sequential(*layers, input_shape=(1, 8, 8))


def test_linear_without_flatten():
    with raises("layer 2 (Linear)", "expects a flat (features,) input, got shape (4, 6, 6)",
                "put a Flatten() before it"):
        Sequential(Conv2d(1, 4, 3), MaxPool2d(2), Linear(144, 5), input_shape=(1, 14, 14))


def test_conv_after_flatten():
    with raises("layer 1 (Conv2d)", "expects a (C, H, W) input, got shape (64,)"):
        Sequential(Flatten(), Conv2d(1, 4, 3), input_shape=(1, 8, 8))


def test_kernel_larger_than_input():
    with raises("layer 0 (Conv2d)", "kernel 5x5 does not fit its 3x3 input"):
        Sequential(Conv2d(1, 4, 5), input_shape=(1, 3, 3))


def test_pool_window_larger_than_input():
    with raises("layer 1 (MaxPool2d)", "window 3x3 is larger than its 2x2 input"):
        Sequential(Conv2d(1, 4, 3), MaxPool2d(3), input_shape=(1, 4, 4))


def test_bad_input_shape():
    with raises("network: input_shape must be (C, H, W)"):
        Sequential(Conv2d(1, 4, 3), input_shape=(8, 8))
    with raises("network: a Sequential needs at least one layer"):
        Sequential(input_shape=(1, 8, 8))


def test_not_a_layer():
    with raises("layer 1 (str)", "not a cnnforge layer"):
        Sequential(Conv2d(1, 4, 3), "relu", input_shape=(1, 8, 8))


# ------------------------------------------------------------------------------------------------
# Unsupported parameters


@pytest.mark.parametrize("layer, index, kind, what", [
    (Conv2d(1, 4, 3, dilation=2), 0, "Conv2d", "dilation=(2, 2) is not supported (only 1)"),
    (Conv2d(2, 4, 3, groups=3), 0, "Conv2d", "groups=3 must divide in_channels=2"),
    (Conv2d(1, 4, 3, padding_mode="reflect"), 0, "Conv2d",
     "padding_mode='reflect' is not supported (only 'zeros')"),
    (Conv2d(1, 4, 3, stride=0), 0, "Conv2d", "kernel_size and stride must be >= 1"),
    (Conv2d(1, 0, 3), 0, "Conv2d", "in_channels and out_channels must be >= 1"),
    (MaxPool2d(2, padding=1), 1, "MaxPool2d", "padding=(1, 1) is not supported (only 0)"),
    (MaxPool2d(2, dilation=2), 1, "MaxPool2d", "dilation=(2, 2) is not supported (only 1)"),
    (MaxPool2d(2, ceil_mode=True), 1, "MaxPool2d", "ceil_mode=True is not supported"),
    (Flatten(start_dim=0), 1, "Flatten", "only Flatten(start_dim=1, end_dim=-1) is supported"),
    (Linear(0, 3), 2, "Linear", "in_features and out_features must be >= 1"),
])
def test_unsupported_parameter(layer, index, kind, what):
    if index == 0:
        layers = [layer]
        channels = layer.in_channels
    else:
        layers = [Conv2d(1, 4, 3), Flatten()][:index] + [layer]
        channels = 1
    with raises(f"layer {index} ({kind})", what):
        Sequential(*layers, input_shape=(channels, 8, 8))


def test_activation_first_cannot_be_quantized():
    net = Sequential(ReLU6(), Conv2d(1, 1, 1), input_shape=(1, 2, 2))
    net.load_state_dict({"1.weight": np.ones((1, 1, 1, 1)), "1.bias": np.zeros(1)})
    with raises("layer 0 (ReLU6)", "an activation must directly follow"):
        quantize(net, np.ones((1, 1, 2, 2), np.float32))


# ------------------------------------------------------------------------------------------------
# Weights


def test_missing_weight_key():
    net = Sequential(*small(), input_shape=(1, 8, 8))
    state = small_state()
    del state["4.weight"]
    with raises("layer 4 (Linear)", "missing parameter '4.weight' in state_dict"):
        net.load_state_dict(state)


def test_missing_bias_key():
    net = Sequential(*small(), input_shape=(1, 8, 8))
    state = small_state()
    del state["0.bias"]
    with raises("layer 0 (Conv2d)", "missing parameter '0.bias'"):
        net.load_state_dict(state)


def test_wrongly_shaped_weight():
    net = Sequential(*small(), input_shape=(1, 8, 8))
    state = small_state()
    state["0.weight"] = np.zeros((4, 1, 3))
    with raises("layer 0 (Conv2d)", "0.weight has shape (4, 1, 3), expected (4, 1, 3, 3)"):
        net.load_state_dict(state)
    state = small_state()
    state["4.weight"] = np.zeros((36, 5))                 # transposed
    with raises("layer 4 (Linear)", "4.weight has shape (36, 5), expected (5, 36)"):
        net.load_state_dict(state)


def test_non_finite_weight():
    net = Sequential(*small(), input_shape=(1, 8, 8))
    state = small_state()
    state["4.bias"] = np.array([0, 0, np.nan, 0, 0])
    with raises("layer 4 (Linear)", "4.bias holds NaN or infinite values"):
        net.load_state_dict(state)


def test_unexpected_key_of_a_layer_without_it():
    """A key whose prefix is a layer that has no such parameter names that layer."""
    net = Sequential(*small(), input_shape=(1, 8, 8))
    state = small_state()
    state["1.weight"] = np.zeros(3)
    with raises("layer 1 (ReLU)", "unexpected parameter '1.weight' in state_dict",
                "no parameters"):
        net.load_state_dict(state)
    layers = small()
    layers[4] = Linear(36, 5, bias=False)
    net = Sequential(*layers, input_shape=(1, 8, 8))
    with raises("layer 4 (Linear)", "unexpected parameter '4.bias'", "it has 4.weight"):
        net.load_state_dict(small_state())


@pytest.mark.parametrize("key", ["5.weight", "conv.weight", "weight"])
def test_unexpected_key_of_no_layer(key):
    net = Sequential(*small(), input_shape=(1, 8, 8))
    state = small_state()
    state[key] = np.zeros(3)
    with raises(f"state_dict: unexpected key {key!r}",
                "this network expects 0.weight, 0.bias, 4.weight, 4.bias"):
        net.load_state_dict(state)


def test_unloaded_weights():
    net = Sequential(*small(), input_shape=(1, 8, 8))
    with raises("layer 0 (Conv2d)", "parameter 0.weight was never loaded"):
        net(np.zeros((1, 1, 8, 8), np.float32))


def test_load_npz(tmp_path):
    path = tmp_path / "w.npz"
    np.savez(path, **small_state())
    net = Sequential(*small(), input_shape=(1, 8, 8)).load_npz(path)
    assert net[4].weight.shape == (5, 36) and net[4].weight.dtype == np.float32
    state = small_state()
    state["0.weight"] = np.zeros((4, 2, 3, 3))
    np.savez(path, **state)
    with raises("layer 0 (Conv2d)", "0.weight has shape (4, 2, 3, 3)"):
        Sequential(*small(), input_shape=(1, 8, 8)).load_npz(path)
    with raises("cannot read weights"):
        Sequential(*small(), input_shape=(1, 8, 8)).load_npz(tmp_path / "missing.npz")
    # a truncated file: the .npz is named, not the network file that loads it
    (tmp_path / "cut.npz").write_bytes(path.read_bytes()[:300])
    with raises(f"{tmp_path / 'cut.npz'}: cannot read weights (BadZipFile"):
        Sequential(*small(), input_shape=(1, 8, 8)).load_npz(tmp_path / "cut.npz")


# ------------------------------------------------------------------------------------------------
# Inputs and calibration


def test_calibration_shape_mismatch():
    with raises("network: calibration data has shape (1, 5, 5), expected (1, 8, 8)"):
        Sequential(*small(), input_shape=(1, 8, 8),
                   calibration=np.zeros((3, 1, 5, 5), np.float32))
    net = Sequential(*small(), input_shape=(1, 8, 8)).load_state_dict(small_state())
    with raises("network: calibration data has shape (2, 8, 8), expected (1, 8, 8)"):
        quantize(net, np.zeros((3, 2, 8, 8), np.float32))


def test_forward_input_shape_mismatch():
    net = Sequential(*small(), input_shape=(1, 8, 8)).load_state_dict(small_state())
    with raises("network: input has shape (1, 5, 5), expected (1, 8, 8)"):
        net(np.zeros((2, 1, 5, 5), np.float32))


# ------------------------------------------------------------------------------------------------
# load_network


def test_load_network_missing_file(tmp_path):
    path = tmp_path / "nope.py"
    with raises(f"{path}: no such network file"):
        load_network(path)


def test_load_network_without_network(tmp_path):
    path = tmp_path / "empty.py"
    path.write_text("x = 1\nnet = 'not a network'\n")
    with raises(f"{path}: defines no module-level `network`"):
        load_network(path)


def test_load_network_file_raises(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text("raise RuntimeError('boom')\n")
    with raises(f"{path}: failed to import: RuntimeError: boom"):
        load_network(path)
    path.write_text("def f(:\n")
    with raises(f"{path}: failed to import: SyntaxError"):
        load_network(path)


def test_load_network_bad_layer_in_file(tmp_path):
    """A NetworkError inside the file keeps its layer name and gains the file name."""
    path = tmp_path / "badnet.py"
    path.write_text("from cnnforge.hw.frontend.network import Conv2d, Sequential\n"
                    "network = Sequential(Conv2d(1, 4, 3), Conv2d(3, 4, 3), "
                    "input_shape=(1, 8, 8))\n")
    with raises(f"{path}: layer 1 (Conv2d): in_channels=3 but its input has 4 channels"):
        load_network(path)


def test_load_network_onnx(tmp_path):
    """An .onnx file goes to the ONNX importer (tests/test_onnx.py); an empty one is no model."""
    path = tmp_path / "model.onnx"
    path.write_bytes(b"")
    with raises(f"{path}: cannot read the ONNX model (it has no graph nodes)"):
        load_network(path)


def test_load_network_unloaded_weights(tmp_path):
    path = tmp_path / "noweights.py"
    path.write_text("from cnnforge.hw.frontend.network import Conv2d, Sequential\n"
                    "network = Sequential(Conv2d(1, 4, 3), input_shape=(1, 8, 8))\n")
    with raises("layer 0 (Conv2d)", "parameter 0.weight was never loaded"):
        load_network(path)


# ------------------------------------------------------------------------------------------------
# The digits network


@pytest.fixture(scope="module")
def digits():
    return load_network(DIGITS)


def test_digits_shapes(digits):
    assert digits.input_shape == (1, 8, 8)
    assert [(s.input, s.output) for s in digits.shapes] == [
        ((1, 8, 8), (8, 8, 8)),                       # 0 Conv2d(1, 8, 3, padding=1)
        ((8, 8, 8), (8, 8, 8)),                       # 1 ReLU
        ((8, 8, 8), (8, 4, 4)),                       # 2 MaxPool2d(2)
        ((8, 4, 4), (16, 4, 4)),                      # 3 Conv2d(8, 16, 3, padding=1)
        ((16, 4, 4), (16, 4, 4)),                     # 4 ReLU
        ((16, 4, 4), (16, 2, 2)),                     # 5 MaxPool2d(2)
        ((16, 2, 2), (64,)),                          # 6 Flatten
        ((64,), (10,)),                               # 7 Linear(64, 10)
    ]
    assert digits.output_shape == (10,)
    outs = digits.forward(digits.calibration[:3], intermediates=True)
    assert [o.shape[1:] for o in outs] == [s.output for s in digits.shapes]


def test_digits_macs(digits):
    assert digits.macs() == {0: 8 * 8 * 8 * 1 * 9, 3: 16 * 4 * 4 * 8 * 9, 7: 64 * 10}
    assert sum(digits.macs().values()) == 23680
    assert quantize(digits).macs() == 23680


def test_digits_state_dict_shapes(digits):
    shapes = digits.state_dict_shapes()
    assert list(shapes) == ["0.weight", "0.bias", "3.weight", "3.bias", "7.weight", "7.bias"]
    assert shapes == {"0.weight": (8, 1, 3, 3), "0.bias": (8,), "3.weight": (16, 8, 3, 3),
                      "3.bias": (16,), "7.weight": (10, 64), "7.bias": (10,)}
    for key, shape in shapes.items():
        index, name = key.split(".")
        assert getattr(digits[int(index)], name).shape == shape


def test_digits_attachments(digits):
    assert digits.calibration.shape == (256, 1, 8, 8)
    x, y = digits.test_data()
    assert x.shape == (450, 1, 8, 8) and y.shape == (450,)
    assert digits.source == str(DIGITS)
    assert "(7): Linear(in_features=64, out_features=10)" in repr(digits)


@pytest.mark.parametrize("kernel, expected", [
    (3, (1, 1)), (4, (1, 1, 2, 2)), ((1, 4), (0, 1, 0, 2)), (5, (2, 2))])
def test_padding_same_as_torch(kernel, expected):
    """``padding='same'`` (stride 1): k − 1 per axis, the odd one at the bottom/right, as
    ``torch.nn.Conv2d``; the output keeps the input's size."""
    net = Sequential(Conv2d(2, 3, kernel, padding="same"), input_shape=(2, 7, 6))
    assert net[0].padding == expected
    assert net.output_shape == (3, 7, 6)
    rng = np.random.default_rng(0)
    net.load_state_dict({k: rng.standard_normal(v).astype(np.float32)
                         for k, v in net.state_dict_shapes().items()})
    x = rng.standard_normal((2, 2, 7, 6)).astype(np.float32)
    explicit = Sequential(Conv2d(2, 3, kernel, padding=pads(expected)), input_shape=(2, 7, 6))
    explicit.load_state_dict({"0.weight": net[0].weight, "0.bias": net[0].bias})
    assert np.array_equal(net(x), explicit(x))
    assert Sequential(Conv2d(2, 3, 3, padding="valid"), input_shape=(2, 7, 6)).output_shape == (
        3, 5, 4)


@pytest.mark.parametrize("kwargs, message", [
    (dict(padding="same", stride=2), "layer 1 (Conv2d): padding='same' needs stride 1 (as in "
                                     "torch), got stride (2, 2)"),
    (dict(padding="full"), "layer 1 (Conv2d): padding='full': give an int, a pair, (top, left, "
                           "bottom, right), 'valid' or 'same'"),
])
def test_padding_strings_refused_by_layer(kwargs, message):
    with pytest.raises(NetworkError) as info:
        Sequential(ReLU(), Conv2d(2, 3, 3, **kwargs), input_shape=(2, 7, 6))
    assert str(info.value).startswith(message)
