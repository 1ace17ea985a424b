"""``rasa ARGS --auth-token $MLREF_RASA_TOKEN`` without the token on the command line (where every local user can
read it in the process list): runs Rasa's own entry point in this process with the token added to ``sys.argv``.

Runs in .venv-chatbot: ``python scripts/rasa_run.py run --enable-api ...`` (what ``apps/chatbot/rasa_env.py``
starts).
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    token = os.environ.get("MLREF_RASA_TOKEN", "")
    if not token:
        sys.exit("error: MLREF_RASA_TOKEN is not set")
    from rasa.__main__ import main

    sys.argv = ["rasa", *sys.argv[1:], f"--auth-token={token}"]
    main()
