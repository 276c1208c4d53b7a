"""Seeing the data: an offline analysis report of a run and a local page for rating samples by hand.

`run_reader` reads any run directory (this project's or the reference code's) into plain
records; `stats`, `diversity` and `overlap` compute the paper's Table 1, verb-noun structure
and seed overlap from them, `score_stats` sums up a scored run's score files (the paper's
Table 2 as a judge estimates it); `plots` draws the figures and `report` assembles one
self-contained HTML page. `review/` serves the paper's quality-review questions on loopback.
Heavy libraries (spaCy, matplotlib) are imported inside the functions that need them.
"""
