"""pubmedqa-peft: parameter-efficient fine-tuning of small language models on PubMedQA yes/no questions."""

__version__ = "0.1.0"
