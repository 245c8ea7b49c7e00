"""Board tops, the UART host link and the FPGA flow: ``icebreaker``, ``ulx3s`` (board files),
``top`` (the core every board runs), ``hostlink``/``uart``/``protocol`` (the link), ``pll``,
``bitstream`` (one board's build), ``build`` (boards by name, bitstreams, flashing), ``synth``
(synthesis reports), ``runtime`` (host side); the ``cnnforge synth``, ``build``, ``flash`` and
``infer`` commands are in :mod:`cnnforge.hw.tools.board_commands`. See ``docs/boards.md``."""
