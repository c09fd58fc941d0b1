"""Pasting a .env (issue 17.5): python-dotenv's reading, interpolation that never reads
Keystone's own environment, the diff with secrets masked, and the export round trip."""
from __future__ import annotations

import os

import pytest

from app import dotenv_bulk as bulk

HOSTILE = r"""# comment line
export A="x y"
B='lit ${A} $HOME \' q'
C=${A}-z # inline comment
D="line1
line2 \"q\" back\\slash\ttab"
E=ünïcødé €
F="${NOPE:-dflt}"
G=
H="#hash"
"""


def test_hostile_values_are_read_as_laravel_reads_them():
    p = bulk.parse(HOSTILE)
    assert p.errors == []
    assert p.values == {"A": "x y", "B": "lit ${A} $HOME ' q", "C": "x y-z",
                        "D": 'line1\nline2 "q" back\\slash\ttab', "E": "ünïcødé €",
                        "F": "dflt", "G": "", "H": "#hash"}


def test_interpolation_never_reads_the_control_planes_environment(monkeypatch):
    monkeypatch.setenv("KS_CONTROL_PLANE_SECRET", "leak")
    p = bulk.parse('X="${KS_CONTROL_PLANE_SECRET}"\nY=${DB_HOST}:1\n', {"DB_HOST": "pg"})
    assert p.values == {"X": "", "Y": "pg:1"}
    assert os.environ["KS_CONTROL_PLANE_SECRET"] == "leak"


def test_bad_lines_are_named_without_their_values():
    p = bulk.parse("GOOD=1\n1BAD=secretvalue\nA-B=2\nNOEQUALS\n")
    assert p.values == {"GOOD": "1"}
    assert len(p.errors) == 3 and all("secretvalue" not in e for e in p.errors)
    assert p.errors[0].startswith("line 2:")


def test_too_large_or_not_text_is_refused():
    with pytest.raises(bulk.DotenvError):
        bulk.parse("A=" + "x" * bulk.MAX_PASTE)
    with pytest.raises(bulk.DotenvError):
        bulk.parse(None)


def test_diff_lists_added_changed_removed_and_masks_secrets():
    current = {"APP_NAME": "Shop", "STRIPE_SECRET": "sk_old", "OLD": "1", "SAME": "s"}
    p = bulk.parse("APP_NAME=Shop2\nSTRIPE_SECRET=sk_new\nMAIL_PASSWORD=pw\nNEW=n\nSAME=s\n")
    d = bulk.diff(current, {"STRIPE_SECRET"}, p, replace=True)
    kinds = {c.key: c.kind for c in d.changes}
    assert kinds == {"APP_NAME": "changed", "STRIPE_SECRET": "changed",
                     "MAIL_PASSWORD": "added", "NEW": "added", "SAME": "unchanged",
                     "OLD": "removed"}
    secret = next(c for c in d.changes if c.key == "STRIPE_SECRET")
    assert secret.shown(secret.old) == "***" and secret.shown(secret.new) == "***"
    mail = next(c for c in d.changes if c.key == "MAIL_PASSWORD")
    assert mail.secret and mail.shown(mail.new) == "***"        # secret by its name
    plain = next(c for c in d.changes if c.key == "APP_NAME")
    assert plain.shown(plain.new) == "Shop2"
    assert [c.key for c in bulk.diff(current, set(), p).of("removed")] == []   # merge mode


def test_reimporting_a_masked_export_keeps_secret_values():
    current = {"STRIPE_SECRET": "sk_live", "APP_NAME": "Shop"}
    text = bulk.render(current, {"STRIPE_SECRET"}, reveal=False)
    assert "sk_live" not in text and "STRIPE_SECRET=***" in text
    d = bulk.diff(current, {"STRIPE_SECRET"}, bulk.parse(text))
    assert not d.has_changes


def test_locked_managed_keys_are_refused():
    d = bulk.diff({}, set(), bulk.parse("DB_HOST=evil\n"), locked={"DB_HOST"})
    assert d.blocked == {"DB_HOST": "managed by an attachment and cannot be overridden"}
    assert d.changes == []


@pytest.mark.parametrize("value", ["plain", "", "with space", "it's", "back\\slash\\",
                                   "$HOME ${A} ${B:-c} $$", 'dq "x"', "multi\nline\r\n",
                                   "#hash", "ünï €", "tab\there", "'", "\\'"])
def test_export_reads_back_unchanged(value):
    text = bulk.render({"K": value}, set(), reveal=True)
    assert bulk.parse(text).values == {"K": value}


def test_fingerprint_binds_text_and_mode():
    a = bulk.fingerprint("k", "A=1", False)
    assert a == bulk.fingerprint("k", "A=1", False)
    assert a != bulk.fingerprint("k", "A=2", False) != bulk.fingerprint("k", "A=1", True)
