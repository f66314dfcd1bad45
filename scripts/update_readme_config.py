"""Rewrite the configuration table in README.md from the config schema.

Run after adding a config key: `.venv/bin/python scripts/update_readme_config.py`.
A test fails when the README and the schema disagree.
"""

from __future__ import annotations

import re
from pathlib import Path

from mailhost import config

README = Path(__file__).resolve().parents[1] / "README.md"


def main() -> None:
    text = README.read_text()
    rows = "".join(f"| `{k}` | `{d}` | {doc} |\n" for k, d, doc in config.reference())
    header = "| key | default | meaning |\n|---|---|---|\n"
    pattern = re.compile(re.escape(header) + r"(?:\|.*\|\n)*")
    if not pattern.search(text):
        raise SystemExit("README.md has no configuration table")
    README.write_text(pattern.sub(lambda _: header + rows, text, count=1))


if __name__ == "__main__":
    main()
