"""The hostile payload table: each entry is text (str) or raw bytes (sent as-is, so
invalid UTF-8 and lone surrogates reach the server undecoded)."""
from __future__ import annotations

LONG = ["a" * n for n in (63, 64, 255, 256, 1024, 65537)] + ["é" * 5000, "\U0001F600" * 3000]
NUL = ["\x00", "a\x00b", "name\x00", "\x00name", "%00", "\\0", "\\x00", "shop\x00.example.com"]
CONTROLS = ["\x1b[31mred", "\x07bell", "\x08back", "\x7f", "\x85", "\x9b", "\x0b", "\x0c",
            "\x1f", "a\tb", "\t"]
SURROGATES_AND_BYTES = [b"\xff", b"\xfe\xff", b"\xc3\x28", b"\xed\xa0\x80", b"a\xed\xbf\xbfb",
                        b"\xc0\xaf", b"\xe0\x80\xaf", b"\xf8\x88\x80\x80\x80", b"shop\xff",
                        b"\xf4\x90\x80\x80"]
LINE_BREAKS = ["a\nb", "a\r\nb", "name\n", "name\r", "\nname", "a\rb", "\r\n", "a\u2028b",
               "a\u2029b", "line1\nINJECTED=1", "x\r\nSet-Cookie: a=b"]
SHELL = ["; id", "$(id)", "`id`", "| cat /etc/passwd", "&& rm -rf /", "a'b", 'a"b', "a\\b",
         "*", "~", "!!", ">x", "<x", "a;b", "$IFS", "'$(reboot)'", "\"; reboot; \"",
         "x || true", "a&b", "(echo)"]
DASHES = ["-", "--", "--help", "-oProxyCommand=id", "--version", "-e x", "-rf", "--upload-pack=id"]
YAML = ["key: value", "- item", "{a: b}", "[1, 2]", "&anchor", "*alias",
        "!!python/object/apply:os.system ['id']", "---", "...", "? x", "|", ">", "# comment",
        "'", "yes", "no", "null", "~", "0x1F", "1e3", "on", "a: b\nc: d", "@at", "%TAG"]
CADDY = ["a.com {\nrespond x\n}", "}", "{", "import /etc/passwd", "{$HOME}", "{env.SECRET}",
         "reverse_proxy evil:80", "@m path /x", "a.com, b.com", "a.com b.com", "*.com",
         "http://evil.example", "a.com:443"]
COMPOSE = ["${X}", "$X", "$$", "$${X}", "${X:-default}", "${X?err}", "$", "\\$", "%s", "{{7*7}}",
           "{% raw %}", "${PWD}", "a$b", "$$$"]
TRAVERSAL = ["../../etc/passwd", "..", ".", "/etc/passwd", "..\\..\\win", "%2e%2e%2f",
             "a/../../b", "~/.ssh/id_rsa", "file:///etc/passwd", "/proc/self/environ"]
HTML = ["<script>alert(1)</script>", "\"><img src=x onerror=alert(1)>", "javascript:alert(1)",
        "<svg/onload=alert(1)>", "'-alert(1)-'", "</textarea><script>x</script>", "&lt;",
        "&#x3C;script&#x3E;", "<!--", "]]>"]
HOMOGLYPHS = ["shоp", "ѕhop", "ｓｈｏｐ", "shop\u200b", "\u202eevil", "\ufeffshop", "ﬁle", "Ⅷ",
              "١٢٣", "²", "ß", "İ", "e\u0301", "\U0001F600"]
NUMBERS = ["-1", "0", "9" * 30, "-" + "9" * 30, "1e309", "NaN", "inf", "0x10", "65536",
           "2147483648", "9223372036854775808", "-9223372036854775809", "1.5", "+1", " 1",
           "１", "00022", "1_000"]
WHITESPACE = [" ", "  x  ", "\u00a0", "\u3000", "", " \n "]
SQL = ["' OR 1=1 --", "1; DROP TABLE users", "\\'", "\" OR \"\"=\""]

PAYLOADS: list[str | bytes] = (LONG + NUL + CONTROLS + SURROGATES_AND_BYTES + LINE_BREAKS + SHELL
                               + DASHES + YAML + CADDY + COMPOSE + TRAVERSAL + HTML + HOMOGLYPHS
                               + NUMBERS + WHITESPACE + SQL)


def as_text(payload: str | bytes) -> str:
    """The text the server sees for a payload (bytes decoded as Werkzeug decodes forms)."""
    return payload.decode("utf-8", "replace") if isinstance(payload, bytes) else payload
