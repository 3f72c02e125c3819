"""What you look at in a browser: the run report (report.py) and attention maps
(attention.py)."""
