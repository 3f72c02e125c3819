"""Measurement scripts: the runs behind the figures in docs/results.md, each runnable as
`python -m toygpt_cli.measure.NAME` (see docs/results.md for what each measures)."""
