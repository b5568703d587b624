"""Fluxify: bond several internet uplinks of one Linux machine into one faster, sturdier link."""

__version__ = "0.1.0"
