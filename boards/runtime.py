"""Host runtime: classify images on a board over its UART (pyserial).

::

    with BoardLink("/dev/ttyUSB1", output_size=10) as board:
        result = board.infer(image_int8)        # -> protocol.Result(logits, cls, cycles)

The frames are :mod:`cnnforge.boards.protocol`'s, the same code the simulation test of the
board top uses. A board with its weights in SPRAM gets them with
:meth:`BoardLink.ensure_weights` (once per power-up: it compares the board's hash with the
network's). After an error frame or a timeout the link drains what is left on the line, so the
next request starts clean; :meth:`BoardLink.infer` retries such a failure ``retries`` times.
"""

from __future__ import annotations

import time

import numpy as np

from cnnforge.boards.protocol import (FrameDecoder, LinkError, MessageType, encode_image,
                                     encode_status_request, parse_result, parse_status,
                                     weight_frames, weights_hash)

__all__ = ["BoardLink"]


class BoardLink:
    """A board running the host link, reached through a serial port.

    Parameters
    ----------
    port : str or serial-like object
        A device name (``/dev/ttyUSB1``, ``COM3``), or an open object with ``write``,
        ``read(n)`` and ``reset_input_buffer`` (a ``serial.Serial``, a test double).
    output_size : int
        Logits per image (10 for the digits).
    baud : int
        The board's UART rate.
    timeout : float
        Seconds to wait for an answer.
    retries : int
        Times a request is sent again after an error frame or a timeout.
    """

    def __init__(self, port, output_size, *, baud=115200, timeout=2.0, retries=1):
        if isinstance(port, str):
            import serial
            try:
                self.serial = serial.Serial(port, baud, timeout=0.05)
            except (serial.SerialException, OSError) as exc:
                raise LinkError(f"cannot open {port}: {exc}") from None
            self._owned = True
        else:
            self.serial = port
            self._owned = False
        self.output_size = output_size
        self.timeout = timeout
        self.retries = retries

    def close(self):
        if self._owned:
            self.serial.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _drain(self):
        try:
            self.serial.reset_input_buffer()
        except (AttributeError, OSError):
            pass

    def request(self, frame):
        """Send ``frame`` and return the first valid frame that comes back ``(type, payload)``.

        Raises
        ------
        LinkError
            On a timeout.
        """
        self._drain()
        self.serial.write(frame)
        decoder = FrameDecoder()
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            data = self.serial.read(256)
            if data:
                frames = decoder.feed(data)
                if frames:
                    return frames[0]
        raise LinkError(f"no answer within {self.timeout:g} s (is the board programmed with "
                        "this network, and the baud rate right?)")

    def infer(self, image):
        """Classify one int8 image.

        Returns
        -------
        protocol.Result

        Raises
        ------
        LinkError
            If the board keeps rejecting the frame or does not answer.
        """
        frame = encode_image(np.asarray(image, np.int8))
        error = None
        for _ in range(self.retries + 1):
            try:
                type_, payload = self.request(frame)
                return parse_result(type_, payload, self.output_size)
            except LinkError as exc:
                error = exc
                if "another network" in str(exc):
                    raise
                self._drain()
        raise error

    def status(self):
        """The board's :class:`~cnnforge.boards.protocol.Status` (its weights' hash)."""
        return parse_status(*self.request(encode_status_request()))

    def ensure_weights(self, image, attempts=3, progress=None):
        """Make the board hold the weight image ``image`` (bytes,
        :func:`~cnnforge.hw.compiler.program.weight_image`): upload it in weights frames when
        the board's hash differs and its weights are loaded at run time.

        Parameters
        ----------
        progress : callable, optional
            Called with (bytes sent, total) after each chunk.

        Returns
        -------
        bool
            Whether the weights were uploaded.

        Raises
        ------
        LinkError
            The board holds other weights in its bitstream (built for another network), or the
            upload failed ``attempts`` times.
        """
        status = self.status()
        if status.network != weights_hash(image):
            raise LinkError(f"the board expects weights of hash {status.network:08x}, this "
                            f"network's are {weights_hash(image):08x}: is the board built "
                            "for another network?")
        if status.ready:
            return False
        frames = weight_frames(image)
        for _ in range(attempts):
            sent = 0
            try:
                for frame in frames:
                    status = parse_status(*self.request(frame))
                    sent += len(frame) - 7            # sync, TYPE, LEN, flags, CRC
                    if progress:
                        progress(sent, len(image))
            except LinkError:
                self._drain()
                continue
            if status.ready:
                return True
        raise LinkError(f"weight upload failed {attempts} times (board hash "
                        f"{status.weights:08x}, expected {status.network:08x})")

    @staticmethod
    def is_error(type_):
        return type_ == MessageType.ERROR
