"""Shell command values: the one place in Keystone that builds shell strings.

Why this module exists
----------------------
Most shell-injection advisories in self-hosted PaaS tools come from a branch
name, repository URL, registry URL or env key pasted into an f-string that is
later run by a shell. Here a command is a *value* built from parts, and every
part is quoted when it is rendered, so no other module ever has to think about
quoting (pyinfra's ``QuoteString`` / ``MaskString``, Kamal's argument arrays).

* A plain ``str`` (or ``int`` / ``os.PathLike``) part is always passed through
  :func:`shlex.quote`: ``;id``, ``$(id)``, backticks, newlines, quotes and
  backslashes are inert data, never syntax.
* :class:`Secret` renders quoted in the real command and as ``***`` in the
  masked form. The masked form is what gets stored (a step's ``script``) and
  shown; :meth:`Command.secrets` lists the values so output and exception text
  can be scrubbed with :func:`redact`.
* :class:`Raw` is the only way to emit unquoted text and it accepts a small
  allowlist of operators written by Keystone code (``&&``, ``|``, ``>``,
  ``2>&1`` ...). It is never for user input and it raises on anything else.
* Composition (:func:`and_then`, :func:`or_else`, :func:`pipe`, :func:`seq`,
  ``a & b``, ``a | b``) groups operands with ``{ ...; }`` where sh precedence
  would otherwise change their meaning, :func:`env` prefixes validated
  ``NAME=value`` assignments and :func:`sh_c` wraps a whole command as one
  quoted ``sh -c`` argument. Masking works through any depth of nesting
  because every layer renders its children in the same mode (real or masked).

The module is pure: no I/O, no subprocess, no paramiko. ``str(command)`` is
the *masked* form on purpose, so an accidental log or f-string never leaks a
secret; the runnable string is only ever obtained by calling
:meth:`Command.render`, which the remote layer does.
"""

from __future__ import annotations

import os
import re
import shlex
from typing import Iterable, Mapping, Union

__all__ = [
    "MASK",
    "Secret",
    "Raw",
    "Command",
    "Part",
    "cmd",
    "concat",
    "and_then",
    "or_else",
    "pipe",
    "seq",
    "env",
    "sh_c",
    "end_of_options",
    "operand",
    "redact",
    "quote",
    "report_pgid_then",
    "ENV_NAME_RE",
    "docker_logs",
    "metrics_probe",
    "LOG_SINCE",
    "CONTAINER_NAME_RE",
]

MASK = "***"
"""What a secret looks like in masked commands and in redacted text."""

ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
"""Valid environment variable names: anything else would become shell syntax."""

# Control operators join commands; their sh precedence drives grouping.
# Lower number binds tighter: a | b && c ; d  ==  ((a | b) && c) ; d
_CONTROL_PRECEDENCE = {"|": 1, "&&": 2, "||": 2, ";": 3}

# Redirections and the end-of-options marker: safe fixed tokens.
_REDIRECTIONS = frozenset(
    {
        ">",
        ">>",
        "<",
        "2>",
        "2>>",
        "2>&1",
        "1>&2",
        ">&2",
        ">/dev/null",
        "2>/dev/null",
        "</dev/null",
        "--",
    }
)

RAW_ALLOWLIST = frozenset(_CONTROL_PRECEDENCE) | _REDIRECTIONS
"""Every text :class:`Raw` accepts. Extend it here, in review, never at a call site."""


def quote(value: str) -> str:
    """``shlex.quote`` that also refuses NUL, which no argv can carry."""
    if "\x00" in value:
        raise ValueError("shell arguments cannot contain NUL bytes")
    return shlex.quote(value)


class Secret:
    """A value that must never appear in a stored or displayed command.

    Rendered with :func:`shlex.quote` in :meth:`Command.render` and as ``***``
    in :meth:`Command.masked`. ``str()`` and ``repr()`` are masked too, so a
    Secret that slips into a log line or an f-string stays hidden. Read the
    value explicitly with :attr:`value`.
    """

    __slots__ = ("_value", "name")

    def __init__(self, value: str, name: str | None = None):
        if isinstance(value, Secret):
            value = value.value
        if not isinstance(value, str):
            raise TypeError(f"Secret value must be str, got {type(value).__name__}")
        if "\x00" in value:
            raise ValueError("shell arguments cannot contain NUL bytes")
        self._value = value
        self.name = name

    @property
    def value(self) -> str:
        return self._value

    def __str__(self) -> str:
        return MASK

    def __repr__(self) -> str:
        label = f"name={self.name!r}, " if self.name else ""
        return f"Secret({label}value={MASK})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value and other.name == self.name

    def __hash__(self) -> int:
        return hash((Secret, self._value, self.name))


