"""Settings pages: every setting they show exists, and its default reads back unchanged
through its form field (so a page saved as shown changes nothing); wrong text is refused
with the catalogue's message."""

from __future__ import annotations

from twisted.trial import unittest

from cgtwist import settings as dynamic
from cgtwist.web import settings_form
from cgtwist.web.pages_settings import PAGES


class SettingsFormTests(unittest.TestCase):
    def test_every_field_round_trips_its_default(self) -> None:
        for page in PAGES.values():
            for _title, keys in page.groups:
                for key in keys:
                    spec = dynamic.SPECS[key]
                    if spec.secret:
                        continue
                    text = settings_form.shown(spec, spec.default)
                    form = {key: text} if settings_form.widget(spec) != "bool" or text else {}
                    value = settings_form.parse(spec, form, 10000)
                    self.assertEqual(value, spec.default, key)

    def test_wrong_text_is_refused_with_the_message(self) -> None:
        spec = dynamic.SPECS["smtp.max_recipients"]
        with self.assertRaises(settings_form.FieldError) as e:
            settings_form.parse(spec, {spec.name: "ten"}, 100)
        self.assertIn("smtp.max_recipients must be a whole number", str(e.exception))
        mode = dynamic.SPECS["protection.spf.mode"]
        with self.assertRaises(settings_form.FieldError):
            settings_form.parse(mode, {mode.name: "sometimes"}, 100)
        actions = dynamic.SPECS["protection.spf.actions"]
        with self.assertRaises(settings_form.FieldError):
            settings_form.parse(actions, {actions.name: '{"fail": "explode"}'}, 100)
        schedule = dynamic.SPECS["queue.retry_schedule"]
        self.assertEqual(
            settings_form.parse(schedule, {schedule.name: "60, 300,1800"}, 100), [60, 300, 1800]
        )
        with self.assertRaises(settings_form.FieldError):
            settings_form.parse(spec, {spec.name: "9" * 200}, 100)

    def test_widgets(self) -> None:
        kinds = {
            "smtp.restrict_sender": "bool",
            "smtp.max_recipients": "int",
            "protection.rbl.mode": "mode",
            "smtp.relayhost": "text",
            "protection.rbl.zones": "lines",
            "smtp.send_as": "textlist",
            "queue.retry_schedule": "numbers",
            "protection.spf.actions": "json",
            "smtp.relayhost_auth": "secret",
        }
        for key, kind in kinds.items():
            self.assertEqual(settings_form.widget(dynamic.SPECS[key]), kind, key)
