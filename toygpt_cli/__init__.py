"""toygpt: train a small character-level GPT on Tiny Shakespeare or any text file.

Read the GPT first, at the top of the package:

    model.py      the network, in the order it computes
    train.py      the training step and loop (Trainer), state_dict / load_state_dict
    optim.py      parameter groups, the learning-rate schedule;  muon.py  Muon
    sample.py     generation: the key/value cache, temperature, top-k, top-p, min-p
    evaluate.py   the loss over windows of a split
    data.py       characters as ids, the train/val split, batches
    config.py     every option, declared once (declare.py: how)

then the rooms: runs/ (run folders, checkpoints, start and resume), corpus/ (text files
into ids, download, the token cache), parallel/ (several processes), storage/ (safe files,
locks), recipes/ (presets, bench), cli/ (the command line, the only user of Typer and
rich), measure/ (the scripts behind docs/results.md). docs/architecture.md has the map.
"""

__version__ = "0.1.0"
