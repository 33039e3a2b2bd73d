"""Using trained models: the :class:`~pubmedqa_peft.serving.predictor.Predictor` and what serves it.

``predictor`` answers questions with any trained methods on one base model; ``cli`` is
``python -m pubmedqa_peft.predict``; the HTTP server and the demo page build on the
same Predictor, and so does the serverless ``handler.py`` at the project root.
"""
