"""One module per CLI verb; each exposes ``register(subparsers)``.

A verb's parser sets ``run`` with ``set_defaults(run=...)``: a function that
takes the parsed arguments and returns the exit code. :mod:`agent.cli` lists
the modules it registers.
"""
