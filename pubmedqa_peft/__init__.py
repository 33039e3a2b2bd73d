"""pubmedqa-peft: parameter-efficient fine-tuning of language models on PubMedQA (yes/no or yes/no/maybe)."""

__version__ = "0.1.0"
