"""``lt-ray ui``: the web page (Gradio) with the Train, Inference, Compare and Studies tabs.

The top layer, beside the CLI: it parses what the page sends and calls the library (runs go
through ``lt-ray train`` as Ray tasks, predictions through :mod:`lt_ray.predict`, the
comparison through :mod:`lt_ray.retrain`, studies through :mod:`lt_ray.analysis` and Ray jobs).
Needs the ``ui`` extra: ``pip install -e '.[ui]'``.
"""

from __future__ import annotations

import os

# Gradio's usage analytics off before any module of the page imports gradio (Blocks are also
# built with analytics_enabled=False); Hugging Face Hub telemetry off too.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
