"""The pipeline: recipes (YAML validated at the edge), their stages run in order, and sweeps.

Owns: `recipe` (the pydantic schema and path resolution), `context` (what flows between stages),
`stages` (one adapter per stage, from a recipe section to that stage's job), `run` (the stages a
recipe names, in order), and `sweep` (the accuracy-compression front: compress, fine-tune and
evaluate per method and target).
May import: every library package. Never cli.
"""
