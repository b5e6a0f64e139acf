"""``lt-ray ui``: the web page (Gradio) with the Train, Inference, Compare and Studies tabs.

The top layer, beside the CLI: it parses what the page sends and calls the library (runs go
through ``lt-ray train`` as Ray tasks, predictions through :mod:`lt_ray.predict`, the
comparison through :mod:`lt_ray.retrain`, studies through :mod:`lt_ray.analysis` and Ray jobs).
Needs the ``ui`` extra: ``pip install -e '.[ui]'``.
"""
