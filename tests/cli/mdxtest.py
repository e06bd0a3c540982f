"""Shared helpers of the CLI tests: run a built tool, check its error conventions."""
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

# The tests compare against float64 references: float32 unless a test asks for bf16 (auto would
# take bf16 on CPUs with AVX512-BF16 or AMX, as CI's may be).
os.environ.setdefault("MDX_PRECISION", "fp32")
BIN = os.environ.get("MDX_BIN", os.path.join(os.path.dirname(__file__), "..", "..", "build"))
SOURCE = os.environ.get("MDX_SOURCE", os.path.join(os.path.dirname(__file__), "..", ".."))
FMNIST = "/usr/share/datasets/fashion-mnist"


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def write_bytes(path, data):
    with open(path, "wb") as f:
        f.write(data)


def metrics(path):
    """The lines of a training tool's metrics log (JSON lines)."""
    with open(path) as f:
        return [json.loads(line) for line in f]


def tool(name):
    return os.path.join(BIN, name)


def run(name, *args, **kw):
    return subprocess.run([tool(name), *map(str, args)], capture_output=True, text=True, **kw)


class ToolTest(unittest.TestCase):
    """A test case with a scratch directory per test, and one per class (`cls.shared`)."""

    @classmethod
    def setUpClass(cls):
        cls.shared = tempfile.mkdtemp(prefix="mdx-cli-class-")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.shared, ignore_errors=True)

    @classmethod
    def fmnist_table(cls, limit, labels=True):
        """The first `limit` Fashion-MNIST test images as a table in the class's directory."""
        table = os.path.join(cls.shared, f"fmnist-{limit}.h5")
        extra = ["--labels", f"{FMNIST}/t10k-labels-idx1-ubyte.gz"] if labels else []
        r = run("mdx-tokenize", "-q", f"{FMNIST}/t10k-images-idx3-ubyte.gz", *extra, "--limit", limit, "-o", table)
        assert r.returncode == 0, r.stderr
        return table

    @classmethod
    def pca_table(cls, table, dim, patch=4):
        """A PCA tokenizer of `table` in the class's directory."""
        pca = os.path.join(cls.shared, f"pca-{dim}.h5")
        r = run("mdx-pca-fit", "-q", table, "--patch", patch, "--dim", dim, "-o", pca)
        assert r.returncode == 0, r.stderr
        return pca

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="mdx-cli-")

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    def ok(self, name, *args):
        r = run(name, *args)
        self.assertEqual(r.returncode, 0, f"{name} {args} failed:\n{r.stderr}")
        return r

    def fails(self, name, *args, code=1, contains=()):
        """The tool exits `code` with exactly one line `name: error: ...` on stderr."""
        r = run(name, "--quiet", *args)
        self.assertEqual(r.returncode, code, f"{name} {args}: exit {r.returncode}, stderr:\n{r.stderr}")
        lines = [l for l in r.stderr.splitlines() if l.strip()]
        if code == 1:
            self.assertEqual(len(lines), 1, f"expected one error line, got:\n{r.stderr}")
        self.assertTrue(lines[0].startswith(f"{name}: error: "), r.stderr)
        for c in contains:
            self.assertIn(c, r.stderr)
        return r

    def interrupt(self, name, args, log, lines):
        """Runs tool `name` with `args` until its metrics log `log` holds `lines` lines, then sends
        SIGTERM: the tool must checkpoint and exit 75. Returns its standard error."""
        p = subprocess.Popen([tool(name), *map(str, args)], stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 120
        while time.time() < deadline and not (os.path.exists(log) and len(metrics(log)) >= lines):
            time.sleep(0.05)
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=120)
        self.assertEqual(p.returncode, 75, err)
        return err

    def assertNoOutput(self, path):
        self.assertFalse(os.path.exists(path), f"{path} was left behind")
        d = os.path.dirname(path) or "."
        temps = [f for f in os.listdir(d) if ".tmp" in f]
        self.assertEqual(temps, [], f"temporary files left behind: {temps}")
