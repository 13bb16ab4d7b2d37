"""Which tests cover the changed files, for the tester's prompt. Pure.

A heuristic on names, as test runners lay them out: a changed test file is
its own target; for `src/pkg/cache.py` the tests are files named
`test_cache.py`, `cache_test.py`, `cache.test.ts`, `cache.spec.js`,
`CacheTest.java` and the like anywhere in the repository.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable

_TEST_NAME = re.compile(r"(^test_.*|.*_test\.[^.]+$|.*\.(test|spec)\.[^.]+$|.*Tests?\.[^.]+$)")
_TEST_DIR = re.compile(r"(^|/)(tests?|__tests__|spec)/")


def is_test_file(path: str) -> bool:
    name = posixpath.basename(path)
    return bool(_TEST_NAME.match(name)) or (bool(_TEST_DIR.search(path)) and name.endswith(_CODE_EXTS))


_CODE_EXTS = (".py", ".js", ".ts", ".tsx", ".jsx", ".go", ".rs", ".rb", ".java", ".kt", ".c", ".cc", ".cpp",
              ".cs", ".php", ".swift", ".ex", ".exs", ".scala")


def _stem(path: str) -> str:
    name = posixpath.basename(path)
    return name.split(".", 1)[0]


def _test_stems(stem: str) -> set[str]:
    return {f"test_{stem}", f"{stem}_test", stem, f"{stem}Test", f"{stem}Tests", f"Test{stem}"}


def wanted_stems(changed: Iterable[str]) -> set[str]:
    """The file-name stems (the name up to its first dot) of the tests named after the changed
    code: `covering_tests` looks at no other tracked file."""
    wanted: set[str] = set()
    for path in changed:
        if not is_test_file(path) and path.endswith(_CODE_EXTS):
            wanted |= _test_stems(_stem(path))
    return wanted


def stem_globs(stems: Iterable[str]) -> list[str] | None:
    """Glob pathspecs (`:(glob)` magic) for the files anywhere whose stem is one of STEMS, for
    asking git only about those; None where the names cannot be told apart that way."""
    globs = []
    for stem in stems:
        if not stem:
            return None  # a dotfile's stem: every name that starts with a dot
        escaped = re.sub(r"([*?\[\]\\])", r"\\\1", stem)
        globs += [f":(glob)**/{escaped}", f":(glob)**/{escaped}.*"]
    return globs


def covering_tests(changed: Iterable[str], tracked: Iterable[str], limit: int = 50) -> list[str]:
    """Test files for the changed files: the changed tests first, then tests named after the code."""
    changed = list(changed)
    tests = [p for p in changed if is_test_file(p)]
    wanted: set[str] = set()
    for path in changed:
        if not is_test_file(path) and path.endswith(_CODE_EXTS):
            wanted |= _test_stems(_stem(path))
    for path in tracked:
        if path not in tests and is_test_file(path) and _stem(path) in wanted:
            tests.append(path)
    return tests[:limit]
