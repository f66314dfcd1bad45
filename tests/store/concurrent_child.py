"""Child for the concurrency test: append COUNT messages tagged TAG, print each UID."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from store import Flag, FlagMode, Store


def main() -> None:
    root, tag, count = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    store = Store(root)
    inbox = store.open_mailbox("shared").inbox
    for n in range(count):
        result = inbox.append(f"Subject: {tag} {n}\r\n\r\n{tag}-{n}\r\n".encode())
        print(result.uid, flush=True)
        if n % 5 == 0:
            inbox.store_flags([result.uid], FlagMode.ADD, [Flag.FLAGGED])
    store.close()


if __name__ == "__main__":
    main()
