"""Rep constructors (T, Hom) and the rep-string parser used by the CLI.

Grammar (whitespace ignored)::

    sum     := term ('+' term)*
    term    := [INT ['*']] product            "5V0", "5*V0", "2*V**2" = 2 copies of V**2
    product := power (('*' | '@') power)*     tensor product, e.g. "V*V", "V@V"
    power   := atom ['**' INT]                tensor power (never dualised), e.g. "V**2"
    atom    := 'V' | 'V0' | 'Scalar' | 'T(' p [',' q] ')' | 'Hom(' sum ',' sum ')' | '(' sum ')'
             | atom '*'                       dual, only before '+', ')', ',', '**' or the end: "V*", "(V*)**2"

'⊗' may be written for '@' (a dual star may precede it) and '⊕' for '+', so a rep's repr parses back ("V*⊗V").

Examples: "5V0+5V", "5*V0+5*V", "V**2", "(V*)**2", "T(1,1)", "100V0+100V+20V**2", "Hom(V, V**2)".
"""
from __future__ import annotations

import re
from typing import List, Optional, Union

import numpy as np

from ..errors import RepError, RepParseError
from ..groups.base import Group
from .base import ProdRep, Rep, Scalar, SumRep, V, V0, Vdual

__all__ = ["T", "Hom", "parse_rep", "rep", "REP_GRAMMAR"]

REP_GRAMMAR = __doc__.split("Grammar (whitespace ignored)::", 1)[1].strip("\n")


def T(p: int, q: int = 0, group: Optional[Union[str, Group]] = None) -> Rep:
    """T(p, q) = V^(x)p (x) V*^(x)q; ``T(p, q)(G)`` binds it to G."""
    for v, name in ((p, "p"), (q, "q")):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise RepError(f"T(p, q) needs non-negative integers, got {name}={v!r}")
    p, q = int(p), int(q)
    factors = [V] * p + [Vdual] * q
    out = Scalar if not factors else ProdRep.of(factors)
    return out.bind(group) if group is not None else out


def Hom(rep_in: Rep, rep_out: Rep) -> Rep:
    """Linear maps rep_in -> rep_out: rep_out (x) rep_in*, flattened row-major as (out, in) like nn.Linear.weight."""
    if not isinstance(rep_in, Rep) or not isinstance(rep_out, Rep):
        raise RepError("Hom(rep_in, rep_out) needs two Rep objects (e.g. Hom(V(G), V(G)**2))")
    return ProdRep.of([rep_out, rep_in._dual()])


_TOKEN = re.compile(r"\s*(?:(\d+)|(V0|Scalar|Hom|V|T)|(\*\*)|([*@⊗+(),]))")


def _tokenize(text: str) -> List[str]:
    tokens, pos = [], 0
    text = text.strip().replace("⊕", "+")
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise _err(text, f"unexpected character {text[pos]!r} at position {pos}")
        tokens.append(next(g for g in m.groups() if g is not None))
        pos = m.end()
    return tokens


def _err(text: str, why: str) -> RepParseError:
    return RepParseError(f"cannot parse rep {text!r}: {why}.\nGrammar:\n{REP_GRAMMAR}")


