"""RFC 5256 base subjects and the REFERENCES and ORDEREDSUBJECT threading algorithms (pure)."""

from __future__ import annotations

import re
from typing import Optional

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from cgtwist.protocols.imap.thread import (
    Node,
    ThreadMessage,
    base_subject,
    casemap,
    message_ids,
    ordered_subject,
    references,
    render,
)


def msg(
    n: int,
    date: float = 0.0,
    mid: Optional[str] = None,
    refs: tuple[str, ...] = (),
    subject: str = "",
) -> ThreadMessage:
    return ThreadMessage(n, n, date, mid, list(refs), subject)


def numbers(threads: list[Node]) -> list[int]:
    """Every message number in the forest, dummies left out."""
    out: list[int] = []
    stack = list(threads)
    while stack:
        node = stack.pop()
        if node.msg is not None:
            out.append(node.msg.number)
        stack.extend(node.children)
    return out


class BaseSubjectTests(unittest.TestCase):
    def test_rfc5256_extraction(self) -> None:
        """The subjects of imaptest's sort-subject group reduce as RFC 5256 §2.1 says, and
        each says whether a reply or forward marker was removed (which THREAD's subject
        merging uses)."""
        cases = {
            "a": ("a", False),
            "_": ("_", False),
            "b (a)": ("b (a)", False),
            "[foo] Fwd: [bar] Re: fw: b (fWd)  (fwd)": ("b", True),
            "Re: [FWD: c]": ("c", True),
            "[xyz]": ("[xyz]", False),
            "": ("", False),
            " ": ("", False),
            "RE: C": ("C", True),
            "Ad: Re: Ad: Re: Ad: x": ("Ad: Re: Ad: Re: Ad: x", False),
            "re: [fwd: [fwd: re: [fwd: babylon]]]": ("babylon", True),
            "[list] meeting": ("meeting", False),
            "Re:Re:  re\t: x": ("x", True),
            "x (fwd)": ("x", True),
            "[a] [b]": ("[b]", False),
        }
        for subject, want in cases.items():
            self.assertEqual(base_subject(subject), want, subject)

    def test_deep_forward_wrappers(self) -> None:
        """Thousands of nested "[fwd: ...]" wrappers reduce to the text inside (the steps move
        indexes, they do not recurse or copy the subject per step)."""
        self.assertEqual(base_subject("[fwd: " * 5000 + "x" + "]" * 5000), ("x", True))
        self.assertEqual(base_subject("Re: " * 20000 + "y"), ("y", True))

    @settings(max_examples=300, deadline=None)
    @given(st.text(alphabet=st.sampled_from(list("[]():refwdREFWDx \t")), max_size=40))
    def test_base_subject_is_a_fixed_point(self, subject: str) -> None:
        """The base subject of a base subject is itself, without surrounding spaces: clients
        that compare subjects after their own extraction agree with the server."""
        base, _ = base_subject(subject)
        self.assertEqual(base_subject(base)[0], base)
        self.assertEqual(base, base.strip(" "))

    def test_casemap(self) -> None:
        """i;unicode-casemap (RFC 5051): ASCII letters upper-cased ("_" after "Z"), other
        letters by their titlecase, composed and decomposed forms alike."""
        self.assertEqual(casemap("abc_"), "ABC_")
        self.assertLess(casemap("z"), casemap("_"))
        self.assertEqual(casemap("émile"), casemap("E\u0301MILE"))
        self.assertEqual(casemap("straße"), casemap("STRAßE"))
        self.assertNotEqual(casemap("émile"), casemap("emile"))

    def test_message_ids(self) -> None:
        self.assertEqual(message_ids("<a@b> (comment) <c@d>"), ["a@b", "c@d"])
        self.assertEqual(message_ids("Your message of Tuesday <x@y>"), ["x@y"])
        self.assertEqual(message_ids(None), [])


