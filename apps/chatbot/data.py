"""Intent data for the chatbot: labelled-message CSVs (``text,intent``) <-> Rasa NLU YAML, and the project's data.

A user adapts the assistant by editing the Rasa YAML under ``apps/chatbot/project/data`` (or passing another
project data folder); ``nlu-bench`` and ``retrain`` take plain CSVs of labelled messages, the format of public intent
benchmarks (Banking77 ships ``text,category``: ``--intent-column category``).
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import yaml

from apps.chatbot.config import PROJECT
from common.data import DataError

MAX_TEXT_CHARS = 1000
INTENT_NAME = re.compile(r"^[A-Za-z0-9_\-./]+$")


def read_labelled(
    path: str | Path, *, text_column: str = "text", intent_column: str = "intent", rename_intents: bool = False
) -> pd.DataFrame:
    """A CSV of labelled messages -> DataFrame ``text, intent`` (stripped, one line each).

    Raises :class:`DataError` naming the file and the problem: missing file or column, empty text, an intent name
    Rasa cannot use, a text over ``MAX_TEXT_CHARS``. With ``rename_intents`` (benchmarks on public datasets,
    e.g. Banking77's ``reverted_card_payment?``), characters Rasa cannot use become ``_`` instead, unless two
    names would then collide.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path}: not a readable CSV ({exc})") from None
    missing = [c for c in (text_column, intent_column) if c not in df.columns]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {missing}; found {list(df.columns)} "
            "(choose them with --text-column/--intent-column)"
        )
    out = pd.DataFrame(
        {
            "text": df[text_column].str.replace(r"\s+", " ", regex=True).str.strip(),
            "intent": df[intent_column].str.strip(),
        }
    )
    if out.empty:
        raise DataError(f"{path}: no rows")
    for col in ("text", "intent"):
        bad = out.index[out[col] == ""]
        if len(bad):
            raise DataError(f"{path}: row {int(bad[0]) + 2}: empty {col!r}")
    long = out.index[out["text"].str.len() > MAX_TEXT_CHARS]
    if len(long):
        raise DataError(f"{path}: row {int(long[0]) + 2}: text longer than {MAX_TEXT_CHARS} characters")
    bad_names = sorted({i for i in out["intent"] if not INTENT_NAME.match(i)})
    if bad_names and rename_intents:
        safe = {name: re.sub(r"[^A-Za-z0-9_\-./]", "_", name) for name in out["intent"].unique()}
        if len(set(safe.values())) < len(safe):
            raise DataError(f"{path}: renaming intents for Rasa would merge two of them: {bad_names[:3]}")
        out["intent"] = out["intent"].map(safe)
        bad_names = []
    if bad_names:
        raise DataError(f"{path}: intent names may only use letters, digits and _-./; got {bad_names[:3]}")
    return out


def _escape(text: str) -> str:
    """Rasa reads ``[x](entity)`` and ``{...}`` annotations in examples: keep plain text plain."""
    return text.replace("[", "(").replace("]", ")")


def to_rasa_nlu(df: pd.DataFrame, path: str | Path) -> Path:
    """Write ``text, intent`` rows as Rasa NLU YAML (``version: "3.1"``), one block per intent, sorted."""
    blocks = []
    for intent, group in sorted(df.groupby("intent"), key=lambda kv: kv[0]):
        examples = "".join(f"- {_escape(t)}\n" for t in dict.fromkeys(group["text"]))
        blocks.append({"intent": intent, "examples": examples})
    doc = {"version": "3.1", "nlu": blocks}

    class _Block(str):
        pass

    def block(dumper: yaml.Dumper, data: _Block) -> yaml.Node:
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")

    yaml.add_representer(_Block, block, Dumper=yaml.SafeDumper)
    for b in doc["nlu"]:
        b["examples"] = _Block(b["examples"])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=10_000))
    return path


def read_rasa_nlu(path: str | Path) -> pd.DataFrame:
    """The labelled examples of a Rasa NLU YAML file -> ``text, intent`` (entity annotations reduced to text;
    retrieval intents keep their full name, e.g. ``faq/returns_policy``)."""
    doc = yaml.safe_load(Path(path).read_text()) or {}
    rows = []
    for block in doc.get("nlu", []):
        if "intent" not in block:
            continue
        for line in str(block.get("examples", "")).splitlines():
            line = line.strip()
            if line.startswith("- "):
                text = re.sub(r"\[([^\]]+)\]\([^)]+\)", r"\1", line[2:]).strip()
                rows.append({"text": text, "intent": block["intent"]})
    return pd.DataFrame(rows, columns=["text", "intent"])


def training_messages(data_dir: Path | None = None) -> pd.DataFrame:
    """Every labelled NLU example of the project's ``data/`` folder."""
    files = sorted((data_dir or PROJECT / "data").glob("*.yml"))
    frames = [read_rasa_nlu(f) for f in files]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["text", "intent"])


def holdout_file() -> Path:
    """Held-out labelled messages (never trained on): the NLU gate of ``retrain`` and the model card."""
    return PROJECT / "tests" / "nlu_holdout.yml"
