"""Compiler: tiling, feature-map allocation, ROM images, layer descriptors, the device registry."""