class Raw:
    """A trusted, unquoted shell operator written by Keystone code.

    NEVER build a Raw from user input. To make that hard, only the texts in
    :data:`RAW_ALLOWLIST` are accepted: control operators (``&&``, ``||``,
    ``|``, ``;``), redirections (``>``, ``>>``, ``<``, ``2>&1`` ...) and
    ``--``. Redirection targets are ordinary (quoted) parts that follow:
    ``cmd("printf", "%s", data, Raw(">"), path)``.
    """

    __slots__ = ("text",)

    def __init__(self, text: str):
        if text not in RAW_ALLOWLIST:
            raise ValueError(
                f"Raw({text!r}) is not an allowed shell operator; allowed: "
                + " ".join(sorted(RAW_ALLOWLIST))
                + ". Pass data as a normal (quoted) part instead."
            )
        self.text = text

    def __repr__(self) -> str:
        return f"Raw({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Raw) and other.text == self.text

    def __hash__(self) -> int:
        return hash((Raw, self.text))


class _Trusted:
    """Unquoted text produced by this module itself (never by callers)."""

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Trusted) and other.text == self.text

    def __hash__(self) -> int:
        return hash((_Trusted, self.text))


class _Word:
    """One shell word made of several pieces, each quoted on its own.

    ``concat("--password=", Secret(p))`` renders ``--password='p w'`` and
    masks as ``--password=***``.
    """

    __slots__ = ("pieces",)

    def __init__(self, pieces: tuple):
        self.pieces = pieces

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Word) and other.pieces == self.pieces

    def __hash__(self) -> int:
        return hash((_Word, self.pieces))


class _Assign:
    """An env prefix ``NAME=value``; the name is validated, the value quoted."""

    __slots__ = ("name", "value")

    def __init__(self, name: str, value: "str | Secret"):
        if not isinstance(name, str) or not ENV_NAME_RE.fullmatch(name):
            raise ValueError(f"invalid environment variable name {name!r}: must match {ENV_NAME_RE.pattern}")
        self.name = name
        self.value = _coerce_scalar(value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Assign) and (other.name, other.value) == (self.name, self.value)

    def __hash__(self) -> int:
        return hash((_Assign, self.name, self.value))


class _Quoted:
    """A whole command rendered as ONE quoted word (the argument of ``sh -c``)."""

    __slots__ = ("command",)

    def __init__(self, command: "Command"):
        self.command = command

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Quoted) and other.command == self.command

    def __hash__(self) -> int:
        return hash((_Quoted, self.command))


class _Group:
    """``{ command; }``: keeps a compound operand's meaning inside a bigger list."""

    __slots__ = ("command",)

    def __init__(self, command: "Command"):
        self.command = command

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Group) and other.command == self.command

    def __hash__(self) -> int:
        return hash((_Group, self.command))


Part = Union[str, int, "os.PathLike[str]", Secret, Raw, "Command"]
_Token = Union[str, Secret, Raw, _Trusted, _Word, _Assign, _Quoted, _Group]


def _coerce_scalar(value: object) -> "str | Secret":
    if isinstance(value, Secret):
        return value
    if isinstance(value, bool) or value is None:
        # True/None almost always mean a caller bug; refuse rather than render "True".
        raise TypeError(f"cannot use {value!r} as a shell argument")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("shell arguments cannot contain NUL bytes")
        return value
    raise TypeError(f"cannot use {type(value).__name__} as a shell argument")


