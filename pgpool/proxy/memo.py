"""Per-worker memo of statement texts for the query path: facts, statistics kind, fast-path fit.

The relay looks every statement text up here before routing it. An entry holds what the text
alone decides: its classification (pgpool.sql.classify), its kind for SHOW pool_backend_stats
(first keyword) and whether the relay's fast path may stream it (`needs_general_path`).

Entries are keyed by the text without its digits, so `... WHERE aid = 12345` and `... = 678`
share one (one C-level `translate` and a dict lookup; no regular expression on a hit). A text
with digits uses an entry made from another text only when both are SELECT / INSERT / UPDATE /
DELETE statements (whose facts never depend on a number's value) and the digits stand alone:
no digit right after a letter, `_`, `.` or a non-ASCII byte (an identifier such as t1, a
fraction, an exponent, a type name such as int4) and no double quote (a quoted identifier) —
then the two texts differ only in the values of numeric constants. Anything else is looked up by
its exact text. Texts longer than classify's cache limit are classified every time.
"""

from pgpool.proxy.stats import stat_kind
from pgpool.sql.classify import MAX_CACHED_TEXT, classify

DIGITS = b"0123456789"
MEMO_SIZE = 4096                # entries kept; the memo starts afresh when full
# statement kinds whose facts are the same whatever the value of their numeric constants
SHAPED_KINDS = frozenset(("select", "insert", "update", "delete"))
# byte classes for _word_digit(): name characters (and ".") -> "a", digits -> "0"
_CLASSES = bytes(ord("a") if c in b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_." or c >= 0x80
                 else ord("0") if c in DIGITS else c for c in range(256))
LOCAL_PREFIXES = (b"show pool_", b"pgpool ")

# entry: (facts, stat kind, needs the general path, decoded text or None, shaped entry or None)
_memo: dict[bytes, tuple] = {}
_exact: dict[bytes, tuple] = {}     # texts that recur verbatim although they hold digits ($1)


def _word_digit(text: bytes) -> bool:
    """Does a digit follow a name character, "." or a non-ASCII byte, or is there a double
    quote? (two C-level scans of a translated copy; cheaper than a regular expression)"""
    classes = text.translate(_CLASSES)
    # (find(), not `in`: CPython 3.11's bytes `in` first tries the operand as an integer and
    # builds, then discards, a TypeError each time)
    return classes.find(b"a0") >= 0 or classes.find(b'"') >= 0


def needs_general_path(sql: bytes) -> bool:
    """Statement text the relay's fast path leaves to the general one: pgpool's own commands,
    COPY (the client speaks mid-reply), LISTEN (notifications arrive between requests)."""
    low = sql.lower()
    return (low.lstrip()[:10].startswith(LOCAL_PREFIXES) or low.find(b"copy") >= 0
            or low.find(b"listen") >= 0)


def lookup(text: bytes, verbatim: bool = False) -> tuple:
    """(facts, stat kind, needs general path, text as str or None, _) for a statement text.
    The str is None when the entry was made from another text (decode `text` if needed).
    `verbatim`: the text is likely to recur exactly (a Parse message's query with $n
    parameters) and is also remembered as such."""
    if verbatim:
        e = _exact.get(text)
        if e is not None:
            return e
    key = text.translate(None, DIGITS)
    e = _memo.get(key)
    if e is not None:
        if e[3] is not None and len(key) == len(text):
            return e                    # made from this very text
        shaped = e[4]
        if shaped is not None and not _word_digit(text):
            if verbatim:
                e = _remember(_exact, text, (*shaped[:3], text.decode("utf-8", "replace"), None))
                return e
            return shaped
    return _learn(text, key, verbatim)


def _learn(text: bytes, key: bytes, verbatim: bool) -> tuple:
    sql = text.decode("utf-8", "replace")
    facts = classify(sql)
    kind = stat_kind(text)
    general = needs_general_path(text)
    shaped = None
    if facts.kind in SHAPED_KINDS and not _word_digit(text):
        shaped = (facts, kind, general, None, None)
    entry = (facts, kind, general, sql, shaped)
    if len(text) <= MAX_CACHED_TEXT:
        if len(key) == len(text):
            _remember(_memo, key, entry)
        else:
            if shaped is not None:
                _remember(_memo, key, (facts, kind, general, None, shaped))
            if verbatim:
                _remember(_exact, text, (facts, kind, general, sql, None))
    return entry


def _remember(table: dict, key: bytes, entry: tuple) -> tuple:
    if len(table) >= MEMO_SIZE:
        table.clear()
    table[key] = entry
    return entry


def clear() -> None:
    """Forget every entry (tests)."""
    _memo.clear()
    _exact.clear()
