"""``python -m pubmedqa_peft.predict``: answer questions with a trained method.

The command lives in :mod:`pubmedqa_peft.serving.cli`; this module is its ``-m`` entry point.
"""

from pubmedqa_peft.serving.cli import main

if __name__ == "__main__":
    main()
