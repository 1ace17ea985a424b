"""Parse messages with a trained Rasa model: JSON lines in (``{"text": ...}``), JSON lines out.

Runs in .venv-chatbot: ``python scripts/parse.py MODEL.tar.gz < in.jsonl``. The model is loaded once; one output line
per input line, flushed, so a caller can keep the process open and stream (``apps/chatbot/nlu.py``). The first line
written is ``{"ready": true, "load_s": ...}`` once the model is loaded.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time


async def main(model_path: str) -> None:
    # results go to the original stdout only; anything Rasa or TensorFlow prints goes to stderr
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def emit(obj: dict) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    from rasa.core.agent import Agent

    t0 = time.perf_counter()
    agent = Agent.load(model_path)
    emit({"ready": True, "load_s": time.perf_counter() - t0})
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            text = str(json.loads(line)["text"])
        except (ValueError, KeyError, TypeError):
            emit({"error": "expected a JSON object with a 'text' field"})
            continue
        t = time.perf_counter()
        result = await agent.parse_message(text)
        intent = result.get("intent") or {}
        ranking = result.get("intent_ranking") or []
        top = ranking[0] if ranking else intent
        selector = (result.get("response_selector") or {}).get("default", {}).get("response", {})
        emit(
            {
                "text": text,
                "intent": intent.get("name"),
                "confidence": float(intent.get("confidence") or 0.0),
                "top_intent": top.get("name"),
                "top_confidence": float(top.get("confidence") or 0.0),
                "entities": [{"entity": e.get("entity"), "value": e.get("value")} for e in result.get("entities", [])],
                "retrieval_intent": selector.get("intent_response_key"),
                # the intent classifier's out-of-scope verdict (score, threshold, rejected, closed-set top intent)
                "out_of_scope": result.get("out_of_scope") or {},
                "parse_ms": (time.perf_counter() - t) * 1e3,
            }
        )


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main(sys.argv[1]))
