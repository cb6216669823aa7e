"""TT layers: the trainable nn.Modules that replace a dense layer, one module per layer type.

Owns: `conv2d` (TTConv2d, STT/PTT/HTT), `conv1d` (TTConv1d), `linear` (the TT-matrix TTLinear), the
training fast paths that sit on them (`lowrank_bn`: BatchNorm through the rank bottleneck,
`running_stats`, `hooks`: when a fast path must step aside).
May import: `errors`, `maths`, `spiking`. Never kinds, storage, training or anything above.
"""
