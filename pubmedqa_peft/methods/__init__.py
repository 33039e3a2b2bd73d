"""Training methods: declared once in :mod:`~pubmedqa_peft.methods.registry`, built by its modules."""