class Command:
    """An immutable shell command: a sequence of tokens rendered on demand.

    Build with :func:`cmd`; combine with the module helpers. ``render()`` is
    the string to execute, ``masked()`` the one to store and show,
    ``secrets()`` the values :func:`redact` must scrub from output.
    """

    __slots__ = ("_tokens",)

    def __init__(self, tokens: Iterable[_Token] = ()):
        self._tokens: tuple[_Token, ...] = tuple(tokens)
        if not self._tokens:
            raise ValueError("empty command")

    # -- rendering -------------------------------------------------------

    def render(self) -> str:
        """The real shell line, secrets included. Execute it; never store it."""
        return self._render(masked=False)

    def masked(self) -> str:
        """The shell line with every secret replaced by ``***``. Store and show this."""
        return self._render(masked=True)

    def secrets(self) -> list[str]:
        """Every secret value in this command (nested ones too), first-seen order."""
        seen: dict[str, None] = {}
        for secret in self._iter_secrets():
            seen.setdefault(secret.value, None)
        return list(seen)

    def _iter_secrets(self):
        for token in self._tokens:
            yield from _token_secrets(token)

    def _render(self, masked: bool) -> str:
        return " ".join(_render_token(t, masked) for t in self._tokens)

    # -- structure -------------------------------------------------------

    def _control_ops(self) -> set[str]:
        return {t.text for t in self._tokens if isinstance(t, Raw) and t.text in _CONTROL_PRECEDENCE}

    @property
    def is_simple(self) -> bool:
        """True when the command has no top-level control operator (``&&``, ``|`` ...)."""
        return not self._control_ops()

    def with_args(self, *parts: Part) -> "Command":
        """A copy with more (quoted) arguments appended; only for simple commands."""
        if not self.is_simple:
            raise ValueError("cannot append arguments to a compound command; compose it instead")
        return Command(self._tokens + _tokens_of(parts))

    # -- operators -------------------------------------------------------

    def __and__(self, other: "Command") -> "Command":
        """``a & b`` is ``a && b``."""
        if not isinstance(other, Command):
            return NotImplemented
        return and_then(self, other)

    def __or__(self, other: "Command") -> "Command":
        """``a | b`` is the pipeline ``a | b``."""
        if not isinstance(other, Command):
            return NotImplemented
        return pipe(self, other)

    # -- value semantics -------------------------------------------------

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Command) and other._tokens == self._tokens

    def __hash__(self) -> int:
        return hash((Command, self._tokens))

    def __str__(self) -> str:
        # Masked on purpose: str() ends up in logs and exception messages.
        return self.masked()

    def __repr__(self) -> str:
        return f"Command({self.masked()!r})"


def _token_secrets(token: _Token):
    if isinstance(token, Secret):
        yield token
    elif isinstance(token, _Word):
        for piece in token.pieces:
            yield from _token_secrets(piece)
    elif isinstance(token, _Assign):
        yield from _token_secrets(token.value)
    elif isinstance(token, (_Quoted, _Group)):
        yield from token.command._iter_secrets()


def _render_token(token: _Token, masked: bool) -> str:
    if isinstance(token, str):
        return quote(token)
    if isinstance(token, Secret):
        return MASK if masked else quote(token.value)
    if isinstance(token, (Raw, _Trusted)):
        return token.text
    if isinstance(token, _Word):
        return "".join(_render_token(p, masked) for p in token.pieces)
    if isinstance(token, _Assign):
        return token.name + "=" + _render_token(token.value, masked)
    if isinstance(token, _Quoted):
        # Quote the inner command rendered in the same mode, so a secret
        # nested at any depth is still *** in the masked form.
        return quote(token.command._render(masked))
    if isinstance(token, _Group):
        return "{ " + token.command._render(masked) + "; }"
    raise TypeError(f"unexpected token {token!r}")  # pragma: no cover


def _tokens_of(parts: Iterable[object]) -> tuple[_Token, ...]:
    tokens: list[_Token] = []
    for part in parts:
        if isinstance(part, Command):
            # Splicing a simple command as arguments is the natural way to
            # prefix it (setsid, timeout, docker exec ...); splicing a compound
            # one would silently change what runs, so refuse.
            if not part.is_simple:
                raise ValueError(
                    "cannot splice a compound command into arguments; use sh_c(command) "
                    "to pass it as one quoted argument"
                )
            tokens.extend(part._tokens)
        elif isinstance(part, (Raw, _Word, _Quoted, _Group, _Assign)):
            tokens.append(part)
        elif isinstance(part, (list, tuple)):
            tokens.extend(_tokens_of(part))
        else:
            tokens.append(_coerce_scalar(part))
    return tuple(tokens)


def cmd(*parts: Part) -> Command:
    """Build a command; every str part is one quoted argument.

    ``cmd("docker", "compose", "-f", path, "up", "-d")``. Lists/tuples are
    flattened, ``int`` and paths are converted, a simple :class:`Command`
    is spliced in place, ``None`` and ``bool`` are refused.
    """
    return Command(_tokens_of(parts))


