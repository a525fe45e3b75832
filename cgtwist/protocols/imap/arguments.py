"""IMAP command arguments as Twisted's dispatcher asks for them, parsed right and bounded.

Owns the argument parsers CgIMAP4Server's command tables name (``arg_astring``,
``arg_seqset`` with SEARCHRES ``$``, ``arg_plist``, ``opt_plist``, ``opt_create_params``,
``arg_flaglist``,
``arg_fetchatt`` with BINARY items) where Twisted's ignore quoted-string escapes, raise bare
Exceptions or copy the line per list item (quadratic), and the check of a flag list. Each
returns (value, rest of the line) or a Deferred for a literal, or raises
``imap4.IllegalClientResponse`` (BAD). No command logic.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional, cast

from twisted.internet import defer
from twisted.mail import imap4
from twisted.python.failure import Failure

from cgtwist.protocols.imap import binary as imap_binary
from cgtwist.protocols.imap import condstore as imap_condstore
from cgtwist.protocols.imap import createparams as imap_createparams
from cgtwist.protocols.imap import parse as imap_parse
from cgtwist.protocols.imap import typedimap4
from cgtwist.protocols.imap.commands import CommandEntry
from cgtwist.typedtwisted import current_failure

_MAX_LIST_ITEMS = 256  # flags, FETCH items or STATUS items in one command
# FETCH item lists as parsed, by their text: a client sends the same few again and again
# (a mail client's UID FETCH <uid> (BODY.PEEK[]) for each message), and Twisted's parser
# walks the text byte by byte (16 us for BODY.PEEK[]). The items are never changed once
# parsed. Bounded: texts up to 256 octets, 256 of them, all forgotten when full.
_FETCH_ITEMS: dict[bytes, tuple[tuple[object, ...], bytes]] = {}
_FETCH_ITEMS_TEXT = 256
_FETCH_ITEMS_KEPT = 256


Parsed = tuple[object, Optional[bytes]]  # an argument parser's (value, rest of the line)


def parsed(result: object) -> Parsed:
    """An argument parser's answer, from the Deferred it fired already (a literal's)
    when it gave one; raises its failure, or RuntimeError when it has not fired."""
    # A tuple first: isinstance of Deferred (an Awaitable, so an ABC) costs an ABC check,
    # five times a command, where nearly every parser answers with a tuple.
    if isinstance(result, tuple) or not isinstance(result, defer.Deferred):
        return cast(Parsed, result)
    out: list[object] = []
    result.addBoth(out.append)
    if not out:
        raise RuntimeError("an argument parser did not answer at once")
    if isinstance(out[0], Failure):
        out[0].raiseException()
    return cast(Parsed, out[0])


def flag_list(raw: Any) -> list[str]:
    """Validate a flag list from APPEND/STORE: system flags or keyword atoms; no \\Recent."""
    try:
        return [imap_parse.check_flag(f) for f in raw or []]
    except imap_parse.ParseError as e:
        raise imap4.IllegalClientResponse(str(e)) from None


class ArgumentParsers:
    """The parsers, a base of the command mixins; the server provides what is declared here."""

    mbox: Any
    search_saved: list[int]
    uid_arguments: bool

    if TYPE_CHECKING:

        def _stringLiteral(self, size: int) -> Any: ...
        def _IMAP4Server__ebDispatch(self, failure: Failure, tag: bytes) -> None: ...

    def run_entry(
        self, tag: bytes, entry: CommandEntry, line: Optional[bytes], uid: Optional[int] = None
    ) -> None:
        """A command as Twisted's ``IMAP4Server.dispatchCommand`` runs it (the handler called
        with what the entry's argument parsers take from ``line``, the entry's constants
        passed on in place), without its Deferred and two callbacks per parser: each of our
        parsers answers at once (a literal comes from the queue the framing filled, as a
        fired Deferred). Measured: a fifth of a UID FETCH's instructions, a quarter of a
        NOOP's with the folder check, went to that chain. The replies are the same: once a
        parser has run, a parser's or the handler's exception goes to the dispatch errback,
        as through the chain; before, it is raised to the caller, as there."""
        handler = cast("Callable[..., object]", entry[0])  # a string: no typing work per call
        args: list[object] = [self, tag]
        parsers_ran = False
        try:
            for parser in entry[1:]:
                if not callable(parser):
                    args.append(parser)
                    continue
                parsers_ran = True
                result = parser(self, line)
                # A tuple (nearly every parser, nearly always) unpacked here, not in parsed().
                value, line = result if type(result) is tuple else parsed(result)
                args.append(value)
            if line:
                raise imap4.IllegalClientResponse("Too many arguments for command: " + repr(line))
            if uid is not None:
                handler(*args, uid=uid)
            else:
                handler(*args)
        except Exception:
            if not parsers_ran:
                raise
            self._IMAP4Server__ebDispatch(current_failure(), tag)

    def arg_astring(self, line: Optional[bytes], final: bool = False) -> Any:
        """astring = atom / quoted / literal (RFC 3501 §9); returns (value, rest) or a Deferred.

        ``final`` is in Twisted's signature only: an empty literal is read like any other.
        """
        line = line or b""  # Twisted passes None when the line ran out
        line = line.lstrip(b" ")
        if not line:
            raise imap4.IllegalClientResponse("Missing argument")
        if line[:1] == b'"':
            out = bytearray()
            i = 1
            while i < len(line):
                c = line[i]
                if c == 0x5C and i + 1 < len(line) and line[i + 1] in (0x5C, 0x22):
                    out.append(line[i + 1])
                    i += 2
                elif c == 0x22:
                    rest = line[i + 1 :]
                    if rest and rest[:1] != b" ":
                        raise imap4.IllegalClientResponse("Junk after quoted string")
                    return bytes(out), rest[1:]
                else:
                    out.append(c)
                    i += 1
            raise imap4.IllegalClientResponse("Unmatched quotes")
        if line[:1] == b"{":
            spec = imap_parse.literal_at_end(line)
            if spec is None or spec.start != 0:
                raise imap4.IllegalClientResponse("Malformed literal")
            return self._stringLiteral(spec.size)
        arg, _, rest = line.partition(b" ")
        if any(c in b'(){"\\' or c < 0x21 or c == 0x7F for c in arg):
            raise imap4.IllegalClientResponse("Invalid atom")
        return arg, rest

    def arg_seqset(self, line: Optional[bytes]) -> tuple[imap4.MessageSet, bytes]:
        """sequence-set (RFC 3501 §9) parsed in linear time into Twisted's MessageSet."""
        line = line or b""  # Twisted passes None when the line ran out
        spec, _, rest = line.partition(b" ")
        if spec == b"$":
            return self._saved_set(), rest
        try:
            ranges = imap_parse.parse_sequence_set(spec)
        except imap_parse.ParseError as e:
            raise imap4.IllegalClientResponse(str(e)) from None
        big = float("inf")
        spans = [
            (a, b) if (big if a is None else a) <= (big if b is None else b) else (b, a)
            for a, b in ranges
        ]
        if len(spans) == 1:
            # One range, ordered above (a mail client's UID FETCH <uid> of one message):
            # Twisted's sort and merge of the ranges would leave it as it is.
            one = typedimap4.message_set()
            one.ranges = spans
            return one, rest
        return typedimap4.message_set(spans), rest

    def _saved_set(self) -> imap4.MessageSet:
        """``$`` (RFC 5182 §2.1): the saved UIDs, or for a command taking sequence numbers
        their numbers now (a message expunged since drops out); empty is allowed."""
        numbers = sorted(self.search_saved)
        if not self.uid_arguments:
            seq_of = getattr(self.mbox, "seq_of", None)
            numbers = (
                []
                if seq_of is None
                else sorted(s for s in (seq_of(u) for u in numbers) if s is not None)
            )
        runs: list[tuple[int, int]] = []
        for n in numbers:
            if runs and n == runs[-1][1] + 1:
                runs[-1] = (runs[-1][0], n)
            else:
                runs.append((n, n))
        return typedimap4.message_set(runs) if runs else typedimap4.message_set()

    # Twisted's list parsers copy the rest of the line per item (quadratic): a 64 KiB list
    # stalls the reactor for a third of a second, so the item count is capped first.
    def arg_plist(self, line: Optional[bytes]) -> Any:
        line = line or b""  # Twisted passes None when the line ran out
        if line.count(b" ") > _MAX_LIST_ITEMS:
            raise imap4.IllegalClientResponse("Too many list items")
        try:
            return typedimap4.plist_parser(self, line)
        except imap4.MismatchedNesting:
            # ``(((\\Seen)))``: Twisted cuts at the first ")" and fails on what is left.
            raise imap4.IllegalClientResponse("Mismatched parentheses") from None

    def opt_plist(self, line: Optional[bytes]) -> Any:
        line = line or b""  # Twisted passes None when the line ran out
        if line.startswith(b"("):
            return self.arg_plist(line)
        return None, line

    def opt_create_params(self, line: Optional[bytes]) -> tuple[tuple[str, ...], bytes]:
        """CREATE's optional parameters (RFC 4466 §2.2): the USE attributes (RFC 6154 §5.1),
        none when the line ends after the name; the whole rest of the line is read."""
        line = (line or b"").strip(b" ")
        if not line:
            return (), b""
        try:
            return imap_createparams.parse(line), b""
        except imap_parse.ParseError as e:
            raise imap4.IllegalClientResponse(str(e)) from None

    def arg_flaglist(self, line: Optional[bytes]) -> Any:
        line = line or b""  # Twisted passes None when the line ran out
        if line.count(b" ") > _MAX_LIST_ITEMS:
            raise imap4.IllegalClientResponse("Too many flags")
        return typedimap4.flaglist_parser(self, line)

    def arg_fetchatt(self, line: Optional[bytes]) -> tuple[list[Any], bytes]:
        """The FETCH items; the rest is the modifier list (RFC 4466 §2.4), if any, for
        ``opt_fetch_modifiers``."""
        line = line or b""  # Twisted passes None when the line ran out
        hit = _FETCH_ITEMS.get(line)
        if hit is not None:
            return list(hit[0]), hit[1]
        if line.count(b" ") > _MAX_LIST_ITEMS:
            raise imap4.IllegalClientResponse("Too many FETCH items")
        text, modifiers = imap_condstore.split_fetch_modifiers(line.strip())
        listed = text[:1] == b"(" and text[-1:] == b")"
        result: list[Any] = []
        # BINARY items (RFC 3516) and MODSEQ (RFC 7162) are ours; the text between them goes
        # to Twisted's parser (a parenthesised list of the items there, or the single item or
        # macro as it is).
        for piece in imap_binary.split_items(text[1:-1] if listed else text):
            if isinstance(piece, imap_binary.BinaryItem):
                result.append(piece)
                continue
            piece, modseqs = imap_condstore.take_modseq_items(piece)
            if modseqs and not any(getattr(i, "type", "") == "modseq" for i in result):
                result.append(imap_condstore.ModseqItem())
            if not piece.strip():
                continue
            p = typedimap4.FetchParser()
            try:
                p.parseString(b"(" + piece.strip() + b")" if listed else piece)
            except Exception as e:
                raise imap4.IllegalClientResponse("Invalid FETCH data item") from e
            result.extend(p.result)
        if not result:
            raise imap4.IllegalClientResponse("Missing FETCH data items")
        if len(line) <= _FETCH_ITEMS_TEXT:
            if len(_FETCH_ITEMS) >= _FETCH_ITEMS_KEPT:
                _FETCH_ITEMS.clear()
            _FETCH_ITEMS[line] = (tuple(result), modifiers)
        return result, modifiers

    def opt_fetch_modifiers(
        self, line: Optional[bytes]
    ) -> tuple[Optional[imap_condstore.FetchModifiers], bytes]:
        """``CHANGEDSINCE n [VANISHED]`` as ``arg_fetchatt`` left it (RFC 7162 §3.1.4)."""
        if not line:
            return None, b""
        try:
            return imap_condstore.fetch_modifiers(line), b""
        except imap_parse.ParseError as e:
            raise imap4.IllegalClientResponse(str(e)) from None

    def opt_store_modifiers(self, line: Optional[bytes]) -> tuple[Optional[int], bytes]:
        """``(UNCHANGEDSINCE n)`` before the STORE data item (RFC 7162 §3.1.3), or None."""
        line = line or b""
        if not line.startswith(b"("):
            return None, line
        end = line.find(b")")
        if end < 0:
            raise imap4.IllegalClientResponse("Unbalanced parenthesis")
        try:
            tokens = imap_parse.tokenize([line[1:end]], [])
            return imap_condstore.store_modifiers(tokens), line[end + 1 :].lstrip(b" ")
        except imap_parse.ParseError as e:
            raise imap4.IllegalClientResponse(str(e)) from None

    def opt_select_params(self, line: Optional[bytes]) -> tuple[imap_condstore.SelectParams, bytes]:
        """SELECT/EXAMINE parameters (RFC 4466 §2.1): CONDSTORE, QRESYNC (RFC 7162)."""
        try:
            tokens = imap_parse.tokenize([line or b""], [])
            return imap_condstore.select_params(tokens), b""
        except imap_parse.ParseError as e:
            raise imap4.IllegalClientResponse(str(e)) from None
