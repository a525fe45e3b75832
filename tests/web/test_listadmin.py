"""The list settings form of cgtwist.web.pages_listadmin: typed from text, each field checked
by the LIST model's own check and refused on its own field."""

from __future__ import annotations

from twisted.trial import unittest

from cgtwist.lists.model import FIELDS
from cgtwist.web.pages_listadmin import settings_from_form


class SettingsFormTests(unittest.TestCase):
    def test_every_field_typed_and_absent_boxes_off(self) -> None:
        """Numbers become ints, text stays text (the footer keeps its lines), an absent
        checkbox is off: what the LIST agent acts on, for every field it has."""
        values, errors = settings_from_form(
            {
                "owner": " Owner@Example.com ",
                "policy": "moderated",
                "size_limit": "2048",
                "digest_interval": "3600",
                "reply_to": "list",
                "footer": "line one\r\nline two",
                "personalize": "on",
            }
        )
        self.assertEqual(errors, {})
        self.assertEqual(set(values), set(FIELDS))
        self.assertEqual(values["owner"], "owner@example.com")
        self.assertEqual((values["size_limit"], values["digest_interval"]), (2048, 3600))
        self.assertEqual(values["footer"], "line one\nline two")
        self.assertIs(values["personalize"], True)
        self.assertIs(values["confirm_subscribe"], False)

    def test_each_bad_value_is_named_on_its_own_field(self) -> None:
        """Every refused field has its own message; the good ones are still typed."""
        values, errors = settings_from_form(
            {
                "policy": "everybody",
                "size_limit": "-5",
                "digest_interval": "0",
                "subject_tag": "x" * 61,
                "description": "two\nlines",
                "owner": "no-at-sign",
                "reply_to": "none",
                "digest_interval_extra": "ignored",
            }
        )
        self.assertEqual(
            set(errors),
            {"policy", "size_limit", "digest_interval", "subject_tag", "description", "owner"},
        )
        self.assertIn("anyone, subscribers, moderated", errors["policy"])
        self.assertIn("whole number", errors["size_limit"])
        self.assertIn("at least 1 second", errors["digest_interval"])
        # a one-line field has its line break refused, not silently joined
        self.assertIn("control characters", errors["description"])
        self.assertEqual(values["reply_to"], "none")

    def test_only_the_fields_asked_for(self) -> None:
        values, errors = settings_from_form({"policy": "anyone"}, ["policy"])
        self.assertEqual((values, errors), ({"policy": "anyone"}, {}))
