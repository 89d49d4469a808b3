"""Collect the English sentences of the ``minilm`` task from docstrings of installed, BSD-licensed packages.

    python benchmarks/collect_sentences.py [--count 1500] [--out modelpress/tasks/data]

Writes ``sentences.txt`` (one sentence per line) and ``sentences.sources.tsv`` (per line of
``sentences.txt``: package, version and the file and object whose docstring held it). The output is
committed, so the task is the same on every machine; this script documents where it came from and
rebuilds it. It is deterministic for a given set of package versions: source files are read in sorted
order with ``ast`` (nothing is imported or run), and the selection orders candidates by a hash.

Kept: the prose before a docstring's first section (numpydoc ``Parameters``/``-----`` headers,
Google-style ``Args:``, reST directives, doctest prompts), split into sentences of 5 to 60 words that
start with a capital letter, end with a full stop, are ASCII, hold no URL and no code (backticks,
underscores, ``=``, brackets, ``name(``), and whose words are at least 85% plain words.
"""
from __future__ import annotations

import argparse
import ast
import hashlib
import importlib.metadata
import importlib.util
import re
from collections.abc import Iterator
from pathlib import Path

# (import name, distribution name): permissively licensed (BSD-3-Clause) packages with long prose docstrings.
PACKAGES = (("numpy", "numpy"), ("scipy", "scipy"), ("sklearn", "scikit-learn"), ("torch", "torch"),
            ("pandas", "pandas"), ("networkx", "networkx"), ("sympy", "sympy"))
LICENSE = "BSD-3-Clause"
MIN_WORDS, MAX_WORDS = 5, 60

SECTION = re.compile(r"^\s*(-{3,}|={3,}|\.\. |>>>|[A-Z][A-Za-z ]{1,30}:\s*$|:param|:return|@)")
SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
CODE = re.compile(r"[`_=<>\[\]{}|\\#@$~^*]|::|\w\(|\bself\b|\bnp\.|\bNone\b|\bTrue\b|\bFalse\b|\.\.\.")
URL = re.compile(r"https?:|www\.|\.(com|org|net|io|html)\b", re.IGNORECASE)
ABBREV = re.compile(r"\b(e\.g|i\.e|etc|vs|al|cf|resp|approx|Eq|Fig|Ref|No)\.?\s*$|\b(e\.g|i\.e|cf)\b", re.IGNORECASE)
WORD = re.compile(r"^\(?[A-Za-z][A-Za-z'-]*[.,;:!?)]*$")


def source_files(import_name: str) -> list[Path]:
    spec = importlib.util.find_spec(import_name)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"{import_name} is not installed: this script reads its source files.")
    root = Path(next(iter(spec.submodule_search_locations)))
    return sorted(p for p in root.rglob("*.py") if "tests" not in p.relative_to(root).parts)


def docstrings(path: Path, root: Path) -> Iterator[tuple[str, str]]:
    """(object, docstring) for the module, its classes and functions, in source order."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return
    rel = path.relative_to(root).as_posix()
    nodes = [tree, *(n for n in ast.walk(tree) if isinstance(n, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)))]
    nodes.sort(key=lambda n: getattr(n, "lineno", 0))
    for node in nodes:
        doc = ast.get_docstring(node, clean=True)
        if doc:
            yield f"{rel}:{getattr(node, 'name', '<module>')}", doc


def prose(doc: str) -> str:
    """The docstring's text before its first section, header or example, as one line."""
    lines = []
    for line in doc.splitlines():
        if SECTION.match(line):
            break
        lines.append(line.strip())
    return " ".join(" ".join(lines).split())


def is_sentence(s: str) -> bool:
    words = s.split()
    if not MIN_WORDS <= len(words) <= MAX_WORDS or not s.isascii() or not s[0].isupper() or not s.endswith("."):
        return False
    if CODE.search(s) or URL.search(s) or ABBREV.search(s) or s.count("(") != s.count(")") or '"' in s:
        return False
    return sum(bool(WORD.match(w)) for w in words) >= 0.85 * len(words)


def candidates(import_name: str) -> Iterator[tuple[str, str]]:
    """(sentence, object) pairs from one package, in sorted file order."""
    spec = importlib.util.find_spec(import_name)
    root = Path(next(iter(spec.submodule_search_locations))).parent  # type: ignore[union-attr]
    for path in source_files(import_name):
        for obj, doc in docstrings(path, root):
            for s in SPLIT.split(prose(doc)):
                if is_sentence(s):
                    yield s, obj


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def collect(count: int) -> list[tuple[str, str, str, str]]:
    """``count`` distinct sentences as (sentence, package, version, object), spread evenly over PACKAGES
    (a package with fewer gives the rest to the others) and ordered by hash, so no split of the list
    holds one package or one docstring."""
    seen: set[str] = set()
    pools: list[list[tuple[str, str, str, str]]] = []
    for import_name, dist in PACKAGES:
        version = importlib.metadata.version(dist)
        pool = []
        for s, obj in candidates(import_name):
            key = " ".join(s.lower().split())
            if key not in seen:
                seen.add(key)
                pool.append((s, dist, version, obj))
        pools.append(sorted(pool, key=lambda r: digest(r[0])))
    chosen: list[tuple[str, str, str, str]] = []
    left = count
    for i, pool in enumerate(sorted(pools, key=len)):  # smallest first: what they lack goes to the larger ones
        take = min(len(pool), left // (len(pools) - i))
        chosen += pool[:take]
        left -= take
    return sorted(chosen, key=lambda r: digest(r[0]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=1500)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "modelpress" / "tasks" / "data")
    args = p.parse_args()
    rows = collect(args.count)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sentences.txt").write_text("".join(f"{s}\n" for s, *_ in rows), encoding="utf-8")
    header = ("# Sources of sentences.txt, one row per line of it (same order). Collected by\n"
              "# benchmarks/collect_sentences.py from the docstrings of the packages below\n"
              f"# (all {LICENSE}); columns: line, package, version, file:object.\n")
    body = "".join(f"{i}\t{dist}\t{version}\t{obj}\n" for i, (_, dist, version, obj) in enumerate(rows, 1))
    (args.out / "sentences.sources.tsv").write_text(header + body, encoding="utf-8")
    per = {d: sum(r[1] == d for r in rows) for _, d in PACKAGES}
    print(f"{len(rows)} sentences -> {args.out}/sentences.txt; per package: {per}")


if __name__ == "__main__":
    main()
