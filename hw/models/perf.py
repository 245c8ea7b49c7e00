"""Analytic performance model of the accelerator: cycles, buffer sizes and buffer accesses.

For one layer, an array size, a dataflow and a tiling (a :class:`~.compiler.LayerPlan`'s
values), :func:`layer_model` predicts what the RTL's per-layer counters measure
(:data:`~.accelerator.COUNTERS`): the cycle count, and the reads and writes of the input tile
buffer, the weight ROM, the output / partial-sum buffer and the feature-map memory.

The model walks the tile loop nest at tile and group granularity (never per cycle) with the
hardware's exact timing rules: the loader streams one value per cycle (two with
``loader_lanes``: :func:`load_cycles`) into a ping-pong half of the input tile buffer and
starts the next tile three cycles after the last value, or two cycles after the controller
releases the half (a value is written two cycles after its read: the block RAM, then a
register; three with ``lutram_buffers``: :func:`~.timing.fm_read_latency`); the controller
starts a tile two cycles after the last write lands; OR
passes last ``L = max(K, I·R·C + 1)`` beats back to back, drained one result every ``I`` cycles
(``ppu_interval``); an IR / WR group is a
1-cycle handshake, an R-row preload (R + 1 cycles) and ``KB`` blocks of ``max(J, Lmin)`` beats;
results leave the array ``array_latency(R, C)`` cycles after their last beat reaches its edge
(the beat is issued ``tile_read_latency`` cycles earlier: the memory and control registers)
and the post-processor writes ``ppu_latency(banked)`` cycles after its input
(:mod:`.timing`). Access counts are closed forms of the loop bounds.
``tests/hw/test_dataflows.py`` (and the Winograd, MobileNet and Verilator tests) check every
figure against the RTL counters.

The model follows Zhang et al., FPGA 2015 (tile loop nests, double buffering) and SCALE-Sim's
os/ws/is timing for the array itself.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["layer_model", "layer_cycles", "network_model", "LayerModel", "buffer_bits",
           "tile_order", "load_order", "load_cycles", "drained_columns", "or_beats", "or_pass_beats",
           "or_passes"]

from cnnforge.hw.models.dataflow import Dataflow
from cnnforge.hw.models.timing import (array_latency, fm_read_latency, ppu_latency,
                                       tile_read_latency)


def _ceil_div(a, b):
    return -(-a // b)


def _ppu_latency(cfg):
    """The post-processor's latency in ``cfg``'s design (its parameter ROM banked with the
    weight ROM)."""
    return ppu_latency(cfg.banked_weights)


@dataclass
class LayerModel:
    """Predicted counters of one layer (same names as the RTL's ``COUNTERS``)."""

    cycles: int
    ibuf_reads: int
    ibuf_writes: int
    weight_reads: int
    obuf_reads: int
    obuf_writes: int
    fm_reads: int
    fm_writes: int
    macs: int
    ideal_cycles: int

    def counters(self):
        return {k: getattr(self, k) for k in ("cycles", "ibuf_reads", "ibuf_writes",
                                               "weight_reads", "obuf_reads", "obuf_writes",
                                               "fm_reads", "fm_writes")}


def tile_order(v):
    """A layer's output tiles in the order the engine runs them: tile rows outer, tile columns
    inner (the loop nest of the RTL's ``TileLoader`` and ``Controller``).

    Parameters
    ----------
    v : dict
        ``LayerPlan.values`` (``ntr``, ``ntc``, ``Tr``, ``Tc``, ``rows_last``, ``cols_last``).

    Yields
    ------
    (tr0, tc0, rows, cols) : tuple of int
        The tile's first output row and column and its size (the last row and column of tiles
        may be ragged).
    """
    for tr in range(v["ntr"]):
        rows = v["rows_last"] if tr == v["ntr"] - 1 else v["Tr"]
        for tc in range(v["ntc"]):
            cols = v["cols_last"] if tc == v["ntc"] - 1 else v["Tc"]
            yield tr * v["Tr"], tc * v["Tc"], rows, cols


def load_cycles(v, chans):
    """Cycles the ``TileLoader`` takes for one load of ``chans`` channels of a tile (``ld_chans``
    or the last block's ``ld_chans_tail``: :func:`load_order`): one per iteration of its loop,
    ``ld_xits`` per tile row (Tc_in, or with x pairs the columns its lane 0 takes) for
    ``Tr_in`` rows of ``ld_nits`` (``ld_nits_tail``) channel iterations (with channel pairs,
    two channels an iteration)."""
    its = v["ld_nits"] if chans == v["ld_chans"] else v["ld_nits_tail"]
    return its * v["Tr_in"] * v["ld_xits"]


def load_order(v):
    """The loads of a layer's input tiles in the order the ``TileLoader`` makes them: each
    tile of :func:`tile_order` in one load of its N channels, or for a depthwise layer in
    ``ld_blocks`` loads of ``ld_chans`` channels (the last ``ld_chans_tail``), one per block of
    R output channels.

    Yields
    ------
    (tr0, tc0, rows, cols, blocks, chans) : tuple
        The tile (:func:`tile_order`), the blocks of R output channels whose passes the load
        feeds (a ``range``) and the channels it loads.
    """
    blocks, chans, tail = v["ld_blocks"], v["ld_chans"], v["ld_chans_tail"]
    for tile in tile_order(v):
        if blocks == 1:
            yield (*tile, range(v["MB"]), chans)
        else:
            for mb in range(blocks):
                yield (*tile, range(mb, mb + 1), tail if mb == blocks - 1 else chans)


def or_pass_beats(K, cfg, cols):
    """Beats of an OR pass of ``cols`` valid columns (``SystolicArray``, ``OutputDrainer``).

    Besides its K beats, the next pass's results must not reach a PE before the drain has read
    it. The drain reads only the valid columns, one result every I cycles from the cycle after
    ``done``: result (r, c) I·(r·cols + c) + 1 cycles after it, while the next pass overwrites
    PE (r, c) L + r + c − (R + C − 1) cycles after ``done`` (``done`` leaves the array's far
    corner, R + C − 2 cycles after PE (0, 0) finished). The last row's last valid column is the
    tightest: L ≥ I·R·cols + C − cols + 2 − I; and the drain must be free for the next pass's
    ``done``: L ≥ I·R·cols + 1. With cols = C both give I·R·C + 1 (``min_pass_beats``); a row's
    last column group of fewer than C pixels makes a shorter pass.

    Parameters
    ----------
    K : int
        The pass's reduction beats.
    cfg : AcceleratorConfig
    cols : int
        The columns the pass drains (1 to C: :func:`drained_columns`).

    Returns
    -------
    int
    """
    skew = max(1, cfg.cols - cols + 2 - cfg.ppu_interval)
    return max(K, cfg.drain_cycles(cols) + skew)


def drained_columns(cols, cfg):
    """The columns the drain reads from the last column group of a row of ``cols`` pixels: its
    valid ones, (cols − 1) mod C + 1, or C without ``narrow_passes``."""
    return (cols - 1) % cfg.cols + 1 if cfg.narrow_passes else cfg.cols


def or_passes(v, cfg, tile, blocks):
    """The columns each OR pass of a load drains, in issue order: for each block of R channels,
    each output row of the tile, each group of C columns (the row's last group ragged: its
    valid columns, or C without ``narrow_passes``).

    Parameters
    ----------
    v : dict
        The layer's values.
    cfg : AcceleratorConfig
    tile : (int, int, int, int)
        The tile's first output row and column and its size (:func:`tile_order`).
    blocks : range
        The blocks of R output channels the load feeds (:func:`load_order`).

    Returns
    -------
    list of (int, int, int, int)
        ``(mb, row, g, cols)`` per pass.
    """
    C = cfg.cols
    rows, cols = tile[2], tile[3]
    groups = _ceil_div(cols, C)
    tail = drained_columns(cols, cfg)
    return [(mb, row, g, tail if g == groups - 1 else C)
            for mb in blocks for row in range(rows) for g in range(groups)]


def or_beats(v, cfg):
    """Beats of an OR layer's passes, summed over its loads (:func:`or_passes`, each pass
    :func:`or_pass_beats` long): the time the array is busy."""
    return sum(or_pass_beats(v["K"], cfg, cols)
               for tr0, tc0, rows, tcols, blocks, _ in load_order(v)
               for *_, cols in or_passes(v, cfg, (tr0, tc0, rows, tcols), blocks))


def _span(start, length, limit):
    """How many of start..start+length-1 fall in [0, limit)."""
    return max(0, min(start + length, limit) - max(start, 0))


def _ppu_valid(v, m, oy, ox):
    return m < v["M"] and oy < v["PH"] * v["pk"] and ox < v["PW"] * v["pk"]


def layer_model(v, cfg):
    """Predict a layer's RTL counters.

    Parameters
    ----------
    v : dict
        ``LayerPlan.values`` (geometry, dataflow ``df``, tiling and derived sizes).
    cfg : AcceleratorConfig

    Returns
    -------
    LayerModel
    """
    R, C = cfg.rows, cfg.cols
    df, K, M, N = Dataflow(v["df"]), v["K"], v["M"], v["N"]
    if df is Dataflow.ADD:
        return _add_model(v, cfg)
    loads = list(load_order(v))
    nloads = len(loads)

    # loader / controller handshake over the two halves of the input tile buffer
    l_last = [0] * nloads
    free = [0] * nloads                           # cycle the controller releases load t's half
    fm_reads = ibuf_writes = 0
    for tr0, tc0, _, _, _, chans in loads:
        y0, x0 = tr0 * v["sh"] - v["ph"], tc0 * v["sw"] - v["pw"]
        fm_reads += chans * _span(y0, v["Tr_in"], v["H"]) * _span(x0, v["Tc_in"], v["W"])
        ibuf_writes += chans * v["Tr_in"] * v["Tc_in"]

    acc = {"ibuf_reads": 0, "ibuf_writes": ibuf_writes, "weight_reads": 0, "obuf_reads": 0,
           "obuf_writes": 0}                      # buffer accesses, summed over the loads
    wait = 1                                      # controller's WAIT_TILE entry cycle
    end = 0                                       # last cycle the layer is busy
    # IR/WR: last drain cycle per psum half, cycle the group drainer is free from, psum half
    sstate = {"drain_done": [-10, -10], "drain_free": -10, "half": 0}
    wstate = {"v_free": [-10, -10], "vh": 0, "cf_free": 0, "cf_vh": 0, "o_free": [-10, -10],
              "oh": 0, "sr_free": -10, "sr_half": 0}
    for t, (tr0, tc0, rows, cols, blocks, chans) in enumerate(loads):
        first = 2 if t == 0 else l_last[t - 1] + 3
        if t >= 2:
            first = max(first, free[t - 2] + 2)
        l_last[t] = first + load_cycles(v, chans) - 1
        # first working cycle of the load: its last value written (fm_read_latency + 1 cycles
        # after its read), then the half's full flag registered
        start = max(wait, l_last[t] + 2 + fm_read_latency(cfg.lutram_buffers, cfg.banked_fm)) + 1
        if df is Dataflow.OR:
            f_end, end = _or_tile(v, cfg, start, (tr0, tc0, rows, cols), blocks, end, acc)
        elif df is Dataflow.WINOGRAD:
            f_end, end = _winograd_tile(v, cfg, start, tr0, tc0, rows, cols, wstate, end)
            groups = rows * _ceil_div(cols, C)
            acc["ibuf_reads"] += groups * (16 * N * C + C * N * 16 * v["MB"])
            acc["ibuf_writes"] += groups * 16 * N * C
            acc["weight_reads"] += groups * 16 * N * v["MB"]
            acc["obuf_writes"] += groups * 16 * R * C * v["MB"]
            acc["obuf_reads"] += groups * (15 * R * C + R * C) * v["MB"]
        else:
            f_end, end = _stationary_tile(v, cfg, start, tr0, tc0, rows, cols, sstate, end, acc)
        free[t] = f_end
        wait = f_end + 1
    pk = v["pk"]
    outputs = M * v["PH"] * v["PW"]
    fm_writes = outputs * pk * pk
    fm_reads += outputs * (pk * pk - 1)
    # a depthwise pass walks R channels, but each output uses only its own channel's taps
    macs = M * v["OH"] * v["OW"] * (v["kh"] * v["kw"] if v.get("dw") else K)
    # the sequencer sees the layer idle one cycle after its last busy cycle (a registered flag)
    return LayerModel(cycles=end + 2, fm_reads=fm_reads, fm_writes=fm_writes, macs=macs,
                      ideal_cycles=_ceil_div(macs, cfg.pes), **acc)


def _add_model(v, cfg):
    """Predicted counters of an element-wise add layer: one element per cycle (both inputs
    read in the same cycle, two table lookups), after the controller's entry cycle and the two
    pipeline stages.

    Parameters
    ----------
    v : dict
        The layer's values (``out_size`` elements).
    cfg : AcceleratorConfig

    Returns
    -------
    LayerModel
    """
    n = v["out_size"]
    return LayerModel(cycles=n + 5 + _ppu_latency(cfg), ibuf_reads=0,
                      ibuf_writes=0, weight_reads=2 * n, obuf_reads=0, obuf_writes=0,
                      fm_reads=2 * n, fm_writes=n, macs=0, ideal_cycles=0)


def _or_tile(v, cfg, start, tile, blocks, end, acc):
    """Timing and accesses of one load of an output-reuse (OR) layer: its passes back to back
    (:func:`or_pass_beats` each), then the drain of the last pass.

    Parameters
    ----------
    v : dict
        The layer's values.
    cfg : AcceleratorConfig
    start : int
        The load's first working cycle.
    tile : (int, int, int, int)
        The tile's first output row and column and its size (:func:`tile_order`).
    blocks : range
        The blocks of R output channels the load feeds (:func:`load_order`).
    end : int
        The last cycle the layer is busy so far.
    acc : dict
        Buffer access counts, increased by the tile's.

    Returns
    -------
    (int, int)
        The tile's last pass cycle (its input half is released) and the updated ``end``.
    """
    R, C = cfg.rows, cfg.cols
    tr0, tc0, rows, cols = tile
    # cycles from a beat's issue (its memory reads) to the array's done / column sums
    A = (tile_read_latency(cfg.lutram_buffers, cfg.banked_weights)
         + array_latency(R, C, cfg.product_registers))
    K, M = v["K"], v["M"]
    x_end = min(tc0 + v["Tc"], v["OW"])
    order = or_passes(v, cfg, tile, blocks)
    passes = len(order)
    firsts = []                  # each pass's first beat
    t = start
    for *_, pcols in order:
        firsts.append(t)
        t += or_pass_beats(K, cfg, pcols)
    f_end = t - 1
    # (the depthwise row mapping reads one bank per row, else one per column)
    acc["ibuf_reads"] += (R if v.get("dw_rows") else C) * K * passes
    # (the depthwise row mapping reads no weight on its segments' beats past kw)
    acc["weight_reads"] += (v["kh"] * v["kw"] if v.get("dw_rows") else K) * passes
    acc["obuf_reads"] += R * sum(pcols for *_, pcols in order)
    acc["obuf_writes"] += R * C * passes
    # the tile's last pass's drain, and the last valid post-processor input of the
    # tile (searched backwards over its passes: a pass whose pixels are all cut by the
    # pooling floor writes nothing), decide when the layer can end; the drain hands over one
    # result every I cycles, row-major over the pass's valid columns
    interval = cfg.ppu_interval
    end = max(end, f_end + 1, firsts[-1] + K - 1 + A + cfg.drain_cycles(order[-1][3]) + 1)
    for p in reversed(range(passes)):
        mb, row, g, pcols = order[p]
        done_p = firsts[p] + K - 1 + A
        hit = next((i for i in reversed(range(R * pcols))
                    if mb * R + i // pcols < M and tc0 + g * C + i % pcols < x_end
                    and _ppu_valid(v, mb * R + i // pcols, tr0 + row, tc0 + g * C + i % pcols)),
                   None)
        if hit is not None:
            end = max(end, done_p + 1 + interval * hit + _ppu_latency(cfg) + 1)
            break
    return f_end, end


def _stationary_tile(v, cfg, start, tr0, tc0, rows, cols, st, end, acc):
    """Timing and accesses of one input tile of an input- or weight-reuse (IR / WR) layer:
    per group a 1-cycle handshake, an R-row preload and ``KB`` blocks of beats, then the
    drain of its column sums from the partial-sum buffer (two halves, ping-pong).

    Parameters
    ----------
    v : dict
        The layer's values.
    cfg : AcceleratorConfig
    start : int
        The tile's first working cycle.
    tr0, tc0, rows, cols : int
        The tile's first output row and column and its size (:func:`tile_order`).
    st : dict
        Drain state carried across tiles (``drain_done`` per psum half, ``drain_free``,
        ``half``); updated.
    end : int
        The last cycle the layer is busy so far.
    acc : dict
        Buffer access counts, increased by the tile's.

    Returns
    -------
    (int, int)
        The tile's last stream cycle (its input half is released) and the updated ``end``.
    """
    R, C = cfg.rows, cfg.cols
    # cycles from a beat's issue (its memory reads) to the array's done / column sums
    A = (tile_read_latency(cfg.lutram_buffers, cfg.banked_weights)
         + array_latency(R, C, cfg.product_registers))
    df, K, M = Dataflow(v["df"]), v["K"], v["M"]
    groups_t = _ceil_div(cols, C)
    x_end = min(tc0 + v["Tc"], v["OW"])
    drain_done = st["drain_done"]
    if df is Dataflow.IR:
        groups = [(tr0 + row, tc0 + g * C, None) for row in range(rows)
                  for g in range(groups_t)]
        beats, L = M, v["L"]
    else:
        groups = [(tr0, tc0, mb) for mb in range(v["MB"])]
        beats = rows * cols
        L = max(beats, v["Lmin"])
    KB = v["KB"]
    cycle = start                                   # GROUP state entry
    for gi, (goy, gox, mb) in enumerate(groups):
        g_start = max(cycle, drain_done[st["half"]] + 1)    # psum half free
        s_first = g_start + R + 2                   # first stream beat
        s_end = s_first + KB * L - 1
        last_beat = s_end - (L - beats)
        ready = last_beat + A + 2                   # group_ready visible
        y = max(ready, st["drain_free"])
        if df is Dataflow.IR:
            n_drain = M * C
            acc["ibuf_reads"] += C * K
            acc["weight_reads"] += M * KB
            acc["obuf_writes"] += C * M * KB
            acc["obuf_reads"] += C * M * (KB - 1) + n_drain
            def order(i, goy=goy, gox=gox):             # drain i: channel-major
                return i // C, goy, gox + i % C
            gx_end = x_end
        else:
            n_drain = C * beats
            acc["ibuf_reads"] += R * beats * KB
            acc["weight_reads"] += R * KB
            acc["obuf_writes"] += C * beats * KB
            acc["obuf_reads"] += C * beats * (KB - 1) + n_drain
            def order(i, goy=goy, gox=gox, mb=mb):      # drain i: column-major
                c, p = divmod(i, beats)
                return mb * C + c, goy + p // cols, gox + p % cols
            gx_end = v["OW"]
        drain_done[st["half"]] = y + n_drain
        st["drain_free"] = y + n_drain + 1
        st["half"] ^= 1
        end = max(end, y + n_drain + 1)
        for i in reversed(range(n_drain)):
            m, oy, ox = order(i)
            if ox < gx_end and _ppu_valid(v, m, oy, ox):
                end = max(end, y + 2 + i + _ppu_latency(cfg) + 1)
                break
        cycle = s_end + 1
    f_end = cycle - 1
    return f_end, max(end, f_end + 1)


def _winograd_tile(v, cfg, start, tr0, tc0, rows, cols, st, end):
    """Timing of one input tile of a Winograd layer: the transform side (one W_GROUP cycle and
    16·N patch reads per group of C tiles), the compute side (per group and channel block: a
    BLOCK cycle and 16 passes of L beats), the row-parallel output-transform drain and the
    serializer (4·R·C outputs per set). Returns (cycle the tile's input half is released,
    updated end). ``st`` carries the handshake state across tiles."""
    R, C, N, MB, L = cfg.rows, cfg.cols, v["N"], v["MB"], v["L"]
    # (the weights a ROM read later than the issue; from a banked ROM as late as the tile
    # buffer's data)
    w_latency = tile_read_latency(cfg.lutram_buffers, True) if cfg.banked_weights else 1
    A = w_latency + array_latency(R, C, cfg.product_registers)
    groups_t = _ceil_div(cols, C)
    cycle = start
    for row in range(rows):
        for g in range(groups_t):
            vh = st["vh"]
            accept = max(cycle, st["v_free"][vh])         # v_full clear from v_free on
            last_read = accept + 16 * N
            # the last V write lands, its flag visible
            v_full = last_read + 17 + tile_read_latency(cfg.lutram_buffers, cfg.banked_weights)
            st["vh"] ^= 1
            cycle = last_read + 1
            # compute side
            x = max(st["cf_free"], v_full)                # IDLE takes the group
            block = x + 1
            ty, tx0 = tr0 + row, tc0 + g * C
            tx_end = min(tc0 + v["Tc"], v["OW"])
            for mb in range(MB):
                oh = st["oh"]
                block = max(block, st["o_free"][oh])
                p0 = block + 1
                last_pass_end = p0 + 16 * L - 1
                last_beat = last_pass_end - (L - N)
                done = last_beat + A
                ready = done + R + 2
                y = max(ready, st["sr_free"])
                st["o_free"][oh] = y + 4 * R * C + 1
                st["sr_free"] = y + 4 * R * C + 1
                st["oh"] ^= 1
                end = max(end, y + 4 * R * C + 1, done + R + 1)
                for e in reversed(range(4 * R * C)):
                    r, rest = divmod(e, 4 * C)
                    c, q = divmod(rest, 4)
                    tx = tx0 + c
                    oy, ox = 2 * ty + (q >> 1), 2 * tx + (q & 1)
                    if tx < tx_end and _ppu_valid(v, mb * R + r, oy, ox):
                        end = max(end, y + 2 + e + _ppu_latency(cfg) + 1)
                        break
                block = last_pass_end + 1
            st["v_free"][vh] = last_pass_end + 1          # v_clr at the last pass cycle
            st["cf_free"] = last_pass_end + 1
    return cycle - 1, max(end, cycle)


def layer_cycles(v, cfg):
    """Predicted cycles of one layer (see :func:`layer_model`)."""
    return layer_model(v, cfg).cycles


def network_model(program):
    """Predicted counters of every layer of a program, and the cycles per image: the layers
    plus 3 cycles of sequencing each (descriptor fetch and start, next layer)."""
    layers = [layer_model(layer.values, program.config) for layer in program.layers]
    return layers, sum(lm.cycles + 3 for lm in layers)


def buffer_bits(program):
    """On-chip memory of a program, in bits: ``{"input": ..., "weights": ..., "psum": ...,
    "fm": ..., "params": ...}``."""
    cfg = program.config
    out = {
        "input": program.input_banks * 2 * program.slot_words * 8,
        "weights": len(program.weights) * cfg.lanes * 8,
        "fm": program.fm_depth * 8,
        "params": len(program.params) * 68,
        "psum": 0,
    }
    if program.stationary:
        out["psum"] = cfg.cols * 2 * program.psum_depth * program.acc_width
    return out
