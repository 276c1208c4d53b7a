"""Which rows are good: score each kept triple, then select by the scores.

    ifd.py      `score --method ifd`: instruction-following difficulty from a GGUF scorer's
                prompt log-probabilities (the embedded model by default)
    judge.py    `score --method judge`: any configured backend rates each row on the paper's
                three quality questions and an overall 1-5 score
    select.py   `select`: the top P% or the rows above a score, optionally kept diverse by
                ROUGE-L, written as a fine-tuning set in every format `prepare` writes
    selection_folder.py  the folder `select` writes, laid out like a run

The score files' format is selfinstruct/scores.py (the report reads it too).
"""
