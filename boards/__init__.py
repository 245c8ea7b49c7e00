"""Board tops, the UART host link and the FPGA flow: ``icebreaker``, ``ulx3s`` (board files),
``top`` (the core every board runs), ``hostlink``/``uart``/``protocol`` (the link), ``pll``,
``build`` (bitstreams, flashing), ``runtime`` (host side), ``commands`` (``cnnforge synth``,
``build``, ``flash``, ``infer``). See ``docs/boards.md``."""