class _Parser:
    def __init__(self, text: str):
        self.text, self.toks, self.i = text, _tokenize(text), 0

    def peek(self, k: int = 0) -> Optional[str]:
        j = self.i + k
        return self.toks[j] if j < len(self.toks) else None

    def take(self, expected: Optional[str] = None) -> str:
        tok = self.peek()
        if tok is None or (expected is not None and tok != expected):
            raise _err(self.text, f"expected {expected or 'more input'} but found {tok or 'the end'}")
        self.i += 1
        return tok

    def parse(self) -> Rep:
        if not self.toks:
            raise _err(self.text, "the string is empty")
        out = self.sum()
        if self.peek() is not None:
            raise _err(self.text, f"unexpected {self.peek()!r}")
        return out

    def sum(self) -> Rep:
        terms = [self.term()]
        while self.peek() == "+":
            self.take()
            terms.append(self.term())
        return SumRep.of([(t, 1) for t in terms])

    def term(self) -> Rep:
        mult = 1
        if self.peek() is not None and self.peek().isdigit():
            mult = int(self.take())
            if self.peek() == "*":
                self.take()
            if mult == 0:
                raise _err(self.text, "a multiplicity of 0 gives an empty term; drop the term instead")
        prod = self.product()
        return SumRep.of([(prod, mult)])

    def product(self) -> Rep:
        factors = [self.power()]
        while self.peek() in ("*", "@", "⊗"):
            op = self.take()
            if self.peek() is not None and self.peek().isdigit():
                raise _err(self.text, f"'{op}{self.peek()}' is ambiguous: write {self.peek()}*R for copies or R**{self.peek()} for a tensor power")
            factors.append(self.power())
        return ProdRep.of(factors)

    def power(self) -> Rep:
        base = self.atom()
        if self.peek() == "**":
            self.take()
            tok = self.peek()
            if tok is None or not tok.isdigit():
                raise _err(self.text, "'**' must be followed by an integer exponent, e.g. V**2")
            base = base ** int(self.take())
        return base

    def _dual_follows(self) -> bool:
        """A '*' is a dual marker when followed by the end, '+', ')', ',', '**', '⊗' (as in a repr) or another '*'."""
        return self.peek() == "*" and self.peek(1) in (None, "+", ")", ",", "**", "*", "⊗")

    def atom(self) -> Rep:
        tok = self.peek()
        if tok is None:
            raise _err(self.text, "the expression ends where a rep was expected")
        self.take()
        if tok == "V":
            out = V
        elif tok in ("V0", "Scalar"):
            out = V0
        elif tok == "T":
            self.take("(")
            p = int(self._int())
            q = 0
            if self.peek() == ",":
                self.take()
                q = int(self._int())
            self.take(")")
            out = T(p, q)
        elif tok == "Hom":
            self.take("(")
            a = self.sum()
            self.take(",")
            b = self.sum()
            self.take(")")
            out = Hom(a, b)
        elif tok == "(":
            out = self.sum()
            self.take(")")
        else:
            hint = ""
            if tok == "@" and self.i >= 2 and self.toks[self.i - 2] == "*":  # the token before '@' was a '*'
                hint = ("; a dual star directly before '@' is refused as ambiguous (V*@V: dual or product?): write "
                        "(V*)@V or V*⊗V")
            raise _err(self.text, f"unexpected {tok!r} where a rep (V, V0, T(p,q), Hom(a,b), (...)) was expected{hint}")
        while self._dual_follows():
            if self.peek(1) == "*":
                raise _err(self.text, "'**' after a dual star is ambiguous; write (V*)**2 or (V*)*V")
            self.take()
            out = out.T
        return out

    def _int(self) -> str:
        tok = self.peek()
        if tok is None or not tok.isdigit():
            raise _err(self.text, f"expected an integer but found {tok or 'the end'}")
        return self.take()


def parse_rep(text: str) -> Rep:
    """Parse a rep string into an unbound Rep (see REP_GRAMMAR)."""
    if isinstance(text, Rep):
        return text
    if not isinstance(text, str):
        raise RepParseError(f"a rep spec must be a string such as '5V0+5V', got {type(text).__name__}")
    try:
        return _Parser(text).parse()
    except RecursionError:
        raise RepParseError(f"rep spec nested too deeply ({text.count('(')} brackets in {len(text)} characters); "
                            "write it with fewer nested brackets") from None


def rep(spec: Union[str, Rep], group: Optional[Union[str, Group]] = None) -> Rep:
    """Build a rep from a string or Rep and bind it to ``group`` (Group or spec string) when given.

    >>> import softsym
    >>> softsym.rep("5V0+5V", "O(3)").size
    20
    """
    r = parse_rep(spec)
    return r.bind(group) if group is not None else r
