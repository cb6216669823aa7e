"""Training: surrogate-gradient BPTT over T, for dense training and TT fine-tuning alike.

Owns: the engine (`engine`: fit, evaluate, resume state, metrics), its batches (`batches`: splits kept
on the device and batches made there, or a DataLoader), distillation (`distill`), the
training-memory levers (`memory`, `layout`, `allocator`), the per-epoch `--log-dir` files (`logs`:
CSV and TensorBoard events), the CPU thread count (`threads`: `--threads`, used by every command), and
`job` (the train / finetune job end to end, shared by the CLI and the recipe stages).
May import: everything below it (maths to compress). Never report, export, pipeline or cli.
"""
