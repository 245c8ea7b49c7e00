"""A simulation harness around the accelerator, so that the RTL simulator runs whole images
without Python on the per-cycle path.

:class:`SimHarness` holds a batch of images in an image memory, streams them one after another
into the accelerator's ``i_image`` and captures ``o_logits``, ``o_debug`` (every layer's record)
and the ``cycles`` counter of each image into memories of its own. The stream protocol is still
exercised: a pseudo-random source pauses ``valid`` and a pseudo-random sink drops ``ready``
(xorshift32 generators reseeded at every image from the seed and the image's number in the
whole stream, one decision per cycle; a run split over processes sees the same), so the bench's
``gaps`` and ``backpressure`` keep their meaning, a probability per cycle. An idle-cycle
watchdog in the harness ends a run that stopped moving. With SPRAM weights the
harness first streams the weight image (a ROM of its own) into the accelerator's ``i_weights``;
runs start once it is loaded. The cocotb bench
(:mod:`cnnforge.sim.bench`) fills the image memory and reads the result memories through memory
handles, in bulk, and wakes once per batch.

:func:`clock_wrapper` writes the Verilog top (``sim_top``) that generates the clock in the HDL
(Verilator's ``--timing``) and holds the harness's inputs in registers the bench writes;
:func:`public_config` writes the Verilator configuration that makes only those and the
harness's memories visible to the bench, so Verilator optimizes the accelerator as a whole.

Where the time went (digits 4x4 with the per-layer dump, processor time of the simulator on a
loaded 2-core machine; ``perf`` to find the causes): the clock in the HDL with cocotb's default
of every signal public, 0.30 M cycles/s; only the bench's registers and the memories public,
0.82 M; one time step per cycle (:func:`clock_wrapper`), 1.09 M; the clock and reset private
too (Verilator re-evaluates everything downstream of a variable the bench may write at every
step, and the reset reaches every flip-flop), 1.20 M; the reset tied low for the RTL (Amaranth's
Verilog gives every register its initial value), 1.50 M. What remains is the design's own
evaluation.
"""

from __future__ import annotations

from types import SimpleNamespace

from amaranth.hdl import Cat, ClockSignal, Const, Instance, Module, ResetSignal, Signal
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from cnnforge.hw.compiler.program import weight_image
from cnnforge.hw.rtl.accelerator import Accelerator
from cnnforge.sim.rtl import debug_stream_size

__all__ = ["SimHarness", "AcceleratorInstance", "clock_wrapper", "public_config",
           "probability_threshold", "HARNESS", "WRAPPER", "CLOCK_NS", "WORD_BYTES",
           "MEMORY_BUDGET", "NEVER"]

HARNESS = "sim_harness"
"""Verilog module name of :class:`SimHarness`."""

WRAPPER = "sim_top"
"""Verilog module name of the clock wrapper (the cocotb top level)."""

CLOCK_NS = 10
"""Clock period of the wrapper, ns."""

WORD_BYTES = 32
"""Bytes per word of the harness's memories: the bench moves one word per memory-handle access
(the access costs about the same for 1 or 32 bytes, so wider words move a batch faster)."""

MEMORY_BUDGET = 256 * 1024
"""Bytes of images, logits and debug records a batch may hold (at least one image)."""

MAX_BATCH = 256
"""Most images per batch."""

NEVER = (1 << 32) - 1
"""``stall_after`` value that never stops the sink."""

INPUTS = ("request", "count", "first_image", "debug", "seed", "gap_threshold",
          "ready_threshold", "stall_after", "timeout", "repeat_beat", "drop_beat")
"""The harness's inputs (the bench writes them)."""

RANDOM_BITS = 16
"""Bits of the random number compared with the thresholds (probability resolution 2⁻¹⁶)."""


