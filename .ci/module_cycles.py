#!/usr/bin/env python3
"""Fail when modules of one crate import each other in a cycle.

Layers should run one way: a module that others build on must not reach back up into them.
Two modules in a cycle can be neither read, tested nor moved without each other.

Nodes: the module files of each workspace crate (`src/a.rs`, `src/a/mod.rs`, `src/a/b.rs`),
found by following `mod x;` (and `#[path]`) from `src/lib.rs`, `src/main.rs` and
`src/bin/*.rs`; each of those roots is its own `crate`. Test code is neither a node nor an
edge: anything under `#[cfg(test)]`, inline `mod tests { ... }`, files named `*_tests.rs`.

Edges: module A -> module B when A names B, or an item B defines,
  - in `use` / `pub use` (grouped `{...}` forms at any depth) starting at `crate::`,
    `super::`, `self::`, a child module of A, or a name A imported;
  - in a path in code: `crate::a::b::f()`, `super::x::Y`, or `b::f()` after `use ..::b;`.
A path leads to the module that DEFINES the named item: when the item is only imported or
re-exported where the path points (`pub use b::X;` in `a`), the import is followed to its
source. So a child naming `super::X` that its parent re-exports from a sibling depends on
the sibling, not on the parent (the parent's own `pub use` is its edge to the sibling). A
path that ends at a module is an edge to that module. Not edges: `mod x;` (ownership is
not an import), a module naming itself, doc comments, strings. A parent that re-exports a
child's item while the child uses an item the parent defines IS a cycle: what the children
share belongs in a module of its own, below both.

Every strongly connected component of more than one module is printed with one example
line per edge inside it, and the exit status is 1; otherwise one summary line, status 0.
Usage: module_cycles.py [workspace root; default: the parent of this script's directory]
"""

import glob
import re
import sys
import tomllib
from itertools import accumulate
from pathlib import Path

ITEM = re.compile(r"\b(?:fn|struct|enum|trait|type|union|mod|static(?:\s+mut)?|const)\s+"
                  r"(?!fn\b|unsafe\b|async\b|extern\b)(?:r#)?(\w+)|\bmacro_rules!\s*(\w+)")
USE = re.compile(r"\buse\s+([^;]+);")
MOD = re.compile(r"\bmod\s+(?:r#)?(\w+)\s*;")
PATH_ATTR = re.compile(r"#\[\s*path\s*=\s*")
TEST_CFG = re.compile(r"#\[\s*cfg\s*\(\s*(?:test|all\s*\(\s*test\b[^\]]*)\)\s*\]|\bmod\s+tests\s*\{")
INLINE = re.compile(r"(?<![\w:])(?:\w+\s*::\s*)+\w+")
LITERAL = re.compile(r'//[^\n]*|/\*.*?\*/|(?<!\w)b?r(#*)".*?"\1|b?"(?:\\.|[^"\\])*"'
                     r"|b?'(?:\\(?:u\{[0-9a-fA-F]+\}|x[0-9a-fA-F]{2}|.)|[^\\'\n])'", re.S)
ROOT_FILES = ("lib.rs", "main.rs", "mod.rs")


def strip(src):
    """`src` with comments and literals blanked out; offsets and line numbers kept."""
    return LITERAL.sub(lambda m: re.sub(r"[^\n]", " ", m.group()), src)


def item_end(text, i):
    """The end of the item starting at `i`: after its `;` or its closing `}`."""
    depth = 0
    for j in range(i, len(text)):
        depth += (text[j] in "([{") - (text[j] in ")]}")
        if depth == 0 and text[j] in ";}":
            return j + 1
    return len(text)


def drop_tests(text):
    """`text` with test-only items blanked out."""
    while m := TEST_CFG.search(text):
        end = item_end(text, m.end() if m.group().startswith("#") else m.start())
        text = text[:m.start()] + re.sub(r"[^\n]", " ", text[m.start():end]) + text[end:]
    return text


def expand(tokens, pos, prefix):
    """Parses one use tree at `pos`: ([(segments, bound name or None for a glob)], next pos)."""
    segs, out = list(prefix), []
    while pos < len(tokens):
        tok = tokens[pos]
        if tok == "{":
            pos += 1
            while tokens[pos] != "}":
                found, pos = expand(tokens, pos, segs)
                out += found
                pos += tokens[pos] == ","
            return out, pos + 1
        if tok == "*":
            return [(segs, None)], pos + 1
        if tok != "::":
            segs.append(tok)
        pos += 1
        if tok != "::" and (pos >= len(tokens) or tokens[pos] != "::"):
            break
    alias = None
    if pos < len(tokens) and tokens[pos] == "as":
        alias, pos = tokens[pos + 1], pos + 2
    named = [s for s in segs if s != "self"] or segs
    return [(segs, alias or named[-1])], pos


class Module:
    def __init__(self, name, file, parent):
        self.name, self.file, self.parent = name, file, parent
        self.children, self.defs, self.imports, self.globs, self.refs = {}, set(), {}, [], []
        self.root = parent.root if parent else self


