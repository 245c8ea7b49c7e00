"""Train the bundled digits CNN in plain NumPy and save its float weights.

The network (NCHW, torch semantics, indices as in a ``torch.nn.Sequential``)::

    0 Conv2d(1, 8, 3, padding=1) -> 1 ReLU -> 2 MaxPool2d(2)
    3 Conv2d(8, 16, 3, padding=1) -> 4 ReLU -> 5 MaxPool2d(2)
    6 Flatten -> 7 Linear(64, 10)

Data: scikit-learn's bundled 8x8 handwritten digits (``load_digits``, shipped inside
the package, no download). Pixels 0..16 are scaled to float32 in [0, 1]; the fixed
split is ``train_test_split(test_size=0.25, random_state=0, stratify=y)``
(see :func:`load_split`, importable as ``cnnforge.examples.digits.train.load_split``).

Training uses hand-written forward/backward passes (im2col convolutions), softmax
cross-entropy, Adam and mini-batches, with He initialisation and a fixed seed, so a
run is reproducible. No torch is needed.

The result is written as a state_dict-style ``.npz`` with float32 arrays
``0.weight`` (8,1,3,3), ``0.bias`` (8,), ``3.weight`` (16,8,3,3), ``3.bias`` (16,),
``7.weight`` (10,64), ``7.bias`` (10,).

Run it with ``make train`` or::

    python examples/digits/train.py [--epochs N] [--seed S] [--out PATH] [--check-grad]

``--check-grad`` compares the analytic gradients with central differences on a
small batch (in float64) before training.
"""

import argparse
import os
import sys
import time

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights.npz")

# (name, shape) of every parameter, in state_dict order.
PARAM_SHAPES = (
    ("0.weight", (8, 1, 3, 3)),
    ("0.bias", (8,)),
    ("3.weight", (16, 8, 3, 3)),
    ("3.bias", (16,)),
    ("7.weight", (10, 64)),
    ("7.bias", (10,)),
)


def load_split():
    """The fixed digits split: (x_train, y_train, x_test, y_test).

    x is float32 shaped (N, 1, 8, 8) in [0, 1] (pixels / 16), y is int64.
    """
    digits = load_digits()
    x = (digits.images.astype(np.float32) / np.float32(16.0)).reshape(-1, 1, 8, 8)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, random_state=0, stratify=y
    )
    return x_train, y_train, x_test, y_test


