"""toygpt: train a small character-level GPT on Tiny Shakespeare or any text file.

The package is two layers. The core library (config, data, model, train, sample,
evaluate, runs, checkpoint, ...) is plain Python + PyTorch and can be used from a
notebook. `toygpt_cli.cli` is the Typer/rich command line on top of it.
"""

__version__ = "0.1.0"
