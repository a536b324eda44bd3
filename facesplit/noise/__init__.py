"""Noise profiles: fitting, the file format, the sampler, and which shipped profile is the product's default."""

# The profile the edge agent, `frosted demo` and the benches run when told none: its evidence is docs/privacy.md.
DEFAULT_PROFILE = "inception3-rank16-alpha-0.4"