def init_params(rng, dtype=np.float32):
    """He-initialised parameters (zero biases) as a state_dict-style dict."""
    params = {}
    for name, shape in PARAM_SHAPES:
        if name.endswith(".bias"):
            params[name] = np.zeros(shape, dtype=dtype)
        else:
            fan_in = int(np.prod(shape[1:]))
            params[name] = (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(dtype)
    return params


# ---------------------------------------------------------------------------
# Layers: 3x3 convolution with padding 1 (stride 1) and 2x2 max pooling.
# ---------------------------------------------------------------------------

def _im2col(x, k=3, pad=1):
    """(N, C, H, W) -> (N*H*W, C*k*k) patches, columns ordered (c, kh, kw)."""
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    cols = np.empty((n, c, k, k, h, w), dtype=x.dtype)
    for i in range(k):
        for j in range(k):
            cols[:, :, i, j] = xp[:, :, i:i + h, j:j + w]
    return cols.transpose(0, 4, 5, 1, 2, 3).reshape(n * h * w, c * k * k)


def _col2im(dcols, shape, k=3, pad=1):
    """Adjoint of :func:`_im2col`: scatter-add patch gradients back to (N, C, H, W)."""
    n, c, h, w = shape
    dcols = dcols.reshape(n, h, w, c, k, k).transpose(0, 3, 4, 5, 1, 2)
    dxp = np.zeros((n, c, h + 2 * pad, w + 2 * pad), dtype=dcols.dtype)
    for i in range(k):
        for j in range(k):
            dxp[:, :, i:i + h, j:j + w] += dcols[:, :, i, j]
    return dxp[:, :, pad:pad + h, pad:pad + w]


def _conv_forward(x, weight, bias):
    n, _, h, w = x.shape
    cols = _im2col(x)
    out = cols @ weight.reshape(weight.shape[0], -1).T + bias
    return out.reshape(n, h, w, -1).transpose(0, 3, 1, 2), cols


def _conv_backward(dout, x_shape, cols, weight):
    oc = weight.shape[0]
    dout2 = dout.transpose(0, 2, 3, 1).reshape(-1, oc)
    dw = (dout2.T @ cols).reshape(weight.shape)
    db = dout2.sum(axis=0)
    dx = _col2im(dout2 @ weight.reshape(oc, -1), x_shape)
    return dx, dw, db


def _pool_forward(x):
    n, c, h, w = x.shape
    blocks = x.reshape(n, c, h // 2, 2, w // 2, 2)
    out = blocks.max(axis=(3, 5))
    # Route the gradient to one maximum per window (first in row-major order, like torch).
    blocks = blocks.transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h // 2, w // 2, 4)
    arg = blocks.argmax(axis=-1)
    return out, arg


def _pool_backward(dout, arg, x_shape):
    n, c, h, w = x_shape
    mask = arg[..., None] == np.arange(4)
    d = (mask * dout[..., None]).reshape(n, c, h // 2, w // 2, 2, 2)
    return d.transpose(0, 1, 2, 4, 3, 5).reshape(x_shape).astype(dout.dtype)


# ---------------------------------------------------------------------------
# Network.
# ---------------------------------------------------------------------------

def forward(params, x):
    """Logits (N, 10) for x (N, 1, 8, 8)."""
    logits, _ = _forward(params, x)
    return logits


def _forward(params, x):
    c0, cols0 = _conv_forward(x, params["0.weight"], params["0.bias"])
    r1 = np.maximum(c0, 0)
    p2, arg2 = _pool_forward(r1)
    c3, cols3 = _conv_forward(p2, params["3.weight"], params["3.bias"])
    r4 = np.maximum(c3, 0)
    p5, arg5 = _pool_forward(r4)
    f6 = p5.reshape(p5.shape[0], -1)
    logits = f6 @ params["7.weight"].T + params["7.bias"]
    cache = (x.shape, cols0, c0, r1.shape, arg2, p2.shape, cols3, c3, r4.shape, arg5, p5.shape, f6)
    return logits, cache


def loss_and_grads(params, x, y):
    """Mean softmax cross-entropy over the batch and its gradients w.r.t. every parameter."""
    logits, cache = _forward(params, x)
    (x_shape, cols0, c0, r1_shape, arg2, p2_shape, cols3, c3, r4_shape, arg5, p5_shape, f6) = cache
    n = x.shape[0]
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    loss = -logp[np.arange(n), y].mean()

    dlogits = np.exp(logp)
    dlogits[np.arange(n), y] -= 1
    dlogits /= n

    g = {}
    g["7.weight"] = dlogits.T @ f6
    g["7.bias"] = dlogits.sum(axis=0)
    dp5 = (dlogits @ params["7.weight"]).reshape(p5_shape)
    dr4 = _pool_backward(dp5, arg5, r4_shape)
    dc3 = dr4 * (c3 > 0)
    dp2, g["3.weight"], g["3.bias"] = _conv_backward(dc3, p2_shape, cols3, params["3.weight"])
    dr1 = _pool_backward(dp2, arg2, r1_shape)
    dc0 = dr1 * (c0 > 0)
    _, g["0.weight"], g["0.bias"] = _conv_backward(dc0, x_shape, cols0, params["0.weight"])
    return float(loss), g


def accuracy(params, x, y, batch=1024):
    """Fraction of x classified as y."""
    correct = 0
    for i in range(0, len(x), batch):
        correct += int((forward(params, x[i:i + batch]).argmax(axis=1) == y[i:i + batch]).sum())
    return correct / len(x)


def check_grad(x, y, seed=0, samples=6, eps=1e-5):
    """Compare analytic and central-difference gradients in float64; returns the worst relative error."""
    rng = np.random.default_rng(seed)
    params = init_params(rng, dtype=np.float64)
    for name, _ in PARAM_SHAPES:  # non-zero biases so their gradients are exercised too
        if name.endswith(".bias"):
            params[name] = rng.standard_normal(params[name].shape) * 0.1
    x = x.astype(np.float64)
    _, grads = loss_and_grads(params, x, y)
    worst = 0.0
    for name, shape in PARAM_SHAPES:
        flat = params[name].reshape(-1)
        for idx in rng.choice(flat.size, size=min(samples, flat.size), replace=False):
            old = flat[idx]
            flat[idx] = old + eps
            lp, _ = loss_and_grads(params, x, y)
            flat[idx] = old - eps
            lm, _ = loss_and_grads(params, x, y)
            flat[idx] = old
            num = (lp - lm) / (2 * eps)
            ana = grads[name].reshape(-1)[idx]
            rel = abs(num - ana) / max(1e-8, abs(num) + abs(ana))
            worst = max(worst, rel)
        print(f"  grad check {name:9s} ok so far, worst relative error {worst:.2e}")
    return worst


def train(x_train, y_train, epochs=40, seed=0, batch_size=32, lr=3e-3, verbose=True):
    """Adam on mini-batches from He init; returns the float32 parameter dict."""
    rng = np.random.default_rng(seed)
    params = init_params(rng)
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v = {k: np.zeros_like(v) for k, v in params.items()}
    beta1, beta2, adam_eps = 0.9, 0.999, 1e-8
    step = 0
    n = len(x_train)
    for epoch in range(epochs):
        # Cosine decay of the learning rate over the run.
        lr_e = lr * 0.5 * (1 + np.cos(np.pi * epoch / epochs))
        order = rng.permutation(n)
        total = 0.0
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size]
            loss, grads = loss_and_grads(params, x_train[idx], y_train[idx])
            total += loss * len(idx)
            step += 1
            for k in params:
                g = grads[k].astype(np.float32)
                m[k] = beta1 * m[k] + (1 - beta1) * g
                v[k] = beta2 * v[k] + (1 - beta2) * g * g
                mhat = m[k] / (1 - beta1 ** step)
                vhat = v[k] / (1 - beta2 ** step)
                params[k] = (params[k] - lr_e * mhat / (np.sqrt(vhat) + adam_eps)).astype(np.float32)
        if verbose:
            print(f"epoch {epoch + 1:3d}/{epochs}  loss {total / n:.4f}  lr {lr_e:.2e}")
    return params


def save_weights(params, path):
    """Write params as a state_dict-style .npz of float32 arrays."""
    out_dir = os.path.dirname(os.path.abspath(path))
    os.makedirs(out_dir, exist_ok=True)
    arrays = {}
    for name, shape in PARAM_SHAPES:
        a = np.ascontiguousarray(params[name], dtype=np.float32)
        assert a.shape == shape, (name, a.shape, shape)
        arrays[name] = a
    np.savez(path, **arrays)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=40, help="training epochs (default 40)")
    ap.add_argument("--seed", type=int, default=0, help="RNG seed (default 0)")
    ap.add_argument("--out", default=DEFAULT_OUT, help="output .npz (default: weights.npz next to this script)")
    ap.add_argument("--check-grad", action="store_true", help="numerically check the backward pass first")
    args = ap.parse_args(argv)

    x_train, y_train, x_test, y_test = load_split()
    print(f"digits: {len(x_train)} train, {len(x_test)} test images")

    if args.check_grad:
        worst = check_grad(x_train[:8], y_train[:8], seed=args.seed)
        print(f"gradient check: worst relative error {worst:.2e}")
        if worst > 1e-4:
            print("gradient check FAILED", file=sys.stderr)
            return 1

    t0 = time.perf_counter()
    params = train(x_train, y_train, epochs=args.epochs, seed=args.seed)
    elapsed = time.perf_counter() - t0

    save_weights(params, args.out)
    train_acc = accuracy(params, x_train, y_train)
    test_acc = accuracy(params, x_test, y_test)
    print(f"trained {args.epochs} epochs in {elapsed:.1f} s, saved {args.out}")
    print(f"train accuracy {train_acc * 100:.2f}%  test accuracy {test_acc * 100:.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
