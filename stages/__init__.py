"""Thin entry points of the DVC stages; run each as ``python -m stages.<name>`` from the project root."""
