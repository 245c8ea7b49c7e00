"""The bundled example: a small CNN for scikit-learn's 8×8 handwritten digits.

``network`` is what every ``cnnforge`` subcommand takes as NET. Weights come from
``weights.npz`` (trained by ``train.py``: ``make train``); ``calibration`` holds 256 training
images for the quantizer and ``test_data()`` the held-out split (450 images).
"""

import os

from cnnforge.examples.digits.train import load_split
from cnnforge.hw.frontend.network import Conv2d, Flatten, Linear, MaxPool2d, ReLU, Sequential

HERE = os.path.dirname(os.path.abspath(__file__))

network = Sequential(
    Conv2d(1, 8, 3, padding=1),     # 0
    ReLU(),                         # 1
    MaxPool2d(2),                   # 2
    Conv2d(8, 16, 3, padding=1),    # 3
    ReLU(),                         # 4
    MaxPool2d(2),                   # 5
    Flatten(),                      # 6
    Linear(64, 10),                 # 7
    input_shape=(1, 8, 8),
)
network.load_npz(os.path.join(HERE, "weights.npz"))

_x_train, _y_train, _x_test, _y_test = load_split()
calibration = _x_train[:256]


def test_data():
    """Held-out digits: float32 (450, 1, 8, 8) in [0, 1] and int64 labels (450,)."""
    return _x_test, _y_test
