"""Evaluation: SuperNI zero-shot ROUGE-L / exact match, and the 252 user-oriented instructions."""
