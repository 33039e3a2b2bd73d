"""pubmedqa-peft: parameter-efficient fine-tuning of small language models on PubMedQA yes/no questions."""

import os

# CPU runtime settings, read once when torch loads, so they are set here: every stage
# imports this package before torch. A value already in the environment wins. Measured
# on 2 cores (README "Performance"); neither changes any result.
# - Idle OpenMP threads sleep instead of spinning. On a laptop that also runs other
#   programs, spinning threads take the cores the working ones need: on 2 busy cores
#   a batch-1 request took 3x longer with the default policy.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# - PyTorch's CPU allocator backs tensors of 2 MB and more with transparent huge pages
#   (Linux; ignored elsewhere). Activations are tens of MB and mapped afresh every
#   forward; with 4 KB pages, page faults took 10-15% of a batch-16 scoring pass's CPU
#   time, and huge pages cut them five-fold.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

__version__ = "0.1.0"