def concat(*pieces: "str | int | os.PathLike[str] | Secret") -> _Word:
    """Several pieces glued into ONE shell word, each quoted separately.

    For ``--opt=value`` style arguments that mix a literal with a secret:
    ``cmd("tool", concat("--token=", Secret(t)))`` masks as ``--token=***``.
    """
    if not pieces:
        raise ValueError("concat() needs at least one piece")
    return _Word(tuple(_coerce_scalar(p) for p in pieces))


def end_of_options() -> Raw:
    """``--``: everything after it is an operand, even if it starts with ``-``.

    Use before values that could be read as options: a git ref, a path, a
    URL (``--upload-pack=...`` must not become an option of git).
    """
    return Raw("--")


def operand(value: str) -> str:
    """Return ``value`` unchanged, refusing one that starts with ``-``.

    For programs that do not understand ``--`` (or where it is awkward), this
    makes "argument read as an option" impossible instead of merely unlikely.
    """
    value = _coerce_scalar(value)
    if isinstance(value, Secret):
        raise TypeError("operand() takes a plain value")
    if value.startswith("-"):
        raise ValueError(f"{value!r} would be read as an option")
    return value


def _operand_for(op: str, command: Command) -> tuple[_Token, ...]:
    """Tokens of ``command`` as an operand of ``op``, grouped when needed."""
    if not isinstance(command, Command):
        raise TypeError(f"expected a Command, got {type(command).__name__}")
    prec = _CONTROL_PRECEDENCE[op]
    needs_group = any(
        _CONTROL_PRECEDENCE[inner] > prec or (_CONTROL_PRECEDENCE[inner] == prec and inner != op)
        for inner in command._control_ops()
    )
    if needs_group:
        return (_Group(command),)
    return command._tokens


def _join(op: str, commands: tuple[Command, ...]) -> Command:
    if len(commands) < 2:
        if len(commands) == 1:
            return commands[0]
        raise ValueError("nothing to compose")
    tokens: list[_Token] = []
    for i, command in enumerate(commands):
        if i:
            tokens.append(Raw(op))
        tokens.extend(_operand_for(op, command))
    return Command(tokens)


def and_then(*commands: Command) -> Command:
    """``a && b && ...``: each runs only if the previous one succeeded."""
    return _join("&&", commands)


def or_else(*commands: Command) -> Command:
    """``a || b || ...``: each runs only if the previous one failed."""
    return _join("||", commands)


def pipe(*commands: Command) -> Command:
    """``a | b | ...``: stdout of each feeds stdin of the next."""
    return _join("|", commands)


def seq(*commands: Command) -> Command:
    """``a ; b ; ...``: run each regardless of the previous exit code."""
    return _join(";", commands)


def env(command: Command, assignments: Mapping[str, "str | Secret"] | None = None, /, **kw: "str | Secret") -> Command:
    """Prefix ``NAME=value`` assignments: ``env(cmd("php", "artisan"), APP_ENV="production")``.

    Names are validated against :data:`ENV_NAME_RE` (an env key typed by a
    user must never become shell syntax); values are quoted and may be
    :class:`Secret`. A prefix assignment only applies to a simple command, so
    a compound command is wrapped in :func:`sh_c` to give all of it the
    variables.
    """
    items = dict(assignments or {})
    for key, value in kw.items():
        if key in items:
            raise ValueError(f"duplicate environment variable {key!r}")
        items[key] = value
    if not items:
        return command
    prefix = tuple(_Assign(name, value) for name, value in items.items())
    target = command if command.is_simple else sh_c(command)
    return Command(prefix + target._tokens)


def sh_c(command: Command, *, shell: str = "sh") -> Command:
    """``sh -c '<command>'``: the whole command as one quoted argument.

    For running a compound command where only one program is expected
    (``docker exec``, ``setsid``, an env prefix, a second SSH hop). Masking
    still works: the masked form quotes the inner *masked* text.
    """
    if not isinstance(command, Command):
        raise TypeError(f"expected a Command, got {type(command).__name__}")
    return Command((_coerce_scalar(shell), "-c", _Quoted(command)))


# Process wrapping and redaction (what the remote layer adds around every command) and the
# day-two command builders live beside this module; re-exported so callers keep importing
# them from app.shell.
from app.shell.process import redact, report_pgid_then  # noqa: E402
from app.shell.daytwo import (CONTAINER_NAME_RE, LOG_SINCE, docker_logs,  # noqa: E402
                              metrics_probe)
