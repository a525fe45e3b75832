"""Hypothesis strategies: real SMTP, IMAP and POP3 verbs with mutated arguments.

Pure random bytes mostly test the command splitter; these reach the command handlers. Each
argument is either a plausible value or one of the mutations attackers and broken clients
send: very long words, NULs, non-UTF-8, deep parentheses, wildcards, numbers out of range,
wrong literal sizes. Commands never contain CR or LF inside (each unit is one command, so the
drivers can count replies); IMAP literals are separate segments the driver sends after the
server's continuation.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

from hypothesis import strategies as st

# -- argument mutations shared by the three protocols ------------------------------------------
_NO_EOL = st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
_TEXT = st.text(
    st.characters(min_codepoint=32, max_codepoint=0x2FFF, exclude_characters="\r\n"), max_size=30
).map(lambda s: s.encode("utf-8"))

MUTATIONS = st.one_of(
    st.integers(100, 3000).map(lambda n: b"x" * n),  # long word
    st.integers(3000, 70000).map(lambda n: b"A" * n),  # over every line limit
    st.sampled_from([b"a\0b", b"\0", b"\0\0\0\0"]),  # NULs
    st.sampled_from([b"\xff\xfe", b"\xc3(", b"\xe2\x82", b"caf\xe9", b"\xf0\x28\x8c\x28"]),
    st.integers(1, 300).map(lambda n: b"(" * n + b")" * n),  # deep parentheses
    st.integers(1, 300).map(lambda n: b"(" * n),  # unbalanced
    st.sampled_from([b"*", b"%", b"*%", b"%*%", b"a*b%c"]),  # wildcards (short)
    st.sampled_from(
        [
            b"",
            b" ",
            b"\t",
            b'"',
            b'""',
            b'"\\',
            b"\\",
            b"{",
            b"}",
            b"[",
            b"]",
            b"<",
            b">",
            b"<>",
            b"=",
            b"-1",
            b"0",
            b"4294967296",
            b"9" * 30,
        ]
    ),
    _NO_EOL,
    _TEXT,
)


def arg(*good: bytes) -> st.SearchStrategy[bytes]:
    """One argument: mostly a real value, otherwise a mutation."""
    return st.one_of(st.sampled_from(list(good)), st.sampled_from(list(good)), MUTATIONS)


def case(verb: bytes) -> st.SearchStrategy[bytes]:
    """Verbs are case-insensitive in all three protocols; try the spellings."""
    return st.sampled_from([verb, verb.lower(), verb.capitalize()])


def join(*parts: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    return st.tuples(*parts).map(lambda xs: b" ".join(x for x in xs if x is not None))


def b64(raw: bytes) -> bytes:
    return base64.b64encode(raw)


SASL_RESPONSES = arg(
    b64(b"\0alice@example.com\0secret"),
    b64(b"\0alice@example.com\0wrong"),
    b64(b"bob\0alice@example.com\0secret"),
    b64(b"\0\0"),
    b"*",
    b"=",
    b"!!!!",
    b64(b"\0" * 3000),
)

# -- SMTP (RFC 5321, 4954, 3207) ---------------------------------------------------------------
_ADDR = arg(
    b"<alice@example.com>",
    b"<>",
    b"<a@b.example>",
    b'<"q x"@[192.0.2.1]>',
    b"<@relay.example:a@b.example>",
    b"alice@example.com",
    b"<a@b@c>",
)
_MAIL_PARAM = st.sampled_from(
    [
        b"",
        b"SIZE=100",
        b"SIZE=99999999999999",
        b"BODY=8BITMIME",
        b"BODY=BINARYMIME",
        b"SMTPUTF8",
        b"AUTH=<>",
        b"RET=HDRS",
        b"ENVID=x",
        b"FOO=bar",
        b"SIZE=",
        b"=x",
    ]
)
_RCPT_PARAM = st.sampled_from(
    [
        b"",
        b"NOTIFY=NEVER",
        b"NOTIFY=SUCCESS,FAILURE",
        b"NOTIFY=",
        b"ORCPT=rfc822;a@b.example",
        b"FOO=bar",
    ]
)

SMTP_COMMAND = st.one_of(
    join(case(b"EHLO"), arg(b"client.example", b"[192.0.2.1]", b"[IPv6:::1]")),
    join(case(b"HELO"), arg(b"client.example")),
    st.tuples(case(b"MAIL FROM:"), _ADDR, _MAIL_PARAM).map(lambda t: t[0] + t[1] + b" " + t[2]),
    st.tuples(case(b"RCPT TO:"), _ADDR, _RCPT_PARAM).map(lambda t: t[0] + t[1] + b" " + t[2]),
    case(b"DATA"),
    case(b"RSET"),
    case(b"NOOP"),
    case(b"HELP"),
    case(b"STARTTLS"),
    join(case(b"NOOP"), MUTATIONS),
    join(case(b"VRFY"), arg(b"alice", b"<alice@example.com>")),
    join(case(b"EXPN"), arg(b"list")),
    join(case(b"AUTH"), arg(b"PLAIN", b"LOGIN", b"CRAM-MD5", b"XOAUTH2")),
    join(case(b"AUTH"), st.just(b"PLAIN"), SASL_RESPONSES),
    join(case(b"BDAT"), arg(b"0", b"10", b"10 LAST")),
    join(case(b"ETRN"), arg(b"example.com")),
    SASL_RESPONSES,  # a stray SASL line, or the answer to 334
    MUTATIONS,  # not a command at all
)
SMTP_BODY = st.lists(
    st.one_of(arg(b"Subject: x", b"", b"..", b".x", b"body"), MUTATIONS), max_size=5
)

# -- POP3 (RFC 1939, 2449, 5034) ---------------------------------------------------------------
_MSGNO = arg(b"1", b"2", b"3")
POP3_COMMAND = st.one_of(
    join(case(b"USER"), arg(b"alice@example.com", b"alice", b"nobody@example.com")),
    join(case(b"PASS"), arg(b"secret", b"wrong")),
    join(case(b"AUTH"), arg(b"PLAIN", b"LOGIN")),
    join(case(b"AUTH"), st.just(b"PLAIN"), SASL_RESPONSES),
    case(b"AUTH"),
    case(b"CAPA"),
    case(b"STAT"),
    case(b"NOOP"),
    case(b"RSET"),
    case(b"STLS"),
    case(b"LIST"),
    join(case(b"LIST"), _MSGNO),
    case(b"UIDL"),
    join(case(b"UIDL"), _MSGNO),
    join(case(b"RETR"), _MSGNO),
    join(case(b"DELE"), _MSGNO),
    join(case(b"TOP"), _MSGNO, arg(b"0", b"1", b"5")),
    join(case(b"APOP"), arg(b"alice"), arg(b"c4c9334bac560ecc979e58001b3e22fb")),
    SASL_RESPONSES,
    MUTATIONS,
)

# -- IMAP (RFC 3501, 9051 and the extensions we announce) --------------------------------------


@dataclass
class IMAPCommand:
    """One tagged command: ``parts`` alternate between line text and literal contents.

    ``literal_sizes[i]`` is the size the client announces for literal ``i`` (the fuzzer lies
    sometimes); ``plus`` makes them LITERAL+ (sent without waiting for the continuation).
    """

    tag: bytes
    parts: list[bytes]
    literal_sizes: list[int] = field(default_factory=list)
    plus: bool = False
    verb: bytes = b""


# UTF-8 and not-UTF-8 names too: an IMAP4rev2 session reads names as UTF-8 (RFC 9051 §5.1).
_MAILBOX = arg(
    b"INBOX",
    b"Sent",
    b'"Sent Items"',
    b"inbox",
    b'"a/b"',
    b"Trash",
    b'"&AKM-"',
    b'"\\\\"',
    b'"Gr\xc3\xbc\xc3\x9fe"',
    b'"bad\xff"',
)
_SEQ = arg(b"1", b"1:*", b"*", b"1,2", b"2:1", b"0", b"4294967295", b"1:4294967296", b"$")
_FETCH_ITEMS = arg(
    b"FLAGS",
    b"(FLAGS UID)",
    b"BODY[]",
    b"BODY.PEEK[HEADER]",
    b"BODY[1.2.3]",
    b"BODY[]<0.10>",
    b"BODY[]<4294967295.1>",
    b"BODYSTRUCTURE",
    b"ENVELOPE",
    b"ALL",
    b"FAST",
    b"FULL",
    b"RFC822.SIZE",
    b"BINARY[1]",
    b"(BODY[HEADER.FIELDS (SUBJECT)])",
)
_SEARCH = arg(
    b"ALL",
    b"UNSEEN",
    b"SUBJECT hello",
    b"OR SEEN (NOT DELETED)",
    b"BEFORE 1-Jan-2020",
    b"LARGER 10",
    b"UID 1:*",
    b"CHARSET UTF-8 TEXT x",
    b"NOT NOT NOT ALL",
    b"HEADER X y",
)
# SORT and THREAD (RFC 5256): criteria lists good and bad, charsets, algorithms.
_SORT_CRITERIA = arg(
    b"(DATE)",
    b"(REVERSE SUBJECT ARRIVAL)",
    b"(DISPLAYFROM CC)",
    b"()",
    b"(REVERSE)",
    b"(BOGUS)",
    b"DATE",
    b"((SIZE))",
)
_CHARSET = arg(b"UTF-8", b"US-ASCII", b"KOI8-R", b'"utf-8"')
_THREAD_ALGORITHM = arg(b"REFERENCES", b"ORDEREDSUBJECT", b"JWZ", b"(REFERENCES)")
_FLAGS = arg(b"(\\Seen)", b"(\\Deleted \\Flagged)", b"()", b"(\\Recent)", b"(custom)", b"\\Seen")
_STORE_ITEM = arg(b"FLAGS", b"+FLAGS", b"-FLAGS.SILENT", b"+FLAGS.SILENT")
# LIST/LSUB patterns, with many wildcards (a backtracking matcher once froze the server on
# "****...x"), STATUS items and APPEND flags with nested parentheses (once NO [SERVERBUG]),
# impossible APPEND dates (once stored as some other date).
_PATTERN = arg(
    b'"*"',
    b'"%"',
    b'"INBOX"',
    b'"Sent/%"',
    b'""',
    b'"a*b"',
    b'"' + b"*" * 121 + b'x"',
    b'"%*%*%*%*%*%*%*%*%*%*%*%*%*%*x"',
)
_STATUS_ITEMS = arg(
    b"(MESSAGES UNSEEN UIDNEXT)",
    b"(UIDVALIDITY RECENT)",
    b"(DELETED DELETED-STORAGE)",
    b"()",
    b"(FOO)",
    b"((MESSAGES))",
)
_APPEND_DATE = st.sampled_from(
    [
        None,
        b'"02-Mar-2026 10:00:00 +0000"',
        b'" 2-Mar-2026 10:00:00 -0800"',
        b"nodate",
        b'"yesterday"',
        b'"30-Feb-2021 24:00:00 +2500"',
        b'"99-Jan-2020 10:00:00 +0000"',
        b'"31-Feb-2026 25:61:00 +9999"',
    ]
)
_APPEND_FLAGS = st.one_of(st.none(), _FLAGS, arg(b"(((\\Seen)))", b"((\\Seen) x)"))
_MESSAGE = arg(b"Subject: hi\r\n\r\nbody\r\n", b"", b"x", b"\r\n\r\n", b"From: a\r\n")


@st.composite
def imap_command(draw: st.DrawFn, tag: bytes) -> IMAPCommand:
    simple = st.one_of(
        case(b"CAPABILITY"),
        case(b"NOOP"),
        case(b"CHECK"),
        case(b"CLOSE"),
        case(b"EXPUNGE"),
        case(b"UNSELECT"),
        case(b"NAMESPACE"),
        case(b"IDLE"),
        case(b"STARTTLS"),
        join(
            case(b"LOGIN"),
            arg(b"alice@example.com", b'"alice@example.com"'),
            arg(b"secret", b"wrong", b'"sec\\"ret"'),
        ),
        join(case(b"AUTHENTICATE"), arg(b"PLAIN", b"LOGIN", b"XOAUTH2")),
        join(case(b"AUTHENTICATE"), st.just(b"PLAIN"), SASL_RESPONSES),
        join(case(b"SELECT"), _MAILBOX),
        join(case(b"EXAMINE"), _MAILBOX),
        join(case(b"CREATE"), _MAILBOX),
        join(case(b"DELETE"), _MAILBOX),
        join(case(b"RENAME"), _MAILBOX, _MAILBOX),
        join(case(b"SUBSCRIBE"), _MAILBOX),
        join(case(b"UNSUBSCRIBE"), _MAILBOX),
        join(case(b"STATUS"), _MAILBOX, _STATUS_ITEMS),
        join(st.sampled_from([b"LIST", b"LSUB", b"list"]), arg(b'""', b'"INBOX"'), _PATTERN),
        join(case(b"FETCH"), _SEQ, _FETCH_ITEMS),
        join(case(b"UID FETCH"), _SEQ, _FETCH_ITEMS),
        join(case(b"STORE"), _SEQ, _STORE_ITEM, _FLAGS),
        join(case(b"UID STORE"), _SEQ, _STORE_ITEM, _FLAGS),
        join(case(b"SEARCH"), _SEARCH),
        join(case(b"UID SEARCH"), _SEARCH),
        join(case(b"SORT"), _SORT_CRITERIA, _CHARSET, _SEARCH),
        join(case(b"UID SORT"), _SORT_CRITERIA, _CHARSET, _SEARCH),
        join(case(b"THREAD"), _THREAD_ALGORITHM, _CHARSET, _SEARCH),
        join(case(b"UID THREAD"), _THREAD_ALGORITHM, _CHARSET, _SEARCH),
        join(case(b"COPY"), _SEQ, _MAILBOX),
        join(case(b"MOVE"), _SEQ, _MAILBOX),
        join(case(b"UID EXPUNGE"), _SEQ),
        join(case(b"ENABLE"), arg(b"CONDSTORE", b"UTF8=ACCEPT", b"IMAP4rev2")),
        join(case(b"ID"), arg(b"NIL", b'("name" "x")', b'("a")')),
        join(case(b"GETQUOTAROOT"), _MAILBOX),  # RFC 9208
        join(case(b"GETQUOTA"), arg(b'""', b"x", b'"User quota"')),
        join(case(b"SETQUOTA"), arg(b'""'), arg(b"(STORAGE 1)", b"()", b"(STORAGE)", b"((x))")),
        join(case(b"LOGOUT")),
        MUTATIONS,
    )
    kind = draw(st.integers(0, 9))
    if kind < 8:
        text = draw(simple)
        return IMAPCommand(tag, [tag + b" " + text], verb=text.split(b" ", 1)[0].upper())
    # APPEND with a literal whose announced size may differ from what the client meant.
    box = draw(_MAILBOX)
    flags = draw(_APPEND_FLAGS)
    date = draw(_APPEND_DATE)
    message = draw(_MESSAGE)
    size = draw(
        st.one_of(
            st.just(len(message)),
            st.integers(0, 64),
            st.sampled_from([0, 4294967295, 10**12, 60 * 1024 * 1024]),
        )
    )
    head = b" ".join(x for x in (tag, b"APPEND", box, flags, date) if x is not None)
    return IMAPCommand(
        tag, [head + b" ", message, b""], [size], plus=draw(st.booleans()), verb=b"APPEND"
    )


def imap_commands(max_size: int = 8) -> st.SearchStrategy[list[IMAPCommand]]:
    @st.composite
    def commands(draw: st.DrawFn) -> list[IMAPCommand]:
        n = draw(st.integers(1, max_size))
        return [draw(imap_command(b"F%d" % i)) for i in range(n)]

    return commands()
