"""Timing contracts between the cycle model and the RTL.

The analytic cycle model (:mod:`cnnforge.hw.models.perf`) and the Amaranth components
(:mod:`cnnforge.hw.rtl.pe_array`, :mod:`cnnforge.hw.rtl.ppu`) both follow these figures: the
components take them from here, so a pipeline change is made in one place and the model's
predictions follow it (``tests/hw/test_dataflows.py`` checks the model against the RTL's
counters).
"""

__all__ = ["array_latency", "fm_read_latency", "pass_fifo_depth", "ppu_latency",
           "read_port_latency", "tile_read_latency"]

def ppu_latency(banked_params=False):
    """Cycles from a post-processor input beat to its write (``PostProcessor.latency``).

    The input beat is registered (the parameter ROM reads meanwhile), then the parameters,
    bias, four registered 16×16 partial products, three adder levels to the 64-bit product (no
    carry chain longer than 32 bits: the UP5K's 48-bit sum was its digits core's critical
    path), four for the rounding, one for the zero point's add (beside the 10-bit range test),
    one for the clamp, and the write registered (the fused max-pool's compare and multiplexers
    not in front of the feature map's port): 14. A post-processor taking a beat every other
    cycle (``PostProcessor(interval=2)``: its partial products time-shared over two DSP
    blocks) keeps the first products a stage and sums them in two: 14 as well. A parameter
    ROM in banks (``banked_params``, the ECP5 designs: :func:`read_port_latency`) reads three
    cycles longer.

    Parameters
    ----------
    banked_params : bool
        The parameter ROM is a :class:`~cnnforge.hw.rtl.banked.BankedMemory`
        (``AcceleratorConfig.banked_weights``).

    Returns
    -------
    int
    """
    return 14 + read_port_latency(banked_params) - 1


def read_port_latency(banked):
    """Cycles from a memory read port's address to its data: 1 (a synchronous read), or 4 from
    a memory in banks (:class:`cnnforge.hw.rtl.banked.BankedMemory`: the address registered
    before it fans out to the banks, the read, each bank's word registered, a multiplexer over
    a group of banks registered; the multiplexer over the groups after them, registered by the
    port's user).

    Parameters
    ----------
    banked : bool

    Returns
    -------
    int
    """
    return 4 if banked else 1


def fm_read_latency(lutram, banked=False):
    """Cycles from the tile loader's feature-map read address to its data registered for the
    tile-buffer write's padding multiplexer: 1, or 2 in the designs with LUT-RAM tile buffers
    (ECP5, ``lutram_buffers``), which register the data straight out of the block RAM first
    (its clock-to-out, 5.8 ns on the LFE5U, is then not in front of the multiplexer; yosys'
    ECP5 mapping leaves the DP16KD's own output register unused, so this one is in the
    fabric), or 5 with a feature map in banks (``banked``,
    ``AcceleratorConfig.fm_bank_words``: the bank multiplexer in front of that register:
    :func:`read_port_latency`).

    Parameters
    ----------
    lutram : bool
    banked : bool

    Returns
    -------
    int
    """
    return read_port_latency(banked) + (1 if lutram or banked else 0)


def tile_read_latency(lutram, banked_weights=False):
    """Cycles from a tile-buffer read address (and the controller's beat issued with it) to its
    data at the array's edge.

    Block RAM reads synchronously: one cycle. Distributed RAM (``lutram``, the ECP5 boards) reads
    behind a registered address and registers its data before the bank rotation: two cycles
    (the asynchronous read's multiplexer tree and the rotation were one path before, the ECP5
    cores' critical one). With ``banked_weights`` the weight ROM's words come
    :func:`read_port_latency` (4) cycles after the address and are registered after its bank
    multiplexer, and the tile buffer's data are registered until then: five. The controller's
    beat, rotation, preload and patch outputs and the weight address are delayed to match
    (:class:`cnnforge.hw.rtl.accelerator.Accelerator`).

    Parameters
    ----------
    lutram : bool
        ``AcceleratorConfig.lutram_buffers``.
    banked_weights : bool
        ``AcceleratorConfig.weight_bank_words`` is set.

    Returns
    -------
    int
        1, 2 or 5.
    """
    if banked_weights:
        return read_port_latency(True) + 1
    return 2 if lutram else 1


def array_latency(rows, cols, product_registers=1):
    """Cycles from a beat at the PE array's edge to its results.

    Cycles to ``done`` (its pass's results are in the PEs' result registers) or to its column
    sums on ``psums``: one edge register, R − 1 + C − 1 cycles of skew and travel, the product
    registers, one to the result or partial sum.

    Parameters
    ----------
    rows, cols : int
        Array size.
    product_registers : int
        Registers around each PE's multiply (``AcceleratorConfig.product_registers``): 1, 2
        (the route out of the DSP block in a cycle of its own) or 3 (ECP5: the route into it
        as well).

    Returns
    -------
    int
        ``rows + cols + product_registers``.
    """
    return rows + cols + product_registers


def pass_fifo_depth(min_pass_beats, tile_latency, array_latency):
    """Entries of the pass metadata FIFO (``Accelerator``'s ``meta``): the controller writes a
    pass's entry at its first beat and the drain takes it when the pass's results are done,
    with no back-pressure between them, so the FIFO holds every pass that can be in flight:
    passes start ``min_pass_beats`` apart at the fastest and finish ``tile_latency`` +
    ``array_latency`` cycles after their last beat (two cycles' margin for the handshakes);
    at least 4. A 1×1 array's two-beat passes behind a banked weight ROM (tile latency 5) have
    up to six in flight.

    Parameters
    ----------
    min_pass_beats, tile_latency, array_latency : int

    Returns
    -------
    int
    """
    span = min_pass_beats + tile_latency + array_latency + 2
    return max(4, -(-span // min_pass_beats) + 1)
