"""RTL: the accelerator's Amaranth components."""
