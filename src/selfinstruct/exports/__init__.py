"""A run's fine-tuning data in the formats other tools load.

    formats.py          the record shapes: Alpaca JSON, ShareGPT, OpenAI messages (stage 4 writes all three)
    llamafactory.py     dataset_info.json: LLaMA-Factory's index of those three files
    openai_finetune.py  `export openai`: only the examples OpenAI's fine-tuning API accepts
    hf_dataset.py       `export hf`: a Hugging Face dataset folder (parquet + dataset_card.py's card)
    run_source.py       the Alpaca triples an export reads from a run directory

pyarrow (for parquet) is imported only by `export hf`.
"""

from __future__ import annotations

from selfinstruct.exports.formats import (
    alpaca_record,
    openai_record,
    sharegpt_record,
    user_turn,
    write_exports,
)
from selfinstruct.exports.openai_finetune import (
    OPENAI_MIN_EXAMPLES,
    ROLES,
    openai_record_problem,
    write_openai_finetuning_file,
)

__all__ = [
    "OPENAI_MIN_EXAMPLES",
    "ROLES",
    "alpaca_record",
    "openai_record",
    "openai_record_problem",
    "sharegpt_record",
    "user_turn",
    "write_exports",
    "write_openai_finetuning_file",
]
