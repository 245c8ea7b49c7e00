"""The layer sequencer (descriptor ROM, layer state machine, image in, logits and debug dump out)
and the per-layer performance counters."""

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from cnnforge.hw.models.timing import read_port_latency
from cnnforge.hw.rtl.common import COUNTERS, Events

__all__ = ["PerfCounters", "Sequencer"]


class PerfCounters(wiring.Component):
    """The :data:`~cnnforge.hw.rtl.common.COUNTERS` of the running layer, 32 bits each.

    ``cycles`` counts the layer's cycles from its start (1 in the start cycle); the others add the
    units' per-cycle ``events`` one cycle late (the sum of a cycle's increments is registered;
    the counters are read only once the layer has ended, and the last increment lands in the
    cycle the sequencer leaves its run state).

    Parameters
    ----------
    events : dict
        ``{counter: largest increment in one cycle}``, summed over the units.

    Members
    -------
    clear, start, running : In(1)
        Clear every counter; the layer's first cycle; the layer's later cycles.
    events : In
        The increments of this cycle.
    counters : Out(32).array(len(COUNTERS))
    """

    def __init__(self, events):
        self._events = events
        super().__init__({
            "clear": In(1), "start": In(1), "running": In(1),
            "events": In(Events.layout(events)),
            "counters": Out(32).array(len(COUNTERS)),
        })

    def elaborate(self, platform):
        m = Module()
        value = dict(zip(COUNTERS, self.counters))
        for name in COUNTERS[1:]:
            if name in self._events:
                inc_q = Signal.like(self.events[name], name=f"inc_{name}_q")
                m.d.sync += [inc_q.eq(Mux(self.start, 0, self.events[name])),
                             value[name].eq(value[name] + inc_q)]
        with m.If(self.start):
            m.d.sync += value["cycles"].eq(1)
        with m.Elif(self.running):
            m.d.sync += value["cycles"].eq(value["cycles"] + 1)
        with m.If(self.clear):
            m.d.sync += [c.eq(0) for c in self.counters]
        return m


