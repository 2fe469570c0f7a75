"""Text that people read back: names, order subjects, reasons, addresses.

Such text may hold any letter, digit, punctuation or emoji, but not the characters that
are there to act rather than to be read:

- control characters (C0, DEL, C1) and the Unicode line and paragraph separators: they
  break a line in logs, bills and reports, and XML (WeChat Pay's protocol) cannot carry
  most of them;
- the bidirectional formatting characters (U+202E RIGHT-TO-LEFT OVERRIDE and its kin):
  they make a name or a subject display as something other than what is stored.
"""

from __future__ import annotations

import re

from pydantic import AfterValidator

_HIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def refuse_hidden_characters(value: str) -> str:
    """``value`` unchanged, or ValueError naming the first character that is not for reading."""
    found = _HIDDEN.search(value)
    if found is not None:
        raise ValueError(
            f"must not contain control or bidirectional formatting characters (found U+{ord(found.group()):04X})"
        )
    return value


# For ``Annotated[str, Field(...), Readable]``.
Readable = AfterValidator(refuse_hidden_characters)
