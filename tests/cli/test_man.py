"""Every option that a tool's --help prints is documented in its man page; the pages are well formed."""
import os
import re
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from mdxtest import SOURCE, run  # noqa: E402

TOOLS = sorted(f[:-4] for f in os.listdir(os.path.join(SOURCE, "cmd")) if f.endswith(".cpp"))


def help_options(tool):
    r = run(tool, "--help")
    assert r.returncode == 0, r.stderr
    opts = set()
    for line in r.stdout.splitlines():
        m = re.match(r"^\s+(-[^\s]+)", line)
        if m:
            opts.update(o for o in m.group(1).split(",") if o.startswith("-"))
    return opts


def man_text(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    text = re.sub(r"\\f(\[[A-Z]*\]|[BIRP])", "", text)
    return text.replace("\\-", "-").replace("\\(em", "-")


class ManPages(unittest.TestCase):
    def test_every_tool_has_a_page_with_every_option(self):
        self.assertGreaterEqual(len(TOOLS), 3)
        for tool in TOOLS:
            with self.subTest(tool=tool):
                page = os.path.join(SOURCE, "man", "man1", tool + ".1")
                self.assertTrue(os.path.exists(page), f"{page} is missing")
                text = man_text(page)
                opts = help_options(tool)
                self.assertIn("--help", opts)
                missing = [o for o in sorted(opts) if not re.search(r"(?<![\w-])" + re.escape(o) + r"(?![\w-])", text)]
                self.assertEqual(missing, [], f"{tool}: options in --help but not in {page}")
                for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "EXIT STATUS", "EXAMPLES", "SEE ALSO"):
                    self.assertRegex(text, r"\.SH \"?" + section, f"{page} lacks {section}")

    def test_pages_render_without_warnings(self):
        pages = [os.path.join(SOURCE, "man", "man1", t + ".1") for t in TOOLS]
        pages.append(os.path.join(SOURCE, "man", "man7", "mdx.7"))
        for page in pages:
            with self.subTest(page=page):
                self.assertTrue(os.path.exists(page))
                r = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", page], capture_output=True, text=True)
                self.assertEqual(r.stderr.strip(), "", r.stderr)


if __name__ == "__main__":
    unittest.main()
