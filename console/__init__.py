"""The mlref web console: one Gradio page with a tab per app, a client of the apps' HTTP services.

``make ui`` (``python -m console``) starts each app's service on a free loopback port with its champion (or the
demo's model, with a banner saying so) and the console on http://127.0.0.1:7860. The console never loads a model
itself: every answer it shows is the service's answer, with the same API key (``MLREF_API_KEY``, header
``X-API-Key``) and the same limits. Modules: :mod:`console.client` (HTTP, readable errors),
:mod:`console.launcher` (starting and stopping the services), :mod:`console.ui` (the page), ``console/tabs/``
(one module per tab).
"""

import os

# offline: no telemetry or version checks (set before gradio is imported)
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
