"""Seed tasks: the project's own 175 (package data, seed_tasks.jsonl) or any file in the paper's schema.

The loader and its validation live in loader.py; the names are re-exported here.
"""

from selfinstruct.seeds.loader import PACKAGED, load_seed_tasks, packaged_seed_path

__all__ = ["PACKAGED", "load_seed_tasks", "packaged_seed_path"]
