"""Spiking time: neurons, their state, how a model is driven over T timesteps, the compiled neuron.

Owns: explicit state (`state`: reset, time folding, `TimeAware`), the fused LIF and its C kernel
(`neurons`, `lif_kernel`), the execution styles that run any supported model over T (`runner`),
what autograd keeps of binary spikes (`saved`), and what a run over T will cost, checked before it
runs (`budget`).
May import: `errors`, `host`, `maths`. Never layers, kinds, storage or anything above.
"""
