"""Compression: choose layers and ranks, decompose them with TT-SVD, swap the TT layers in place.

Owns: `decompose` (`compress_model`, the library's stage function), `sensitivity` (measured,
data-driven ranks), `costs` (what a global budget counts: weights, MACs per timestep, measured step
time; and the ratios compress reports), and `job` (the compress job end to end: load, decompose, write a bundle; shared
by `ttsnn compress` and the recipe stage).
May import: everything below it (maths, spiking, layers, kinds, zoo, storage, data). Never train,
report, export, pipeline or cli.
"""
