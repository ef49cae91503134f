"""Text an upstream chose, made safe to show on one line."""

from __future__ import annotations

import re

# C0/C1 controls, zero-width and bidirectional controls, line/paragraph separators, the BOM, and
# lone surrogates (which cannot even be encoded to UTF-8: a reason holding one broke every view).
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ud800-\udfff]")


def one_line(text: str) -> str:
    """`text` with every character that could break or disguise a line replaced by a space."""
    return _UNPRINTABLE.sub(" ", text)