class ReferencesTests(unittest.TestCase):
    def thread(self, *msgs: ThreadMessage) -> bytes:
        return render(references(list(msgs)))

    def test_imaptest_cases(self) -> None:
        """The REFERENCES answers of imaptest's thread groups (Dovecot's, which follow RFC
        5256 §3): a message's own last reference beats a link another message's References
        made (step 1.B), dummies at the top with one child are promoted, with more kept,
        duplicate and missing Message-IDs get unique ones, subjects merge threads."""
        self.assertEqual(
            self.thread(
                msg(1, 17, "a@b"), msg(2, 15, "b@b", ("a@b", "c@b")), msg(3, 16, "c@b", ("b@b",))
            ),
            b"(3 2)(1)",
        )
        self.assertEqual(self.thread(msg(1, 1, "a@b"), msg(2, 1, "a@b")), b"(1)(2)")
        self.assertEqual(
            self.thread(msg(1, 1, "a@b", subject="foo"), msg(2, 2, "a@b", subject="Re: foo")),
            b"(1 2)",
        )
        self.assertEqual(
            self.thread(msg(1, 1, "a@b", subject="foo"), msg(2, 2, "b@b", ("c@b",), "Re: foo")),
            b"(1 2)",
        )
        self.assertEqual(
            self.thread(
                msg(1, 17, "1@b"),
                msg(2, 15, "2@b", ("1@b",)),
                msg(3, 15, "3@b", ("1@b",)),
                msg(4, 15, "4@b", ("2@b",)),
            ),
            b"(1 (2 4)(3))",
        )
        self.assertEqual(
            self.thread(
                msg(1, 1, "3@b", ("1@b",)), msg(2, 1, "4@b", ("2@b",)), msg(3, 1, "5@b", ("2@b",))
            ),
            b"(1)((2)(3))",
        )
        self.assertEqual(
            self.thread(msg(1, 1, None, ("a@b",)), msg(2, 2, None, ("a@b",))), b"((1)(2))"
        )
        self.assertEqual(
            self.thread(
                msg(1, 1, "a@b"),
                msg(2, 1, "b@b", ("a@b",)),
                msg(3, 1, "c@b", ("b@b",)),
                msg(4, 1, "b@b", ("a@b",)),
            ),
            b"(1 (2 3)(4))",
        )
        self.assertEqual(
            self.thread(msg(1, 1, "a@b"), msg(2, 1, "c@b", ("b@b",)), msg(3, 1, "b@b", ("a@b",))),
            b"(1 3 2)",
        )

    def test_subject_merging(self) -> None:
        """Step 5: two non-reply threads with one subject go under a new dummy; a reply goes
        under the original; threads with an empty subject are never merged."""
        self.assertEqual(
            self.thread(msg(1, 1, "x@y", subject="Plan"), msg(2, 2, "z@y", subject="plan")),
            b"((1)(2))",
        )
        self.assertEqual(
            self.thread(
                msg(1, 2, "x@y", subject="Re: Plan"),
                msg(2, 1, "z@y", subject="Plan"),
                msg(3, 3, "w@y", subject="Fwd: plan"),
            ),
            b"(2 (1)(3))",
        )
        self.assertEqual(self.thread(msg(1, 1, "x@y"), msg(2, 2, "z@y")), b"(1)(2)")

    def test_reference_loops_are_ignored(self) -> None:
        """References that would make a loop create no link; every message still appears."""
        out = self.thread(
            msg(1, 1, "a@x", ("b@x",)), msg(2, 2, "b@x", ("a@x",)), msg(3, 3, "c@x", ("c@x",))
        )
        self.assertEqual(sorted(int(n) for n in re.findall(rb"\d+", out)), [1, 2, 3])

    def test_long_chain_is_not_recursive(self) -> None:
        """A 5,000-message chain of replies threads and renders without recursion."""
        msgs = [msg(1, 0, "m1@x")] + [
            msg(i, i, f"m{i}@x", (f"m{i - 1}@x",)) for i in range(2, 5001)
        ]
        out = self.thread(*msgs)
        self.assertEqual(out, b"(" + b" ".join(b"%d" % i for i in range(1, 5001)) + b")")

    @settings(max_examples=200, deadline=None)
    @given(
        st.lists(
            st.tuples(
                st.sampled_from([None, "a", "b", "c", "d", "e"]),
                st.lists(st.sampled_from(["a", "b", "c", "d", "e", "f"]), max_size=4),
                st.integers(0, 3),
                st.sampled_from(["", "s", "Re: s", "t", "Fwd: t"]),
            ),
            max_size=12,
        )
    )
    def test_every_message_once_in_a_valid_forest(
        self, spec: list[tuple[Optional[str], list[str], int, str]]
    ) -> None:
        """Whatever the references (loops, duplicates, dummies), each message appears exactly
        once, no dummy is left without children or at a lower level with a single child,
        and the response is balanced thread lists."""
        msgs = [
            msg(i + 1, date, f"{mid}@x" if mid else None, tuple(f"{r}@x" for r in refs), subj)
            for i, (mid, refs, date, subj) in enumerate(spec)
        ]
        threads = references(msgs)
        self.assertEqual(sorted(numbers(threads)), list(range(1, len(msgs) + 1)))
        stack = [(t, 0) for t in threads]
        while stack:
            node, depth = stack.pop()
            if node.msg is None:
                self.assertEqual(depth, 0)
                self.assertGreater(len(node.children), 1)
            stack.extend((c, depth + 1) for c in node.children)
        wire = render(threads)
        depth = 0
        for c in wire:
            depth += (c == ord("(")) - (c == ord(")"))
            self.assertGreaterEqual(depth, 0)
        self.assertEqual(depth, 0)


class OrderedSubjectTests(unittest.TestCase):
    def test_imaptest_cases(self) -> None:
        """imaptest's thread-orderedsubject groups: one thread per base subject (case folded),
        the earliest message on top, threads by their first message's date, ties by
        sequence number."""
        subjects = [
            "a",
            "C",
            "b",
            "_",
            "[foo] Fwd: [bar] Re: fw: b (fWd)  (fwd)",
            "b (a)",
            "Re: [FWD: c]",
            "[xyz]",
            "",
            " ",
            "Re: b",
            "RE: C",
            "Re: c",
            "Ad: Re: Ad: Re: Ad: x",
            "re: [fwd: [fwd: re: [fwd: babylon]]]",
        ]
        out = render(ordered_subject([msg(i + 1, 0, subject=s) for i, s in enumerate(subjects)]))
        self.assertEqual(out, b"(1)(2 (7)(12)(13))(3 (5)(11))(4)(6)(8)(9 10)(14)(15)")
        dates = [10, 9, 8, 7, 30, 29, 28, 27]
        out = render(
            ordered_subject([msg(i + 1, d, subject="ab"[i % 2]) for i, d in enumerate(dates)])
        )
        self.assertEqual(out, b"(4 (2)(8)(6))(3 (1)(7)(5))")

    def test_empty(self) -> None:
        self.assertEqual(render(ordered_subject([])), b"")
        self.assertEqual(render(references([])), b"")
