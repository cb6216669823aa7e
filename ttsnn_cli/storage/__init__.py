"""Loading and storage: bundles, the trust boundary, guarded reads, and the output rules.

Owns: the bundle format (`bundle`), reading checkpoints and bundles without running code
(`read`, `guard`, `schema`), which architectures may be imported (`trust`), `load_model` and
`load_checkpoint` (`load`), and every file ttsnn writes (`outputs`: checked first, published
atomically, never over an input).
May import: `errors`, `host`, `maths`, `spiking`, `layers`, `kinds`, `zoo`. Never data, compress, training or above.
"""
