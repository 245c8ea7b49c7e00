"""Properties the formal harnesses share: the stream handshake rules and beat counting.

A stream (``amaranth.lib.stream``) transfers a beat in a cycle where ``valid & ready``. Its
producer promises (Amaranth's ``docs/stdlib/stream.rst``, "Data transfer rules", rule 2; the same
as AXI4-Stream's TVALID rule, ARM IHI 0051A §2.2.1): once ``valid`` is high it stays high, with
the same ``payload``, until the beat is transferred. :func:`hold_until_ready` states that
promise, as an ``Assert`` on a component's output stream or as an ``Assume`` on its input
stream.
"""

from amaranth.hdl import Assert, Signal, Value

__all__ = ["count_beats", "hold_until_ready", "location"]


def hold_until_ready(m, stream, check=Assert, name="s"):
    """After a cycle with ``valid & ~ready``, ``valid`` is still high and ``payload`` unchanged.

    ``check`` is ``amaranth.hdl.Assert`` (the harness checks the producer) or
    ``amaranth.hdl.Assume`` (the environment is such a producer). Returns the two
    statements (their ``src_loc`` names them in a :class:`~cnnforge.sim.formal.FormalResult`).
    """
    payload = Value.cast(stream.payload).as_unsigned()      # bits, not a signed number
    stalled = Signal(name=f"{name}_stalled")
    held = Signal(len(payload), name=f"{name}_held")
    m.d.sync += [stalled.eq(stream.valid & ~stream.ready), held.eq(payload)]
    valid_held = check(~stalled | stream.valid, src_loc_at=0)
    payload_held = check(~stalled | (payload == held), src_loc_at=0)
    m.d.comb += [valid_held, payload_held]
    return valid_held, payload_held


def count_beats(m, stream, width, name="beats"):
    """A register counting ``stream``'s transfers (modulo ``2**width``), incremented in the cycle
    after each transfer."""
    count = Signal(width, name=name)
    with m.If(stream.valid & stream.ready):
        m.d.sync += count.eq(count + 1)
    return count


def location(statement):
    """``"file:line"`` of an ``Assert`` / ``Assume`` / ``Cover``, as SymbiYosys reports it."""
    filename, line = statement.src_loc
    return f"{filename}:{line}"
