"""Print the shell command that follows ``<!-- NAME -->`` in README.md (used by CI and tests)."""

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def command(name: str, text: str | None = None) -> str:
    text = README.read_text() if text is None else text
    m = re.search(rf"<!-- {re.escape(name)} -->\s*```(?:bash|python)\n(.*?)\n```", text, re.S)
    if m is None:
        raise SystemExit(f"README.md has no block after <!-- {name} -->")
    return m.group(1)


if __name__ == "__main__":
    print(command(sys.argv[1]))