def probability_threshold(p):
    """The threshold that makes a ``RANDOM_BITS``-bit uniform number fall below it with
    probability ``p`` (rounded to the nearest 2⁻¹⁶)."""
    if not 0 <= p < 1:
        raise ValueError(f"{p} is not a probability in [0, 1)")
    return min(round(p * (1 << RANDOM_BITS)), (1 << RANDOM_BITS) - 1)


def _xorshift32(state):
    """One step of Marsaglia's xorshift32 (13, 17, 5) as an expression: a full-period
    (2³² − 1) generator for any non-zero state."""
    x = state ^ (state << 13)[:32]
    x = x ^ (x >> 17)
    return x ^ (x << 5)[:32]


class AcceleratorInstance(wiring.Component):
    """The accelerator as a Verilog instance (module ``name``), for a netlist built apart (the
    gate-level simulation of :func:`cnnforge.boards.synth.write_netlist`): the same signature as
    :class:`~cnnforge.hw.rtl.accelerator.Accelerator`."""

    def __init__(self, program, name="accelerator"):
        self._name = name
        reference = Accelerator(program)
        reference._MustUse__silence = True          # only its signature is used
        super().__init__(dict(reference.signature.members))

    def elaborate(self, platform):
        m = Module()
        ports = {"i_clk": ClockSignal(), "i_rst": ResetSignal()}
        for path, member, value in self.signature.flatten(self):
            name = "__".join(str(p) for p in path)
            ports[("i_" if member.flow == In else "o_") + name] = value
        m.submodules.accelerator = Instance(self._name, **ports)
        return m


