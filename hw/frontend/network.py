"""Network description: ``torch.nn``-like layers composed in a :class:`Sequential`.

Layers carry the same names, argument order and defaults as their ``torch.nn`` counterparts, so a
PyTorch user can copy a model definition. Tensors are NCHW. Weights are float32 NumPy arrays,
loaded from a mapping (or an ``.npz`` file) whose keys follow ``state_dict`` naming:
``"<layer index>.weight"`` and ``"<layer index>.bias"``.

A small DAG (residual connections) stays a :class:`Sequential`: every layer reads the output of
the layer before it, except :class:`Add`, which names its second input, e.g. ``Add(3)`` adds
the output of layer 3 to the previous layer's output (``-1`` names the network input). Any
layer may read another earlier output through its ``sources`` attribute (a tuple of layer
indices), which is how the ONNX importer describes branches.

Every user error raises :class:`NetworkError` whose message names the layer index, its type and
what is wrong, e.g. ``layer 3 (Conv2d): in_channels=4 but its input has 8 channels``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cnnforge.sim.golden import avg_pool2d_float, conv2d_float, linear_float, max_pool2d, pads

__all__ = [
    "NetworkError", "Layer", "Conv2d", "Linear", "ReLU", "ReLU6", "MaxPool2d", "AvgPool2d",
    "AdaptiveAvgPool2d", "Flatten", "Add", "Sequential",
]


class NetworkError(ValueError):
    """A user error in a network description, its weights or its file (one-line message)."""


def _pair(value, what):
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{what} must be an int or a pair, not {value!r}")
        return int(value[0]), int(value[1])
    return int(value), int(value)


def _padding(value, kernel_size):
    """A Conv2d padding as stored: ``(ph, pw)`` when both sides agree, else
    ``(top, left, bottom, right)``; ``"valid"`` is 0 and ``"same"`` pads ``k − 1`` per axis, the
    odd one at the bottom/right (``torch.nn.Conv2d``'s rule, for stride 1)."""
    if isinstance(value, str):
        if value == "valid":
            return (0, 0)
        if value != "same":
            raise ValueError(f"padding={value!r}: give an int, a pair, (top, left, bottom, "
                             "right), 'valid' or 'same'")
        (kh, kw) = kernel_size
        value = ((kh - 1) // 2, (kw - 1) // 2, kh // 2, kw // 2)
    if isinstance(value, (tuple, list)) and len(value) == 4:
        top, left, bottom, right = (int(v) for v in value)
        return (top, left) if (top, left) == (bottom, right) else (top, left, bottom, right)
    return _pair(value, "padding")


class Layer:
    """Base class of all layers.

    Members
    -------
    index : int
        Position in the :class:`Sequential` (set when the layer is added); the ``state_dict``
        prefix of its parameters.
    """

    index = None
    params = ()                                     # names of trainable parameters
    sources = None                                  # input layer indices; None: the previous
    arity = 1                                       # number of inputs

    @property
    def type(self):
        return type(self).__name__

    @property
    def where(self):
        """``"layer 3 (Conv2d)"``: how error messages name this layer."""
        return f"layer {self.index} ({self.type})"

    def error(self, what):
        return NetworkError(f"{self.where}: {what}")

    def default_sources(self, index):
        """Input layer indices when ``sources`` is not set: the previous layer."""
        return (index - 1,)

    def output_shape(self, shape):
        """Output shape (C, H, W) or (F,) for an input of ``shape`` (without the batch axis)."""
        return shape

    def forward(self, x):
        """Float forward pass on a batch ``x`` (float32, NCHW or NF); returns float32."""
        raise NotImplementedError

    def parameter_shapes(self):
        return {}

    def __repr__(self):
        return f"{self.type}({self.extra_repr()})"

    def extra_repr(self):
        return ""


class Conv2d(Layer):
    """2-D convolution (cross-correlation), as ``torch.nn.Conv2d``.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size, stride : int or (int, int)
    padding : int, (int, int), (top, left, bottom, right), ``"valid"`` or ``"same"``
        Zero padding: the same on both sides of each axis, as in torch, or per side in ONNX
        ``pads`` order (TFLite's SAME padding puts an odd row or column at the bottom or right);
        ``"same"`` (stride 1, as torch) pads ``k − 1`` per axis, the odd one at the bottom/right.
        In the quantized network, padding holds the input zero point, which is the quantized
        value of 0.0.
    dilation : int
        Only 1 is supported.
    groups : int
        Grouped convolution as in torch: ``in_channels`` and ``out_channels`` divisible by
        ``groups``. The accelerator runs ``groups=1`` and depthwise convolution
        (``groups = in_channels = out_channels``).
    bias : bool
    padding_mode : str
        Only ``"zeros"`` is supported.
    algorithm : str
        cnnforge's choice of convolution algorithm on the accelerator: ``"direct"`` (im2col GEMM),
        ``"winograd"`` (F(2×2, 3×3); 3×3 stride-1 layers only) or ``"auto"`` (Winograd when
        it applies and the performance model finds it faster).

    Members
    -------
    weight : ndarray, float32, shape (out_channels, in_channels // groups, kh, kw)
    bias : ndarray, float32, shape (out_channels,), or None
    """

    params = ("weight", "bias")

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", *, algorithm="auto"):
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = _pair(stride, "stride")
        self.padding_arg = padding
        try:
            self.padding = _padding(padding, self.kernel_size)
        except ValueError as exc:                  # reported by check(), naming the layer
            self.padding, self._padding_error = (0, 0), str(exc)
        self.dilation = _pair(dilation, "dilation")
        self.groups = int(groups)
        self.has_bias = bool(bias)
        self.padding_mode = padding_mode
        self.algorithm = algorithm
        self.weight = None
        self.bias = None

    def check(self):
        """Reject parameters cnnforge does not implement (called when added to a network)."""
        if self.in_channels < 1 or self.out_channels < 1:
            raise self.error("in_channels and out_channels must be >= 1")
        if min(self.kernel_size) < 1 or min(self.stride) < 1 or min(self.padding) < 0:
            raise self.error("kernel_size and stride must be >= 1 and padding >= 0")
        if self.dilation != (1, 1):
            raise self.error(f"dilation={self.dilation} is not supported (only 1)")
        if getattr(self, "_padding_error", None):
            raise self.error(self._padding_error)
        if self.padding_arg == "same" and self.stride != (1, 1):
            raise self.error(f"padding='same' needs stride 1 (as in torch), got stride "
                             f"{self.stride}; give the padding as numbers")
        if (self.groups < 1 or self.in_channels % self.groups
                or self.out_channels % self.groups):
            raise self.error(f"groups={self.groups} must divide in_channels={self.in_channels} "
                             f"and out_channels={self.out_channels}")
        if self.padding_mode != "zeros":
            raise self.error(f"padding_mode={self.padding_mode!r} is not supported (only 'zeros')")
        if self.algorithm not in ("auto", "direct", "winograd"):
            raise self.error(f"algorithm={self.algorithm!r}: choose 'auto', 'direct' or "
                             "'winograd'")
        if self.algorithm == "winograd" and not self.winograd_applies:
            raise self.error("Winograd F(2x2, 3x3) needs a 3x3 kernel with stride 1 and "
                             f"groups=1, got kernel {self.kernel_size} stride {self.stride} "
                             f"groups {self.groups}" + ("" if len(self.padding) == 2 else
                                                        "; and the same padding on both "
                                                        f"sides, got {self.padding}"))

    @property
    def winograd_applies(self):
        """Whether Winograd F(2×2, 3×3) computes this layer: a dense 3×3 kernel, stride 1, the
        same padding on both sides."""
        return (self.kernel_size == (3, 3) and self.stride == (1, 1) and self.groups == 1
                and len(self.padding) == 2)

    @property
    def depthwise(self):
        """Depthwise convolution: ``groups = in_channels = out_channels``."""
        return self.groups == self.in_channels == self.out_channels and self.groups > 1

    def output_shape(self, shape):
        if len(shape) != 3:
            raise self.error(f"expects a (C, H, W) input, got shape {shape}")
        c, h, w = shape
        if c != self.in_channels:
            raise self.error(f"in_channels={self.in_channels} but its input has {c} channels")
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        top, left, bottom, right = pads(self.padding)
        oh = (h + top + bottom - kh) // sh + 1
        ow = (w + left + right - kw) // sw + 1
        if oh < 1 or ow < 1:
            raise self.error(f"kernel {kh}x{kw} does not fit its {h}x{w} input with padding "
                             f"{self.padding}")
        return (self.out_channels, oh, ow)

    def parameter_shapes(self):
        shapes = {"weight": (self.out_channels, self.in_channels // self.groups,
                             *self.kernel_size)}
        if self.has_bias:
            shapes["bias"] = (self.out_channels,)
        return shapes

    def forward(self, x):
        return conv2d_float(x, self.weight, self.bias, self.stride, self.padding, self.groups)

    def extra_repr(self):
        groups = f", groups={self.groups}" if self.groups != 1 else ""
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}{groups}, bias={self.has_bias}")


class Linear(Layer):
    """Fully connected layer ``y = x Wᵀ + b``, as ``torch.nn.Linear``.

    Members
    -------
    weight : ndarray, float32, shape (out_features, in_features)
    bias : ndarray, float32, shape (out_features,), or None
    """

    params = ("weight", "bias")

    def __init__(self, in_features, out_features, bias=True):
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.has_bias = bool(bias)
        self.weight = None
        self.bias = None

    def check(self):
        if self.in_features < 1 or self.out_features < 1:
            raise self.error("in_features and out_features must be >= 1")

    def output_shape(self, shape):
        if len(shape) != 1:
            raise self.error(f"expects a flat (features,) input, got shape {shape}; "
                             "put a Flatten() before it")
        if shape[0] != self.in_features:
            raise self.error(f"in_features={self.in_features} but its input has "
                             f"{shape[0]} features")
        return (self.out_features,)

    def parameter_shapes(self):
        shapes = {"weight": (self.out_features, self.in_features)}
        if self.has_bias:
            shapes["bias"] = (self.out_features,)
        return shapes

    def forward(self, x):
        return linear_float(x, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}"


class ReLU(Layer):
    """``max(x, 0)``, as ``torch.nn.ReLU``."""

    def __init__(self, inplace=False):
        pass

    def check(self):
        pass

    def forward(self, x):
        return np.maximum(x, 0).astype(np.float32)


class ReLU6(Layer):
    """``min(max(x, 0), 6)``, as ``torch.nn.ReLU6``."""

    def __init__(self, inplace=False):
        pass

    def check(self):
        pass

    def forward(self, x):
        return np.clip(x, 0, 6).astype(np.float32)


class MaxPool2d(Layer):
    """Max pooling, as ``torch.nn.MaxPool2d`` (floor mode: a partial window at the border is
    dropped). ``stride`` defaults to ``kernel_size``; padding, dilation and ceil_mode are not
    supported."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = self.kernel_size if stride is None else _pair(stride, "stride")
        self.padding = _pair(padding, "padding")
        self.dilation = _pair(dilation, "dilation")
        self.ceil_mode = bool(ceil_mode)

    def check(self):
        if min(self.kernel_size) < 1 or min(self.stride) < 1:
            raise self.error("kernel_size and stride must be >= 1")
        if self.padding != (0, 0):
            raise self.error(f"padding={self.padding} is not supported (only 0)")
        if self.dilation != (1, 1):
            raise self.error(f"dilation={self.dilation} is not supported (only 1)")
        if self.ceil_mode:
            raise self.error("ceil_mode=True is not supported")

    def output_shape(self, shape):
        if len(shape) != 3:
            raise self.error(f"expects a (C, H, W) input, got shape {shape}")
        c, h, w = shape
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        if h < kh or w < kw:
            raise self.error(f"window {kh}x{kw} is larger than its {h}x{w} input")
        return (c, (h - kh) // sh + 1, (w - kw) // sw + 1)

    def forward(self, x):
        return max_pool2d(x, self.kernel_size, self.stride)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}"


class AvgPool2d(Layer):
    """Average pooling, as ``torch.nn.AvgPool2d`` (floor mode). ``stride`` defaults to
    ``kernel_size``; padding and ceil_mode are not supported (so ``count_include_pad`` has no
    effect), nor is ``divisor_override``.

    Quantized, it is a depthwise convolution with all-ones weights whose requantization
    multiplier holds the 1/(kh·kw) (the sum is exact, the division is the rounding of the
    requantization)."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True, divisor_override=None):
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = self.kernel_size if stride is None else _pair(stride, "stride")
        self.padding = _pair(padding, "padding")
        self.ceil_mode = bool(ceil_mode)
        self.divisor_override = divisor_override

    def check(self):
        if min(self.kernel_size) < 1 or min(self.stride) < 1:
            raise self.error("kernel_size and stride must be >= 1")
        if self.padding != (0, 0):
            raise self.error(f"padding={self.padding} is not supported (only 0)")
        if self.ceil_mode:
            raise self.error("ceil_mode=True is not supported")
        if self.divisor_override is not None:
            raise self.error("divisor_override is not supported")

    def window(self, shape):
        """(kernel, stride) for an input of ``shape``."""
        return self.kernel_size, self.stride

    def output_shape(self, shape):
        if len(shape) != 3:
            raise self.error(f"expects a (C, H, W) input, got shape {shape}")
        c, h, w = shape
        (kh, kw), (sh, sw) = self.window(shape)
        if h < kh or w < kw:
            raise self.error(f"window {kh}x{kw} is larger than its {h}x{w} input")
        return (c, (h - kh) // sh + 1, (w - kw) // sw + 1)

    def forward(self, x):
        return avg_pool2d_float(x, *self.window(x.shape[1:]))

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}"


class AdaptiveAvgPool2d(AvgPool2d):
    """Adaptive average pooling, as ``torch.nn.AdaptiveAvgPool2d``, for output sizes that divide
    the input evenly (``AdaptiveAvgPool2d(1)`` is global average pooling, ONNX's
    GlobalAveragePool)."""

    def __init__(self, output_size):
        self.output_size = _pair(output_size, "output_size")
        self.kernel_size = self.stride = None
        self.padding, self.ceil_mode, self.divisor_override = (0, 0), False, None

    def check(self):
        if min(self.output_size) < 1:
            raise self.error("output_size must be >= 1")

    def window(self, shape):
        c, h, w = shape
        oh, ow = self.output_size
        if h % oh or w % ow:
            raise self.error(f"output_size {self.output_size} does not divide its {h}x{w} input "
                             "(only even division is supported)")
        return (h // oh, w // ow), (h // oh, w // ow)

    def extra_repr(self):
        return f"output_size={self.output_size}"


class Add(Layer):
    """Element-wise sum of two outputs with equal shapes (a residual connection), as ``x + y``
    in a PyTorch ``forward`` or ONNX ``Add``.

    Parameters
    ----------
    *sources : int
        ``Add(i)``: the previous layer's output plus layer ``i``'s; ``Add(i, j)``: layers ``i``
        and ``j``. ``-1`` names the network input.

    Quantized as TFLite's int8 add: both inputs are rescaled to a common scale (2·max of the
    two, 20 fractional bits), summed, and requantized to the output scale.
    """

    arity = 2

    def __init__(self, *sources):
        if len(sources) not in (1, 2):
            raise NetworkError(f"Add takes one or two source layer indices, got {sources}")
        self._given = tuple(int(s) for s in sources)

    def check(self):
        pass

    def default_sources(self, index):
        given = self._given
        return given if len(given) == 2 else (index - 1, given[0])

    def output_shape(self, *shapes):
        if shapes[0] != shapes[1]:
            raise self.error(f"input shapes {shapes[0]} (layer {self.sources[0]}) and "
                             f"{shapes[1]} (layer {self.sources[1]}) differ")
        return shapes[0]

    def forward(self, x, y):
        return (np.asarray(x, np.float32) + np.asarray(y, np.float32)).astype(np.float32)

    def extra_repr(self):
        return ", ".join(str(s) for s in self.sources or self._given)


class Flatten(Layer):
    """Flatten (C, H, W) to (C·H·W,) in C, H, W order, as ``torch.nn.Flatten()``."""

    def __init__(self, start_dim=1, end_dim=-1):
        self.start_dim, self.end_dim = start_dim, end_dim

    def check(self):
        if (self.start_dim, self.end_dim) != (1, -1):
            raise self.error("only Flatten(start_dim=1, end_dim=-1) is supported")

    def output_shape(self, shape):
        return (int(np.prod(shape)),)

    def forward(self, x):
        return x.reshape(x.shape[0], -1)


@dataclass(frozen=True)
class _Shape:
    input: tuple
    output: tuple


class Sequential:
    """A chain of layers with a fixed input shape, as ``torch.nn.Sequential``.

    Parameters
    ----------
    *layers : Layer
    input_shape : (C, H, W)
        Shape of one input image (no batch axis).
    calibration : ndarray, float32, shape (B, C, H, W), optional
        Sample inputs the quantizer calibrates activation ranges on.

    Raises
    ------
    NetworkError
        On an unsupported parameter or a shape mismatch, naming the layer.
    """

    def __init__(self, *layers, input_shape, calibration=None):
        if not layers:
            raise NetworkError("network: a Sequential needs at least one layer")
        self.layers = list(layers)
        self.input_shape = tuple(int(d) for d in input_shape)
        if len(self.input_shape) != 3 or min(self.input_shape) < 1:
            raise NetworkError(f"network: input_shape must be (C, H, W), got {input_shape}")
        self.shapes = []
        for index, layer in enumerate(self.layers):
            if not isinstance(layer, Layer):
                raise NetworkError(f"layer {index} ({type(layer).__name__}): not a cnnforge "
                                   "layer (Conv2d, Linear, ReLU, ReLU6, MaxPool2d, AvgPool2d, "
                                   "AdaptiveAvgPool2d, Add, Flatten)")
            layer.index = index
            layer.check()
            # ``sources`` set by the user (or importer) is kept; a layer reused in another
            # network gets its default sources again
            if "_given_sources" not in layer.__dict__:
                layer._given_sources = layer.__dict__.get("sources")
            given = layer._given_sources
            layer.sources = tuple(int(s) for s in (given if given is not None
                                                   else layer.default_sources(index)))
            if len(layer.sources) != layer.arity:
                raise layer.error(f"takes {layer.arity} input(s), got sources {layer.sources}")
            for src in layer.sources:
                if not -1 <= src < index:
                    raise layer.error(f"source {src} is not an earlier layer (0..{index - 1}) or "
                                      "-1 (the network input)")
            ins = [self.input_shape if src < 0 else self.shapes[src].output
                   for src in layer.sources]
            out = layer.output_shape(*ins)
            self.shapes.append(_Shape(ins[0], out))
        self.calibration = None if calibration is None else np.asarray(calibration, np.float32)
        if self.calibration is not None and self.calibration.shape[1:] != self.input_shape:
            raise NetworkError(f"network: calibration data has shape {self.calibration.shape[1:]}, "
                               f"expected {self.input_shape}")

    def __iter__(self):
        return iter(self.layers)

    def __len__(self):
        return len(self.layers)

    def __getitem__(self, index):
        return self.layers[index]

    @property
    def output_shape(self):
        return self.shapes[-1].output

    def consumers(self, index):
        """Indices of the layers that read layer ``index``'s output (``-1``: the input)."""
        return [layer.index for layer in self.layers if index in layer.sources]

    def __repr__(self):
        body = "".join(f"\n  ({layer.index}): {layer!r}"
                       + (f"  <- {layer.sources}"
                          if layer.sources != layer.default_sources(layer.index) else "")
                       for layer in self.layers)
        return f"Sequential(input_shape={self.input_shape},{body}\n)"

    def state_dict_shapes(self):
        """``{"0.weight": (8, 1, 3, 3), ...}``: the parameters this network expects."""
        return {f"{layer.index}.{name}": shape for layer in self.layers
                for name, shape in layer.parameter_shapes().items()}

    def load_state_dict(self, state, source="state_dict"):
        """Set every layer's parameters from ``state`` (``{"0.weight": array, ...}``).

        Raises
        ------
        NetworkError
            For a missing or wrongly shaped parameter (naming the layer) or an unexpected key.
        """
        expected = self.state_dict_shapes()
        for key in state:
            if key not in expected:
                index, _, _ = str(key).partition(".")
                if index.isdigit() and int(index) < len(self.layers):
                    layer = self.layers[int(index)]
                    has = ", ".join(f"{index}.{name}" for name in layer.parameter_shapes())
                    raise layer.error(f"unexpected parameter {key!r} in {source} (it has "
                                      f"{has or 'no parameters'})")
                raise NetworkError(f"{source}: unexpected key {key!r} (this network expects "
                                   f"{', '.join(expected) or 'no parameters'})")
        for layer in self.layers:
            for name, shape in layer.parameter_shapes().items():
                key = f"{layer.index}.{name}"
                if key not in state:
                    raise layer.error(f"missing parameter {key!r} in {source}")
                value = np.asarray(state[key], dtype=np.float32)
                if value.shape != tuple(shape):
                    raise layer.error(f"{key} has shape {value.shape}, expected {tuple(shape)}")
                if not np.all(np.isfinite(value)):
                    raise layer.error(f"{key} holds NaN or infinite values")
                setattr(layer, name, value)
        return self

    def load_npz(self, path):
        """Load parameters from an ``.npz`` file with ``state_dict`` keys (see
        :meth:`load_state_dict`)."""
        try:
            with np.load(path) as data:
                state = {key: data[key] for key in data.files}
        except Exception as exc:  # OSError, ValueError, zipfile.BadZipFile, EOFError, zlib.error
            raise NetworkError(f"{path}: cannot read weights ({type(exc).__name__}: "
                               f"{exc})") from None
        return self.load_state_dict(state, source=str(path))

    def check_loaded(self):
        for layer in self.layers:
            for name in layer.parameter_shapes():
                if getattr(layer, name) is None:
                    raise layer.error(f"parameter {layer.index}.{name} was never loaded")

    def forward(self, x, *, intermediates=False):
        """Float forward pass.

        Parameters
        ----------
        x : ndarray, float32, shape (B, C, H, W)
        intermediates : bool
            Return the list of every layer's output instead of the last one.
        """
        self.check_loaded()
        x = np.asarray(x, np.float32)
        if x.shape[1:] != self.input_shape:
            raise NetworkError(f"network: input has shape {x.shape[1:]}, expected "
                               f"{self.input_shape}")
        outs = []
        for layer in self.layers:
            outs.append(layer.forward(*(x if src < 0 else outs[src] for src in layer.sources)))
        return outs if intermediates else outs[-1]

    __call__ = forward

    def macs(self):
        """Multiply-accumulates per image, by layer index (Conv2d and Linear only)."""
        result = {}
        for layer, shape in zip(self.layers, self.shapes):
            if isinstance(layer, Conv2d):
                m, oh, ow = shape.output
                result[layer.index] = m * oh * ow * (layer.in_channels // layer.groups) * int(
                    np.prod(layer.kernel_size))
            elif isinstance(layer, Linear):
                result[layer.index] = layer.in_features * layer.out_features
        return result
