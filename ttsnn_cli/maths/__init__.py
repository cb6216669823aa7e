"""TT maths and rank choice: tensors in, tensors (or rank tuples) out; no modules, no data.

Owns: TT-SVD of conv kernels and matrices, reconstruction, the PTT cross fit, parameter counts
(`tt`), and every rank method resolved in one place before any decomposition (`ranks` for a conv
kernel, `layer_ranks` for the other shapes). Tested alone against tensorly and by hand.
May import: `errors` and third-party packages only (never layers, training or anything above).
"""