class SimHarness(wiring.Component):
    """The accelerator with a stimulus memory, result memories, a random source and sink and a
    watchdog.

    A *run* streams ``count`` images of the image memory through the accelerator, one after
    another: image ``b`` starts when image ``b − 1``'s logits (and, with ``debug``, its debug
    record) have all been taken. A run begins when ``request`` differs from ``served`` and ends
    (``served`` := ``request``) when the last image is done or the watchdog fires.

    Parameters
    ----------
    program : Program
    batch : int
        Images the memories hold (default: as many as :data:`MEMORY_BUDGET` allows, at most
        :data:`MAX_BATCH`).
    accelerator : wiring.Component, optional
        The design under test (default ``Accelerator(program)``; :class:`AcceleratorInstance`
        for a netlist).

    Members
    -------
    request : In(8)
        A new value starts a run.
    count : In(16)
        Images in the run, 1..``batch``.
    debug : In(1)
        Drives the accelerator's ``debug`` and makes the sink expect its records.
    first_image : In(32)
        Number of the run's first image in the whole stream the bench sends (a run of several
        simulator processes numbers its images across them).
    seed : In(32)
        Seeds the source's and the sink's generators: they restart at every image from the seed
        and the image's number (``first_image`` + its place in the run), so an image sees the
        same gaps and back-pressure however the images are split into runs and processes.
    gap_threshold, ready_threshold : In(16)
        A cycle has no ``valid`` (``ready``) when the generator's 16 bits are below the
        threshold: probability threshold / 2¹⁶ (:func:`probability_threshold`).
    stall_after : In(32)
        Tests of the watchdog: the sink takes no beat after this many of one image (logits and
        debug bytes together); :data:`NEVER` disables it.
    timeout : In(32)
        Cycles without a beat on any stream after which a run ends as stalled.
    repeat_beat, drop_beat : In(32)
        Tests of the checker, a deliberately broken harness (:data:`NEVER`: off): the source
        sends byte ``repeat_beat`` of every image twice (and never its last byte); the sink
        takes debug byte ``drop_beat`` of every image without storing it (the record's
        remaining bytes move up by one, its last stays 0).
    served : Out(8)
        Equals ``request`` once the run is over.
    stalled : Out(1)
        The last run ended on the watchdog.
    stalled_input : Out(1)
        It stalled with bytes of the image still to send (else on the outputs).
    image : Out(16)
        Images done in the run (when stalled: the index of the image that stalled).
    logits_taken, debug_taken : Out(32)
        Beats taken of the current image.
    """

    def __init__(self, program, batch=None, accelerator=None):
        self.program = program
        self.image_size = program.image_size
        self.output_size = program.output_size
        self.debug_size = debug_stream_size(program)
        if batch is None:
            per_image = self.image_size + self.output_size + self.debug_size
            batch = max(1, min(MAX_BATCH, MEMORY_BUDGET // per_image))
        if not 1 <= batch < 1 << 16:
            raise ValueError(f"batch={batch}: give 1 to 65535 images")
        self.batch = batch
        self.accelerator = accelerator                # None: Accelerator(program), elaborated
        super().__init__({
            "request": In(8), "count": In(16), "first_image": In(32), "debug": In(1),
            "seed": In(32),
            "gap_threshold": In(RANDOM_BITS), "ready_threshold": In(RANDOM_BITS),
            "stall_after": In(32), "timeout": In(32),
            "repeat_beat": In(32, init=NEVER), "drop_beat": In(32, init=NEVER),
            "served": Out(8), "stalled": Out(1), "stalled_input": Out(1), "image": Out(16),
            "logits_taken": Out(32), "debug_taken": Out(32),
        })

    @staticmethod
    def words(size):
        """Words of :data:`WORD_BYTES` that hold ``size`` bytes (at least one)."""
        return max(1, -(-size // WORD_BYTES))

    def elaborate(self, platform):
        m = Module()
        acc = self.accelerator if self.accelerator is not None else Accelerator(self.program)
        m.submodules.accelerator = acc
        W = WORD_BYTES
        lane_bits = (W - 1).bit_length()
        n = self.batch

        # The bench's inputs, registered: the logic they feed depends on flip-flops only, not
        # on variables the bench may write at any time (Verilator re-evaluates what is
        # downstream of those at every step; a small cone here, no measurable difference). A
        # write takes effect one cycle later.
        cfg = SimpleNamespace()
        for name in INPUTS:
            port = getattr(self, name)
            setattr(cfg, name, Signal.like(port, name=f"{name}_q"))
            m.d.sync += getattr(cfg, name).eq(port)

        m.submodules.image_mem = image_mem = memory.Memory(
            shape=8 * W, depth=self.words(n * self.image_size), init=[])
        m.submodules.logits_mem = logits_mem = memory.Memory(
            shape=8 * W, depth=self.words(n * self.output_size), init=[])
        m.submodules.debug_mem = debug_mem = memory.Memory(
            shape=8 * W, depth=self.words(n * self.debug_size), init=[])
        m.submodules.cycles_mem = cycles_mem = memory.Memory(shape=32, depth=n, init=[])
        src = image_mem.read_port(domain="comb")
        lg_wr = logits_mem.write_port(granularity=8)
        dbg_wr = debug_mem.write_port(granularity=8)
        cyc_wr = cycles_mem.write_port()

        busy = Signal()
        rng_v, rng_r = Signal(32, init=1), Signal(32, init=2)
        idle = Signal(32)
        src_addr, lg_addr, dbg_addr = Signal(32), Signal(32), Signal(32)
        sent = Signal(32)                                   # bytes of this image sent
        taken_l, taken_d = self.logits_taken, self.debug_taken
        m.d.sync += [rng_v.eq(_xorshift32(rng_v)), rng_r.eq(_xorshift32(rng_r))]
        m.d.comb += acc.debug.eq(cfg.debug)

        # the source: the image's bytes, valid withheld with probability gap_threshold / 2^16
        need_in = busy & (sent < self.image_size)
        m.d.comb += [
            src.addr.eq(src_addr[lane_bits:]),
            acc.i_image.payload.eq(src.data.word_select(src_addr[:lane_bits], 8)),
            acc.i_image.valid.eq(need_in & (rng_v[32 - RANDOM_BITS:] >= cfg.gap_threshold)),
        ]
        took_in = acc.i_image.valid & acc.i_image.ready

        # the sink: ready dropped with probability ready_threshold / 2^16, and for good after
        # stall_after beats of an image; beats beyond the expected counts are never taken
        debug_size = Signal(32)
        m.d.comb += debug_size.eq(Cat(cfg.debug).replicate(32) & self.debug_size)
        ready = (busy & (rng_r[32 - RANDOM_BITS:] >= cfg.ready_threshold)
                 & ((taken_l + taken_d) < cfg.stall_after))
        m.d.comb += [
            acc.o_logits.ready.eq(ready & (taken_l < self.output_size)),
            acc.o_debug.ready.eq(ready & (taken_d < debug_size)),
        ]
        took_l = acc.o_logits.valid & acc.o_logits.ready
        took_d = acc.o_debug.valid & acc.o_debug.ready
        lane = Const(1, W)
        m.d.comb += [
            lg_wr.addr.eq(lg_addr[lane_bits:]), lg_wr.data.eq(acc.o_logits.payload.as_unsigned()
                                                              .replicate(W)),
            lg_wr.en.eq(Cat(took_l).replicate(W) & (lane << lg_addr[:lane_bits])),
            dbg_wr.addr.eq(dbg_addr[lane_bits:]), dbg_wr.data.eq(acc.o_debug.payload
                                                                 .replicate(W)),
            dbg_wr.en.eq(Cat(took_d).replicate(W) & (lane << dbg_addr[:lane_bits])),
            cyc_wr.addr.eq(self.image), cyc_wr.data.eq(acc.cycles),
            cyc_wr.en.eq(took_l & (taken_l == self.output_size - 1)),
        ]

        with m.If(took_in):
            m.d.sync += sent.eq(sent + 1)
            with m.If(sent != cfg.repeat_beat):
                m.d.sync += src_addr.eq(src_addr + 1)
        with m.If(took_l):
            m.d.sync += [lg_addr.eq(lg_addr + 1), taken_l.eq(taken_l + 1)]
        with m.If(took_d):
            m.d.sync += taken_d.eq(taken_d + 1)
            with m.If(taken_d != cfg.drop_beat):
                m.d.sync += dbg_addr.eq(dbg_addr + 1)

        image_done = ((sent == self.image_size) & (taken_l == self.output_size)
                      & (taken_d == debug_size))
        def reseed(image):
            # the generators' state for image number `image` of the stream: never 0
            spread = (image * 0x9E3779B1)[:32]
            return [rng_v.eq(((cfg.seed ^ 0x2545F491) + spread)[:32] | 1),
                    rng_r.eq(((cfg.seed ^ 0x6A09E667) + spread)[:32] | 1)]

        loaded = self._weights(m, acc, rng_v, cfg.gap_threshold)
        with m.If(~busy):
            with m.If((cfg.request != self.served) & loaded):
                m.d.sync += [
                    busy.eq(1), self.stalled.eq(0), self.stalled_input.eq(0),
                    self.image.eq(0), idle.eq(0), src_addr.eq(0), lg_addr.eq(0),
                    dbg_addr.eq(0), sent.eq(0), taken_l.eq(0), taken_d.eq(0),
                    *reseed(cfg.first_image),
                ]
        with m.Elif(image_done):
            # (a repeated source byte or a dropped sink byte left its address one behind)
            m.d.sync += [sent.eq(0), taken_l.eq(0), taken_d.eq(0), idle.eq(0),
                         self.image.eq(self.image + 1),
                         *reseed(cfg.first_image + self.image + 1),
                         src_addr.eq(src_addr + (cfg.repeat_beat < self.image_size)),
                         dbg_addr.eq(dbg_addr + (cfg.drop_beat < debug_size))]
            with m.If(self.image + 1 == cfg.count):
                m.d.sync += [busy.eq(0), self.served.eq(cfg.request)]
        with m.Elif(took_in | took_l | took_d):
            m.d.sync += idle.eq(0)
        with m.Elif(idle >= cfg.timeout):
            m.d.sync += [busy.eq(0), self.served.eq(cfg.request), self.stalled.eq(1),
                         self.stalled_input.eq(sent < self.image_size)]
        with m.Else():
            m.d.sync += idle.eq(idle + 1)
        return m


    def _weights(self, m, acc, rng, gap_threshold):
        """SPRAM weights (``config.spram_weights``): the weight image from a ROM of the harness
        into ``i_weights`` after reset, with the source's gaps. Returns what a run waits for
        (the accelerator's ``weights_loaded``; constant 1 without SPRAM weights)."""
        if not self.program.config.spram_weights:
            return Const(1)
        image = weight_image(self.program)
        m.submodules.weights_rom = rom = memory.Memory(shape=8, depth=len(image),
                                                       init=list(image))
        rd = rom.read_port(domain="comb")
        sent = Signal(range(len(image) + 1))
        m.d.comb += [rd.addr.eq(sent), acc.i_weights.payload.eq(rd.data),
                     acc.i_weights.valid.eq((sent < len(image))
                                            & (rng[32 - RANDOM_BITS:] >= gap_threshold))]
        with m.If(acc.i_weights.valid & acc.i_weights.ready):
            m.d.sync += sent.eq(sent + 1)
        return acc.weights_loaded


def clock_wrapper(harness, reset=True):
    """Verilog text of :data:`WRAPPER`: the clock, a reset for the first two cycles, a register
    for every input of ``harness`` (the bench writes them) and a wire for every output, around
    the :data:`HARNESS` module.

    The clock rises every :data:`CLOCK_NS` and falls again in the same time step (``#0``: the
    inactive region, after the flip-flops have sampled their inputs and before the
    non-blocking updates), so a cycle is one time step of the simulator's loop instead of two.
    Nothing in an Amaranth design looks at the falling edge. Measured on the digits 4x4 harness
    on a loaded machine: 1.28 M idle cycles per CPU second against 0.99 M for ``always #5 clk =
    ~clk``.
    """
    decls, conns = [], []
    for path, member, value in harness.signature.flatten(harness):
        name = "__".join(str(p) for p in path)
        width = f"[{len(value) - 1}:0] " if len(value) > 1 else ""
        kind = "reg" if member.flow == In else "wire"
        decls.append(f"  {kind} {width}{name}"
                     + (f" = {len(value)}'d{value.init};" if kind == "reg" else ";"))
        conns.append(f"    .{name}({name})")
    return "\n".join([
        "// generated by cnnforge.sim.harness: the clock and the bench's registers",
        f"module {WRAPPER};",
        "  reg clk = 1'b0;",
        *(["  reg rst = 1'b1;"] if reset else ["  wire rst = 1'b0;"]),
        f"  always begin #{CLOCK_NS} clk = 1'b1; #0 clk = 1'b0; end",
        *([f"  initial #{2 * CLOCK_NS + CLOCK_NS // 2} rst = 1'b0;"] if reset else []),
        *decls,
        f"  {HARNESS} harness (",
        "    .clk(clk),",
        "    .rst(rst),",
        ",\n".join(conns),
        "  );",
        "endmodule",
        "",
    ])


def public_config(harness):
    """Verilator configuration (``.vlt``): the wrapper's registers and wires that the bench reads
    and writes and the harness's memories are visible to it; nothing else
    (``--no-public-flat-rw``), so Verilator keeps its freedom to optimize the design. The clock
    and the reset stay private: a variable the bench may write makes Verilator re-evaluate all
    logic downstream of it at every step, and the reset reaches every flip-flop."""
    ports = ["__".join(str(p) for p in path) for path, _, _ in harness.signature.flatten(harness)]
    return "\n".join([
        "`verilator_config",
        *(f'public_flat_rw -module "{WRAPPER}" -var "{name}"' for name in ports),
        *(f'public_flat_rw -module "{HARNESS}" -var "{name}"'
          for name in ("image_mem", "logits_mem", "debug_mem", "cycles_mem")),
        "",
    ])
