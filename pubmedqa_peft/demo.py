"""``python -m pubmedqa_peft.demo``: the demo page (see :mod:`pubmedqa_peft.serving.demo`)."""

from pubmedqa_peft.serving.demo import main

if __name__ == "__main__":
    main()
