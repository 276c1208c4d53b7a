"""A local page for the paper's data-quality review: rate a random sample of instructions by hand.

`sample` draws the items, `ratings` keeps every answer (append-only, fsynced) and sums them
up, `agreement` compares them with a judge's scores, `server` serves the page (static/) and
its small JSON API on loopback.
"""