def load(name, file, parent, owns_dir, modules):
    """Reads `file` as module `name` and, through its `mod x;` lines, its descendants."""
    mod = Module(name, file, parent)
    modules.append(mod)
    src = file.read_text(encoding="utf-8")
    text = drop_tests(strip(src))
    line = lambda at: src.count("\n", 0, at) + 1
    depth = [0, *accumulate((c == "{") - (c == "}") for c in text)]
    for m in ITEM.finditer(text):
        if depth[m.start()] == 0:
            mod.defs.add(m.group(1) or m.group(2))
    for m in MOD.finditer(text):
        after_last_item = max(text.rfind(c, 0, m.start()) for c in ";{}") + 1
        path = PATH_ATTR.search(text, after_last_item, m.start())
        if path:
            child = file.parent / re.compile(r'"([^"]*)"').match(src, path.end()).group(1)
        else:
            base = file.parent if owns_dir else file.parent / file.stem
            child = base / f"{m.group(1)}.rs"
            child = child if child.exists() else base / m.group(1) / "mod.rs"
        if child.exists() and not child.name.endswith("_tests.rs"):
            mod.children[m.group(1)] = load(f"{name}::{m.group(1)}", child, mod,
                                            child.name in ROOT_FILES, modules)
    for m in USE.finditer(text):
        tokens = re.findall(r"::|[{},*]|\w+", m.group(1))
        for segs, bound in expand(tokens, 0, [])[0]:
            shown = "use " + "::".join(segs) + ("::*" if bound is None else "")
            mod.refs.append((segs, line(m.start()), shown))
            if bound is None:
                mod.globs.append(segs)
            elif bound != "_":
                mod.imports[bound] = segs
        text = text[:m.start()] + re.sub(r"[^\n]", " ", m.group()) + text[m.end():]
    for m in INLINE.finditer(text):
        segs = re.split(r"\s*::\s*", m.group())
        mod.refs.append((segs, line(m.start()), m.group()))
    return mod


def resolve(mod, segs, hops=0):
    """The module that defines what `segs` names, seen from `mod`; None if outside the crate."""
    if hops > 20 or not segs:
        return None
    first = segs[0]
    if first == "crate":
        return walk(mod.root, segs[1:], hops)
    if first in ("self", "super") or first in mod.children:
        return walk(mod, segs, hops)
    if first in mod.imports and mod.imports[first] != segs[:1]:
        return resolve(mod, mod.imports[first] + segs[1:], hops + 1)
    source = via_globs(mod, first, hops)
    return walk(source, segs, hops + 1) if source else None


def via_globs(mod, name, hops):
    """The module that `name` comes from through one of `mod`'s glob imports, if any."""
    for g in mod.globs:
        source = resolve(mod, g, hops + 1)
        if source and source is not mod and name in {*source.defs, *source.children,
                                                     *source.imports}:
            return source
    return None


def walk(mod, segs, hops):
    for i, seg in enumerate(segs):
        if seg == "super":
            mod = mod.parent or mod
        elif seg in mod.children:
            mod = mod.children[seg]
        elif seg in mod.defs:
            return mod
        elif seg in mod.imports:
            return resolve(mod, mod.imports[seg] + segs[i + 1:], hops + 1) or mod
        elif seg != "self":
            source = via_globs(mod, seg, hops)
            return walk(source, segs[i:], hops + 1) if source else mod
    return mod


def cycles(modules):
    """The strongly connected components of more than one module: modules that reach
    each other through their edges."""
    def reach(m):
        seen, todo = set(), [m]
        while todo:
            new = set(todo.pop().edges) - seen
            seen |= new
            todo += new
        return seen
    reached = {m: reach(m) for m in modules}
    found = []
    for m in modules:
        comp = sorted((t for t in reached[m] if m in reached[t]), key=lambda t: t.name)
        if len(comp) > 1 and comp not in found:
            found.append(comp)
    return found


def crate_modules(crate, root):
    """Every module of `crate`, each with `.edges`: {target module: example line}."""
    modules, src = [], crate / "src"
    roots = [("crate", src / "lib.rs"), ("main", src / "main.rs")]
    roots += [(f"bin::{p.stem}", p) for p in sorted(src.glob("bin/*.rs"))]
    roots += [(f"bin::{p.parent.name}", p) for p in sorted(src.glob("bin/*/main.rs"))]
    for name, file in roots:
        if file.exists():
            load(name, file, None, True, modules)
    for m in modules:
        m.edges = {}
        for segs, line, shown in m.refs:
            target = resolve(m, segs)
            if target is not None and target is not m and target not in m.edges:
                m.edges[target] = f"{m.file.relative_to(root)}:{line}: {shown}"
    return modules


def main():
    root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent.parent).resolve()
    members = tomllib.loads((root / "Cargo.toml").read_text())["workspace"]["members"]
    crates = sorted({Path(p) for pat in members for p in glob.glob(str(root / pat))
                     if (Path(p) / "Cargo.toml").exists() and (Path(p) / "src").is_dir()})
    total = bad = 0
    for crate in crates:
        modules = crate_modules(crate, root)
        found = cycles(modules)
        total, bad = total + len(modules), bad + len(found)
        print(f"{crate.name}: {len(modules)} modules, import cycles: {len(found)}")
        for comp in found:
            print("  cycle: " + ", ".join(m.name for m in comp))
            for m in comp:
                for t in sorted((t for t in m.edges if t in comp), key=lambda t: t.name):
                    print(f"    {m.name} -> {t.name}   {m.edges[t]}")
    if bad:
        print(f"{bad} module import cycles in {total} modules across {len(crates)} crates")
        return 1
    print(f"no module import cycles in {total} modules across {len(crates)} crates")
    return 0


if __name__ == "__main__":
    sys.exit(main())