class Sequencer(wiring.Component):
    """Runs the layers one after another from the layer-descriptor ROM.

    States: ``LOAD_IMAGE`` (the image's beats into the feature map), ``FETCH`` (read the layer's
    descriptor), ``START`` (clear the counters), ``KICK`` (``run``: the units start), ``RUN``
    (until the units are idle; the post-processor writes the feature map), ``DUMP_HEADER`` and
    ``DUMP`` (with ``debug``: the counters, 4 bytes each little endian, then the layer's output
    map), ``NEXT``, ``OUTPUT`` (the last layer's outputs on ``o_logits``).

    Parameters
    ----------
    program : Program
        Descriptor values, image and output sizes, feature-map depth.
    desc : StructLayout
        The descriptor layout (:meth:`cnnforge.hw.rtl.accelerator.Accelerator.descriptor_layout`).
    fm_addr_width : int

    Members
    -------
    i_image, o_logits, o_debug, debug, cycles
        As :class:`~cnnforge.hw.rtl.accelerator.Accelerator`'s.
    desc : Out(desc)
        The running layer's descriptor (the ROM's read port holds it while the layer runs).
    run : Out(1)
        Pulse: the layer starts (descriptor valid).
    busy : In(1)
        Some unit is still working on the layer (registered here: the sequencer leaves ``RUN``
        one cycle after the layer is idle).
    fm_wr_* : Out
        The feature map's write port: the image, then the post-processor's writes (``ppu_wr_*``).
    fm_rd_en, fm_rd_addr, fm_rd_data
        The feature map's read port A while the sequencer streams outputs out.
    counters : In(32).array(len(COUNTERS))
    clear_counters, start, running : Out(1)
        :class:`PerfCounters` control.
    idle : Out(1)
        No image in flight: waiting for an image's first beat (SPRAM weights load then).
    """

    def __init__(self, program, desc, fm_addr_width):
        self._program = program
        self._desc = desc
        super().__init__({
            "i_image": In(stream.Signature(signed(8))),
            "o_logits": Out(stream.Signature(signed(8))),
            "o_debug": Out(stream.Signature(8)),
            "debug": In(1), "cycles": Out(32),
            "desc": Out(desc), "run": Out(1), "busy": In(1),
            "fm_wr_addr": Out(fm_addr_width), "fm_wr_data": Out(signed(8)), "fm_wr_en": Out(1),
            "ppu_wr_addr": In(fm_addr_width), "ppu_wr_data": In(signed(8)), "ppu_wr_en": In(1),
            "fm_rd_en": Out(1), "fm_rd_addr": Out(fm_addr_width), "fm_rd_data": In(signed(8)),
            "counters": In(32).array(len(COUNTERS)),
            "clear_counters": Out(1), "start": Out(1), "running": Out(1), "idle": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        prog = self._program
        nlayers = len(prog.layers)
        fields = [name for name, _ in self._desc]
        m.submodules.descriptors = rom = memory.Memory(
            shape=self._desc, depth=nlayers,
            init=[{k: layer.values[k] for k in fields} for layer in prog.layers])
        # the port reads only in FETCH and holds its data while the layer runs
        port = rom.read_port()
        m.d.comb += [port.en.eq(0), self.desc.eq(port.data)]
        # a field with one value in every layer is that constant, so the units' logic for the
        # values it never takes (a layout, a dataflow, a lane the network does not use) folds
        # away in synthesis (the ROM's bits cannot: a block RAM's data are not constants)
        for name in fields:
            values = {layer.values[name] for layer in prog.layers}
            if len(values) == 1:
                m.d.comb += self.desc[name].eq(values.pop())
        d = self.desc

        layer = Signal(range(max(2, nlayers)))
        total_cycles = Signal(32)
        img_count = Signal(range(max(2, prog.image_size + 1)))
        out = _Readout(m, self, prog.fm_depth, len(self.fm_rd_addr),
                       read_port_latency(prog.config.banked_fm))
        m.d.comb += self.cycles.eq(total_cycles)
        header = Signal(32 * len(COUNTERS))
        hdr = Signal(range(4 * len(COUNTERS)))
        m.d.comb += header.eq(Cat(*self.counters))
        layer_idle = Signal()
        m.d.sync += layer_idle.eq(~self.busy)
        # the feature map's write port: the image's beats in LOAD_IMAGE, the post-processor's
        # writes in RUN, selected by registered state flags (not decodes of the FSM's state:
        # the SPRAM slots' address multiplexer is behind this one, timing)
        loading_image, in_run = Signal(init=1), Signal()
        m.d.comb += [self.fm_wr_addr.eq(Mux(in_run, self.ppu_wr_addr, img_count)),
                     self.fm_wr_data.eq(Mux(in_run, self.ppu_wr_data, self.i_image.payload)),
                     self.fm_wr_en.eq(Mux(in_run, self.ppu_wr_en,
                                          loading_image & self.i_image.valid))]

        with m.FSM(name="sequencer"):
            with m.State("LOAD_IMAGE"):
                m.d.comb += [self.idle.eq(img_count == 0), self.i_image.ready.eq(1)]
                with m.If(self.i_image.valid):
                    m.d.sync += img_count.eq(img_count + 1)
                    with m.If(img_count == prog.image_size - 1):
                        m.d.sync += [img_count.eq(0), layer.eq(0), total_cycles.eq(0),
                                     loading_image.eq(0)]
                        m.next = "FETCH"
            with m.State("FETCH"):
                m.d.comb += [port.addr.eq(layer), port.en.eq(1)]
                m.d.sync += total_cycles.eq(total_cycles + 1)
                m.next = "START"
            with m.State("START"):
                m.d.comb += self.clear_counters.eq(1)
                m.d.sync += total_cycles.eq(total_cycles + 1)
                m.next = "KICK"
            with m.State("KICK"):
                # cleared here: the units only start in RUN's first cycle
                m.d.comb += [self.run.eq(1), self.start.eq(1)]
                m.d.sync += [total_cycles.eq(total_cycles + 1), layer_idle.eq(0), in_run.eq(1)]
                m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += self.running.eq(1)
                m.d.sync += total_cycles.eq(total_cycles + 1)
                with m.If(layer_idle):
                    out.begin(d.dst, d.out_size, logits=False)
                    m.d.sync += [hdr.eq(0), in_run.eq(0)]
                    m.next = "NEXT"
                    with m.If(self.debug):
                        m.next = "DUMP_HEADER"
            with m.State("DUMP_HEADER"):
                with m.If(out.valid):
                    with m.If(out.ready):
                        m.d.sync += [out.valid.eq(0), hdr.eq(hdr + 1)]
                        with m.If(hdr == 4 * len(COUNTERS) - 1):
                            m.next = "DUMP"
                with m.Else():
                    m.d.sync += [out.valid.eq(1), out.data.eq(header.word_select(hdr, 8))]
            with m.State("DUMP"):
                out.stream(m, "NEXT")
            with m.State("NEXT"):
                m.d.sync += total_cycles.eq(total_cycles + 1)
                with m.If(layer == nlayers - 1):
                    out.begin(d.dst, prog.output_size, logits=True)
                    m.next = "OUTPUT"
                with m.Else():
                    m.d.sync += layer.eq(layer + 1)
                    m.next = "FETCH"
            with m.State("OUTPUT"):
                out.stream(m, "LOAD_IMAGE", loading_image.eq(1))
        return m


class _Readout:
    """The sequencer's output side: ``total`` bytes of the feature map from ``base`` onto
    ``o_logits`` or ``o_debug`` (a read, then the byte held until the consumer takes it)."""

    def __init__(self, m, seq, fm_depth, fm_aw, latency=1):
        self._m, self._seq = m, seq
        self._latency = latency
        self.idx = Signal(range(fm_depth + 1))
        self.total = Signal(range(fm_depth + 1))
        # base + idx, counted with idx (the read address a register, timing)
        self.addr = Signal(fm_aw + 1)
        m.d.comb += seq.fm_rd_addr.eq(self.addr)
        # wait: the read's cycles, one bit each (the feature map's port latency)
        self.valid, self.data, self.wait = Signal(), Signal(8), Signal(latency)
        self.to_logits = Signal()
        # idx == total - 1, registered: a byte is taken two or more cycles after idx changed
        # (the read, then the byte offered)
        self.last = Signal()
        m.d.sync += self.last.eq(self.idx == self.total - 1)
        m.d.comb += [seq.o_logits.payload.eq(self.data), seq.o_debug.payload.eq(self.data),
                     seq.o_logits.valid.eq(self.valid & self.to_logits),
                     seq.o_debug.valid.eq(self.valid & ~self.to_logits)]
        self.ready = Mux(self.to_logits, seq.o_logits.ready, seq.o_debug.ready)

    def begin(self, base, total, *, logits):
        self._m.d.sync += [self.addr.eq(base), self.total.eq(total), self.idx.eq(0),
                           self.to_logits.eq(int(logits))]

    def stream(self, m, next_state, *at_end):
        """Read ``total`` bytes from the feature map at ``base`` and send them; then go to
        ``next_state`` with the statements ``at_end`` (sync)."""
        with m.If(self.valid):
            with m.If(self.ready):
                m.d.sync += [self.valid.eq(0), self.idx.eq(self.idx + 1),
                             self.addr.eq(self.addr + 1)]
                with m.If(self.last):
                    m.d.sync += list(at_end)
                    m.next = next_state
        with m.Elif(self.wait[-1]):
            m.d.sync += [self.valid.eq(1), self.data.eq(self._seq.fm_rd_data), self.wait.eq(0)]
        if self._latency > 1:
            with m.Elif(self.wait.any()):
                m.d.sync += self.wait.eq(self.wait << 1)
        with m.Else():
            m.d.comb += self._seq.fm_rd_en.eq(1)
            m.d.sync += self.wait.eq(1)
