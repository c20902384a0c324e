"""Tests for the ``crossentropy`` command (crossentropy.cli).

Each subcommand is run through ``main([...])`` and its printed numbers are
checked against an independent oracle: PyTorch in float64 for the losses,
SciPy or a naive float64 NumPy formula for entropies, calibration and
accuracies.  The demo's hand-written chain rules are checked against central
finite differences, and an end-to-end test runs the installed console script.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import crossentropy as ce
from crossentropy.cli import demo, evaluate, main, readers
from crossentropy.cli._progress import Progress
from tests.support import finite_difference, torch_grad, torch_oracle

scipy_stats = pytest.importorskip("scipy.stats")

COMMANDS = ("demo", "explain", "entropy", "kl", "ce", "eval")


def run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


# -- the command itself -------------------------------------------------------------------


class TestMain:
    def test_version(self, capsys):
        code, out, _ = run(capsys, "--version")
        assert code == 0
        assert out.strip() == f"crossentropy {ce.__version__}"

    @pytest.mark.parametrize("command", COMMANDS)
    def test_help_has_an_example(self, capsys, command):
        code, out, _ = run(capsys, command, "--help")
        assert code == 0
        assert out.startswith(f"usage: crossentropy {command}")
        examples = out.split("examples:")[1]
        assert f"crossentropy {command}" in examples

    def test_top_level_help_lists_every_command(self, capsys):
        code, out, _ = run(capsys, "--help")
        assert code == 0
        for command in COMMANDS:
            assert re.search(rf"^\s+{command}\s", out, re.M), command

    @pytest.mark.parametrize(
        "argv, message",
        [
            ([], "required: COMMAND"),
            (["nope"], "invalid choice: 'nope'"),
            (["entropy", "0.5", "0.5", "--bogus"], "unrecognized arguments: --bogus"),
            (["explain", "--logits", "1", "2"], "required: --target"),
        ],
    )
    def test_usage_errors_exit_2(self, capsys, argv, message):
        code, out, err = run(capsys, *argv)
        assert code == 2
        assert message in err
        assert out == ""

    def test_unexpected_error_is_one_line_not_a_traceback(self, capsys, monkeypatch):
        def boom(*args, **kwargs):
            raise RuntimeError("disk on fire")

        monkeypatch.delenv("CROSSENTROPY_DEBUG", raising=False)
        monkeypatch.setattr(evaluate, "read_targets", boom)
        code, _, err = run(capsys, "eval", "a.npy", "b.npy")
        assert code == 1
        assert err == "crossentropy eval: error: RuntimeError: disk on fire\n"

    def test_console_script_end_to_end(self):
        script = shutil.which("crossentropy") or str(Path(sys.executable).parent / "crossentropy")
        assert Path(script).exists(), "the console script is not installed: pip install -e ."
        res = subprocess.run(
            [script, "entropy", "0.1", "0.1", "0.1", "0.7", "--base", "2"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert res.returncode == 0, res.stderr
        expected = -sum(p * math.log2(p) for p in (0.1, 0.1, 0.1, 0.7))
        assert res.stdout == f"H(P) = {expected:.4f} bits\n"
        bad = subprocess.run(
            [script, "kl", "0.5", "0.6", "--", "0.5", "0.5"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert bad.returncode == 1
        assert bad.stderr.startswith("crossentropy kl: error: P sums to 1.1")

    def test_python_dash_m_without_heavy_imports(self):
        code = (
            "import sys, runpy; sys.argv = ['crossentropy', 'ce', '0', '1', '--', '0.5', '0.5'];"
            "\ntry:\n    runpy.run_module('crossentropy', run_name='__main__')\n"
            "except SystemExit as e:\n    assert e.code == 0, e.code\n"
            "heavy = [m for m in ('sklearn', 'matplotlib', 'torch', 'jax') if m in sys.modules]\n"
            "assert not heavy, heavy"
        )
        res = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
        )
        assert res.returncode == 0, res.stderr
        assert res.stdout.splitlines()[0] == f"H(P, Q) = {math.log(2):.4f} nats"


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


class TestProgress:
    def test_nothing_off_a_terminal(self):
        buf = io.StringIO()  # a file or a pipe: logs keep only the results
        with Progress(5, "train", unit="epochs", stream=buf) as bar:
            for i in range(5):
                bar.update(1, loss=1.0 / (i + 1))
        assert buf.getvalue() == ""

    def test_terminal_redraws_in_place(self):
        buf = _Tty()
        with Progress(4, "eval", stream=buf) as bar:
            bar.update(2)
        text = buf.getvalue()
        assert text.startswith("\reval [" + "#" * 12 + "." * 12 + "] 2/4")
        assert text.endswith("\n")
        assert text.count("\r") == 2  # drawn once, then the final state on close

    def test_disabled_writes_nothing(self):
        buf = _Tty()
        with Progress(3, "x", stream=buf, enabled=False) as bar:
            bar.update(3)
        assert buf.getvalue() == ""


# -- explain --------------------------------------------------------------------------------


def _sections(out: str) -> list[np.ndarray]:
    """The numeric table of each 'row i:' section: one array row per class."""
    sections: list[list[list[float]]] = []
    for line in out.splitlines():
        if re.match(r"row \d+: target class \d+", line):
            sections.append([])
            continue
        tokens = line.split()
        if sections and tokens and tokens[0].isdigit() and len(tokens) > 1:
            numbers = [float(t) for t in tokens[1:] if t != "<-" and t != "target"]
            sections[-1].append(numbers)
    return [np.array(s) for s in sections]


def _library_value(out: str) -> float:
    m = re.search(r"^crossentropy\.cross_entropy\(.*\)(?: / ln\(\S+\))? = (\S+)$", out, re.M)
    assert m, out
    return float(m.group(1))


def _softmax(x: np.ndarray) -> np.ndarray:
    return torch_oracle("softmax", x, dim=1)


class TestExplain:
    def test_seed_example_step_by_step(self, capsys):
        x = np.array([[2.0, 1.0, 0.1]])
        code, out, err = run(capsys, "explain", "--logits", "2.0", "1.0", "0.1", "--target", "0")
        assert code == 0 and err == ""
        (table,) = _sections(out)
        p = _softmax(x)[0]
        _, grad = torch_grad("cross_entropy", 0, x, np.array([0]), reduction="sum")
        expected = np.column_stack([x[0], x[0] - 2.0, np.exp(x[0] - 2.0), p, np.log(p), grad[0]])
        np.testing.assert_allclose(table, expected, atol=6e-5)
        loss = torch_oracle("cross_entropy", x, np.array([0]))
        assert _library_value(out) == pytest.approx(float(loss), abs=6e-5)
        assert f"loss = -log p[0] = {float(loss):.4f} nats" in out
        # the seed's softmax of [2, 1, 0.1], rounded as the seeds print it
        np.testing.assert_allclose(table[:, 3], [0.659, 0.2424, 0.0986], atol=1e-4)

    @pytest.mark.parametrize(
        "extra, kw",
        [
            ([], {}),
            (["--label-smoothing", "0.2"], {"label_smoothing": 0.2}),
            (["--weight", "1", "3", "0.5"], {"weight": np.array([1.0, 3.0, 0.5])}),
            (
                ["--weight", "2", "1", "1", "--label-smoothing", "0.1"],
                {"weight": np.array([2.0, 1.0, 1.0]), "label_smoothing": 0.1},
            ),
            (["--reduction", "sum"], {"reduction": "sum"}),
        ],
        ids=["plain", "smoothing", "weight", "weight+smoothing", "sum"],
    )
    def test_several_rows_match_torch(self, capsys, extra, kw):
        x = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3], [-1.0, 0.0, 4.0]])
        y = np.array([0, 1, 0])
        argv = [
            "explain",
            "--logits",
            "2",
            "1",
            "0.1",
            "/",
            "0.5",
            "2.5",
            "0.3",
            "/",
            "-1",
            "0",
            "4",
        ]
        code, out, _ = run(capsys, *argv, "--target", "0", "1", "0", *extra)
        assert code == 0
        expected = torch_oracle("cross_entropy", x, y, **kw)
        assert _library_value(out) == pytest.approx(float(expected), abs=6e-5)
        tables = _sections(out)
        assert len(tables) == 3
        row_kw = {k: v for k, v in kw.items() if k != "reduction"}
        _, grad = torch_grad("cross_entropy", 0, x, y, reduction="none", **row_kw)
        for table, g in zip(tables, grad):
            np.testing.assert_allclose(table[:, -1], g, atol=6e-5)  # the last column
        if "label_smoothing" in kw:
            eps = kw["label_smoothing"]
            np.testing.assert_allclose(
                tables[2][:, 5], [eps / 3 + (1 - eps), eps / 3, eps / 3], atol=6e-5
            )

    def test_reduction_none_lists_the_row_losses(self, capsys):
        x = np.array([[2.0, 1.0, 0.1], [0.0, 0.0, 3.0]])
        y = np.array([0, 2])
        code, out, _ = run(
            capsys,
            "explain",
            "--logits",
            "2 1 0.1",
            "/",
            "0 0 3",
            "--target",
            "0",
            "2",
            "--reduction",
            "none",
        )
        assert code == 0
        line = out.strip().splitlines()[-1]
        values = [float(v) for v in re.findall(r"-?\d+\.\d+", line.split("=")[-1])]
        np.testing.assert_allclose(
            values, torch_oracle("cross_entropy", x, y, reduction="none"), atol=6e-5
        )

    def test_base_2_gives_bits(self, capsys):
        x = np.array([[2.0, 1.0, 0.1]])
        code, out, _ = run(
            capsys, "explain", "--logits", "2", "1", "0.1", "--target", "1", "--base", "2"
        )
        assert code == 0
        bits = float(torch_oracle("cross_entropy", x, np.array([1]))) / math.log(2)
        assert _library_value(out) == pytest.approx(bits, abs=6e-5)
        (table,) = _sections(out)
        np.testing.assert_allclose(table[:, 4], np.log2(_softmax(x)[0]), atol=6e-5)
        assert "bits" in out

    def test_probs_input(self, capsys):
        q = np.array([0.1, 0.1, 0.8])  # the seed's cat/dog/horse
        code, out, err = run(capsys, "explain", "--probs", "0.1", "0.1", "0.8", "--target", "2")
        assert code == 0 and err == ""
        assert _library_value(out) == pytest.approx(-math.log(0.8), abs=6e-5)
        (table,) = _sections(out)
        np.testing.assert_allclose(table[:, 0], q)
        np.testing.assert_allclose(table[:, 1], np.log(q), atol=6e-5)
        np.testing.assert_allclose(table[:, 2], q - np.eye(3)[2], atol=6e-5)

    def test_log_probs_input_matches_nll_loss(self, capsys):
        lp = np.log(np.array([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]]))
        y = np.array([2, 0])
        tokens = [f"{v:.10f}" for v in lp[0]] + ["/"] + [f"{v:.10f}" for v in lp[1]]
        code, out, _ = run(capsys, "explain", "--log-probs", *tokens, "--target", "2", "0")
        assert code == 0
        assert _library_value(out) == pytest.approx(
            float(torch_oracle("nll_loss", lp, y)), abs=6e-5
        )
        tables = _sections(out)
        np.testing.assert_allclose(tables[1][:, 1], np.exp(lp[1]), atol=6e-5)

    def test_rows_and_targets_from_files(self, capsys, tmp_path):
        x = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3]])
        np.savetxt(tmp_path / "x.csv", x, delimiter=",")
        (tmp_path / "y.txt").write_text("0\n1\n")
        code, out, _ = run(
            capsys, "explain", "--logits", tmp_path / "x.csv", "--target", tmp_path / "y.txt"
        )
        assert code == 0
        expected = torch_oracle("cross_entropy", x, np.array([0, 1]))
        assert _library_value(out) == pytest.approx(float(expected), abs=6e-5)

    def test_warns_when_logits_look_like_probabilities(self, capsys):
        code, out, err = run(capsys, "explain", "--logits", "0.1", "0.1", "0.8", "--target", "2")
        assert code == 0
        assert err.startswith("warning: every row of --logits lies in [0, 1] and sums to 1")
        floor = math.log(math.e + 2) - 1  # the best loss with logits in [0, 1], C = 3
        assert f"log(e + 2) - 1 = {floor:.4f}" in err
        assert f"use --probs: row 0's loss would be -log 0.8 = {-math.log(0.8):.4f} nats" in err
        # the table still shows what cross_entropy computes on those numbers
        loss = torch_oracle("cross_entropy", np.array([[0.1, 0.1, 0.8]]), np.array([2]))
        assert _library_value(out) == pytest.approx(float(loss), abs=6e-5)
        assert float(loss) > floor

    @pytest.mark.parametrize(
        "row", [["2", "1", "0.1"], ["0.2", "0.3", "0.4"], ["0.5", "0.5", "-0.0001"]]
    )
    def test_no_warning_for_real_logits(self, capsys, row):
        code, _, err = run(capsys, "explain", "--logits", *row, "--target", "0")
        assert code == 0 and err == ""

    @pytest.mark.parametrize(
        "argv, code, message",
        [
            (
                ["--logits", "1", "2", "--target", "2"],
                1,
                "--target: class 2 (row 0) is out of range for 2 classes",
            ),
            (
                ["--logits", "1", "2", "--target", "0", "1"],
                2,
                "--target: got 2 target(s) for 1 row(s)",
            ),
            (["--logits", "1", "2", "/", "3", "--target", "0", "0"], 2, "rows of lengths [2, 1]"),
            (["--logits", "1", "abc", "--target", "0"], 2, "--logits: 'abc' is not a number"),
            (
                ["--logits", "1", "2", "--target", "0", "--weight", "1"],
                2,
                "--weight: got 1 weight(s) for 2 classes",
            ),
            (
                ["--logits", "1", "2", "--target", "0", "--label-smoothing", "1.5"],
                2,
                "--label-smoothing must be in [0, 1], got 1.5",
            ),
            (["--probs", "0.5", "0.6", "--target", "0"], 1, "--probs: row 0 sums to 1.1, not 1"),
            (
                ["--probs", "1.2", "-0.2", "--target", "0"],
                1,
                "--probs: entry 1.2 (row 0, class 0) is not in [0, 1]",
            ),
            (
                ["--log-probs", "0.5", "-1", "--target", "0"],
                1,
                "--log-probs: entry 0.5 (row 0, class 0) is not <= 0",
            ),
            (["--logits", "1", "nan", "--target", "0"], 1, "--logits: row 0 contains NaN"),
            (
                ["--logits", "missing.csv", "--target", "0"],
                1,
                "--logits: 'missing.csv' is neither a list of numbers nor a file",
            ),
        ],
    )
    def test_errors(self, capsys, argv, code, message):
        got, out, err = run(capsys, "explain", *argv)
        assert got == code
        assert err.startswith("crossentropy explain: error: ")
        assert message in err
        assert out == ""


# -- entropy / kl / ce ----------------------------------------------------------------------


def _number(line: str) -> float:
    return float(re.search(r"= (\S+) (?:nats|bits)", line).group(1))


class TestDist:
    @pytest.mark.parametrize(
        "p",
        [[0.25, 0.25, 0.25, 0.25], [0.1, 0.1, 0.1, 0.7], [0.001, 0.001, 0.001, 0.999]],
        ids=["uniform", "lottery", "extreme"],
    )
    def test_entropy_seed_lottery_in_bits(self, capsys, p):
        code, out, err = run(capsys, "entropy", *map(str, p), "--base", "2")
        assert code == 0
        expected = -sum(v * math.log2(v) for v in p)  # used as given, as the seed computes it
        assert _number(out) == pytest.approx(expected, abs=6e-5)
        # the extreme vector sums to 1.002: accepted, with a note
        assert ("sums to 1.002" in err) == (p[-1] == 0.999)

    def test_the_seeds_numbers(self, capsys):
        code, out, _ = run(capsys, "entropy", "0.1", "0.1", "0.1", "0.7", "--base", "2")
        assert code == 0 and out == "H(P) = 1.3568 bits\n"

    def test_several_vectors_and_nats(self, capsys, rng):
        ps = rng.dirichlet(np.ones(5), size=3)
        tokens = " / ".join(" ".join(f"{v:.12f}" for v in p) for p in ps).split()
        code, out, _ = run(capsys, "entropy", *tokens)
        assert code == 0
        values = [_number(line) for line in out.splitlines()]
        np.testing.assert_allclose(values, scipy_stats.entropy(ps, axis=1), atol=6e-5)

    def test_normalize(self, capsys):
        code, out, _ = run(capsys, "entropy", "3", "1", "--normalize", "--digits", "6")
        assert code == 0
        assert _number(out) == pytest.approx(scipy_stats.entropy([0.75, 0.25]), abs=6e-7)

    @pytest.mark.parametrize("sep", ["--", "/"])
    @pytest.mark.parametrize("base", [None, 2.0])
    def test_kl_and_ce(self, capsys, rng, sep, base):
        p, q = rng.dirichlet(np.ones(4), size=2)
        P, Q = [f"{v:.12f}" for v in p], [f"{v:.12f}" for v in q]
        extra = [] if base is None else ["--base", str(base)]
        kl = scipy_stats.entropy(p, q, base=base)
        h_p = scipy_stats.entropy(p, base=base)
        code, out, _ = run(capsys, "kl", *P, sep, *Q, *extra)
        assert code == 0
        first, second = out.splitlines()
        assert _number(first) == pytest.approx(kl, abs=6e-5)
        h_pq, h = map(float, re.findall(r"-?\d+\.\d+", second))
        assert h_pq == pytest.approx(kl + h_p, abs=6e-5) and h == pytest.approx(h_p, abs=6e-5)
        code, out, _ = run(capsys, "ce", *P, sep, *Q, *extra)
        assert code == 0
        assert _number(out.splitlines()[0]) == pytest.approx(kl + h_p, abs=6e-5)

    def test_ce_seed_examples(self, capsys):
        code, out, _ = run(
            capsys, "ce", "1", "0", "0", "0", "0", "--", "0.4", "0.3", "0.05", "0.05", "0.2"
        )
        assert code == 0 and _number(out) == pytest.approx(-math.log(0.4), abs=6e-5)
        code, out, _ = run(capsys, "ce", "0", "0", "1", "--", "0.1", "0.1", "0.8")
        assert code == 0 and _number(out) == pytest.approx(-math.log(0.8), abs=6e-5)

    def test_kl_infinite_when_q_misses_support(self, capsys):
        code, out, err = run(capsys, "kl", "0.5", "0.5", "--", "1", "0")
        assert code == 0
        assert out.startswith("KL(P || Q) = inf nats")
        assert "Q gives probability 0 to outcome 1" in err

    @pytest.mark.parametrize(
        "argv, code, message",
        [
            (
                ["entropy", "0.5", "-0.1", "0.6"],
                1,
                "P has a negative entry -0.1 at index 1; probabilities must be >= 0",
            ),
            (["entropy", "0.5", "0.6"], 1, "P sums to 1.1, not 1; pass --normalize"),
            (["entropy", "0", "0", "--normalize"], 1, "P sums to 0 and cannot be normalised"),
            (["entropy", "0.5", "0.5", "--base", "1"], 2, "--base must be positive and not 1"),
            (["kl", "0.5", "0.5", "--", "0.2", "0.3", "0.5"], 1, "P has 2 entries but Q has 3"),
            (["kl", "0.5", "0.5"], 2, "expected two vectors separated by '--' (P -- Q), got 1"),
            (["ce", "0.5", "0.5", "--", "0.9", "0.3"], 1, "Q sums to 1.2, not 1"),
            (
                ["ce", "0.5", "0.5", "--", "1.5", "-0.5"],
                1,
                "Q has a negative entry -0.5 at index 1",
            ),
        ],
    )
    def test_errors(self, capsys, argv, code, message):
        got, out, err = run(capsys, *argv)
        assert got == code
        assert err.startswith(f"crossentropy {argv[0]}: error: ")
        assert message in err
        assert out == ""

    def test_normalize_accepts_unnormalised_pair(self, capsys):
        code, out, _ = run(capsys, "kl", "1", "1", "--", "9", "1", "--normalize")
        assert code == 0
        assert _number(out) == pytest.approx(scipy_stats.entropy([0.5, 0.5], [0.9, 0.1]), abs=6e-5)


# -- eval -----------------------------------------------------------------------------------


def _predictions(
    rng: np.random.Generator, n: int = 97, c: int = 7
) -> tuple[np.ndarray, np.ndarray]:
    x = rng.normal(size=(n, c)) * 2.5
    y = np.argmax(x + rng.normal(size=(n, c)) * 2.0, axis=1)  # right about half the time
    return x, y


def _oracle(x: np.ndarray, y: np.ndarray, k: int = 5, bins: int = 15) -> dict:
    """The metrics in one shot, from PyTorch, SciPy and naive NumPy."""
    n, c = x.shape
    p = _softmax(x)
    nll = torch_oracle("cross_entropy", x, y, reduction="none")
    pred = np.argmax(x, axis=1)
    conf = p[np.arange(n), pred]
    ece = 0.0
    edges = np.linspace(0, 1, bins + 1)
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            ece += in_bin.mean() * abs(np.mean(pred[in_bin] == y[in_bin]) - conf[in_bin].mean())
    top = np.argsort(-x, axis=1, kind="stable")[:, :k]
    return {
        "rows": n,
        "classes": c,
        "cross_entropy_nats": nll.mean(),
        "cross_entropy_bits": nll.mean() / math.log(2),
        "perplexity": math.exp(nll.mean()),
        "accuracy": np.mean(pred == y),
        "top_k_accuracy": np.mean([y[i] in top[i] for i in range(n)]),
        "mean_entropy_nats": scipy_stats.entropy(p, axis=1).mean(),
        "ece": ece,
        "per_class_loss": [nll[y == j].mean() if (y == j).any() else None for j in range(c)],
        "per_class_accuracy": [
            np.mean(pred[y == j] == j) if (y == j).any() else None for j in range(c)
        ],
    }


def _assert_same_numbers(got: object, want: object, where: str = "") -> None:
    """``got`` and ``want`` (JSON values) are equal, numbers to 1e-12 relative."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), where
        for key in want:
            _assert_same_numbers(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want)):
            _assert_same_numbers(g, w, f"{where}[{i}]")
    elif isinstance(want, float):
        assert got == pytest.approx(want, rel=1e-12, abs=1e-15, nan_ok=True), where
    else:
        assert got == want, where


def _eval_json(capsys, *argv) -> dict:
    code, out, err = run(capsys, "eval", *argv, "--json", "--quiet")
    assert code == 0, err
    return json.loads(out)


def _save(path: Path, fmt: str, a: np.ndarray) -> str:
    if fmt == "npy":
        np.save(path.with_suffix(".npy"), a)
        return str(path.with_suffix(".npy"))
    if fmt == "npy-f32":
        np.save(path.with_suffix(".npy"), a.astype(np.float32))
        return str(path.with_suffix(".npy"))
    if fmt == "npz":
        np.savez(path.with_suffix(".npz"), predictions=a, other=np.zeros(3))
        return str(path.with_suffix(".npz")) + ":predictions"
    if fmt == "npz-compressed":
        np.savez_compressed(path.with_suffix(".npz"), a)
        return str(path.with_suffix(".npz"))
    if fmt == "csv":
        header = ",".join(f"class_{j}" for j in range(a.shape[1]))
        np.savetxt(
            path.with_suffix(".csv"), a, delimiter=",", fmt="%.17g", header=header, comments=""
        )
        return str(path.with_suffix(".csv"))
    np.savetxt(path.with_suffix(".txt"), a, fmt="%.17g")
    return str(path.with_suffix(".txt"))


class TestEval:
    def test_metrics_match_one_shot_oracle(self, capsys, tmp_path, rng):
        x, y = _predictions(rng)
        np.save(tmp_path / "x.npy", x)
        np.save(tmp_path / "y.npy", y)
        got = _eval_json(
            capsys, tmp_path / "x.npy", tmp_path / "y.npy", "--per-class", "--top-k", "3"
        )
        want = _oracle(x, y, k=3)
        for key in (
            "cross_entropy_nats",
            "cross_entropy_bits",
            "perplexity",
            "accuracy",
            "top_k_accuracy",
            "mean_entropy_nats",
            "ece",
        ):
            assert got[key] == pytest.approx(want[key], rel=1e-12, abs=1e-12), key
        assert (got["rows"], got["classes"], got["top_k"], got["ece_bins"]) == (97, 7, 3, 15)
        assert got["correct"] == int(round(want["accuracy"] * 97))
        losses = [c["cross_entropy_nats"] for c in got["per_class"]]
        np.testing.assert_allclose(losses, want["per_class_loss"], rtol=1e-12)
        np.testing.assert_allclose(
            [c["accuracy"] for c in got["per_class"]], want["per_class_accuracy"]
        )
        assert [c["count"] for c in got["per_class"]] == np.bincount(y, minlength=7).tolist()

    def test_ignore_index_leaves_rows_out_of_every_metric(self, capsys, tmp_path, rng):
        x, y = _predictions(rng, n=61, c=5)
        y[rng.random(61) < 0.3] = -100
        kept = y != -100
        np.save(tmp_path / "x.npy", x)
        np.save(tmp_path / "y.npy", y)
        np.save(tmp_path / "xk.npy", x[kept])
        np.save(tmp_path / "yk.npy", y[kept])
        flags = ("--per-class", "--reliability", "--block-rows", "7")
        got = _eval_json(capsys, tmp_path / "x.npy", tmp_path / "y.npy", "--ignore-index", "-100",
                         *flags)  # fmt: skip
        want = _eval_json(capsys, tmp_path / "xk.npy", tmp_path / "yk.npy", *flags)
        assert got.pop("ignored_rows") == int((~kept).sum()) and "ignored_rows" not in want
        for key in ("predictions", "targets"):
            got.pop(key), want.pop(key)
        _assert_same_numbers(got, want)
        # PyTorch's mean over the rows whose label is not ignore_index
        ref = torch_oracle("cross_entropy", x, y, ignore_index=-100)
        assert got["cross_entropy_nats"] == pytest.approx(float(ref), rel=1e-12)
        code, out, _ = run(capsys, "eval", tmp_path / "x.npy", tmp_path / "y.npy",
                           "--ignore-index", "-100", "--quiet")  # fmt: skip
        assert code == 0 and f"{int((~kept).sum())} rows with label -100 left out" in out

    def test_ignore_index_compares_labels_of_any_integer_dtype(self, capsys, tmp_path, rng):
        x, y = _predictions(rng, n=40, c=4)
        y8 = y.astype(np.uint8)
        y8[::5] = 255
        np.save(tmp_path / "x.npy", x)
        np.save(tmp_path / "y.npy", y8)
        got = _eval_json(capsys, tmp_path / "x.npy", tmp_path / "y.npy", "--ignore-index", "255")
        assert (got["rows"], got["ignored_rows"]) == (32, 8)
        # an index no uint8 label can equal ignores nothing: the 255s are out of range
        code, _, err = run(capsys, "eval", tmp_path / "x.npy", tmp_path / "y.npy",
                           "--ignore-index", "-100")  # fmt: skip
        assert code == 1
        assert "8 label(s) out of range for 4 classes (valid: 0..3 or --ignore-index -100)" in err

    def test_ignore_index_of_every_label_is_an_error(self, capsys, tmp_path, rng):
        x, _ = _predictions(rng, n=6, c=3)
        np.save(tmp_path / "x.npy", x)
        np.save(tmp_path / "y.npy", np.full(6, -1))
        code, _, err = run(capsys, "eval", tmp_path / "x.npy", tmp_path / "y.npy",
                           "--ignore-index", "-1")  # fmt: skip
        assert code == 1
        assert "every one of the 6 labels is --ignore-index -1: no row to evaluate" in err

    @pytest.mark.parametrize("fmt", ["npy", "npy-f32", "npz", "npz-compressed", "csv", "txt"])
    @pytest.mark.parametrize("kind", ["logits", "probs", "log-probs"])
    def test_streaming_equals_one_shot(self, capsys, tmp_path, rng, fmt, kind):
        x, y = _predictions(rng, n=53, c=6)
        if fmt == "npy-f32":
            x = x.astype(np.float32).astype(np.float64)
        data = {
            "logits": x,
            "probs": _softmax(x),
            "log-probs": torch_oracle("log_softmax", x, dim=1),
        }[kind]
        pred = _save(tmp_path / "pred", fmt, data)
        np.savetxt(tmp_path / "y.csv", y, fmt="%d", header="label", comments="")
        labels = str(tmp_path / "y.csv")
        one_block = _eval_json(capsys, pred, labels, "--from", kind, "--per-class")
        blocks = _eval_json(
            capsys, pred, labels, "--from", kind, "--per-class", "--block-rows", "4"
        )
        want = _oracle(x, y)
        for got in (one_block, blocks):
            for key in (
                "cross_entropy_nats",
                "accuracy",
                "top_k_accuracy",
                "mean_entropy_nats",
                "ece",
            ):
                tol = 1e-6 if fmt == "npy-f32" and kind != "logits" else 1e-10
                assert got[key] == pytest.approx(want[key], rel=tol, abs=tol), key
        for key, value in one_block.items():
            if key == "per_class":
                continue
            if isinstance(value, float):
                assert blocks[key] == pytest.approx(value, rel=1e-12, abs=1e-13), key
            else:  # names, counts and options must be identical
                assert blocks[key] == value, key

    def test_npy_is_read_in_blocks(self, tmp_path, rng):
        x, _ = _predictions(rng, n=30, c=4)
        np.save(tmp_path / "x.npy", x)
        source = readers.open_predictions(str(tmp_path / "x.npy"))
        blocks = list(source.blocks(7))
        assert [len(b) for b in blocks] == [7, 7, 7, 7, 2]
        np.testing.assert_array_equal(np.concatenate(blocks), x)

    def test_text_report_matches_json(self, capsys, tmp_path, rng):
        x, y = _predictions(rng)
        np.save(tmp_path / "x.npy", x)
        np.save(tmp_path / "y.npy", y)
        code, out, err = run(capsys, "eval", tmp_path / "x.npy", tmp_path / "y.npy", "--per-class")
        assert code == 0
        assert err == ""  # no progress bar when stderr is not a terminal
        want = _oracle(x, y)
        assert re.search(
            rf"^cross-entropy\s+{want['cross_entropy_nats']:.4f} nats  "
            rf"\({want['cross_entropy_bits']:.4f} bits\)$",
            out,
            re.M,
        )
        assert re.search(rf"^perplexity\s+{want['perplexity']:.4f}$", out, re.M)
        assert re.search(rf"^accuracy\s+{100 * want['accuracy']:.2f}%", out, re.M)
        assert re.search(rf"^ECE \(15 bins\)\s+{want['ece']:.4f}$", out, re.M)
        for j, loss in enumerate(want["per_class_loss"]):
            assert re.search(rf"^\s+{j}\s+{np.sum(y == j)}\s+{loss:.4f}\s", out, re.M)

    def test_masked_classes_with_minus_inf(self, capsys, tmp_path):
        x = np.array([[2.0, -np.inf, 0.5], [-np.inf, 1.0, 1.0]])
        y = np.array([0, 2])
        np.save(tmp_path / "x.npy", x)
        np.save(tmp_path / "y.npy", y)
        got = _eval_json(capsys, tmp_path / "x.npy", tmp_path / "y.npy")
        expected = np.mean([math.log(math.exp(2) + math.exp(0.5)) - 2, math.log(2)])
        assert got["cross_entropy_nats"] == pytest.approx(expected, rel=1e-12)

    def test_zero_probability_target_gives_infinite_loss(self, capsys, tmp_path):
        np.save(tmp_path / "p.npy", np.array([[1.0, 0.0], [0.5, 0.5]]))
        np.save(tmp_path / "y.npy", np.array([1, 0]))
        got = _eval_json(capsys, tmp_path / "p.npy", tmp_path / "y.npy", "--from", "probs")
        assert got["cross_entropy_nats"] is None and got["perplexity"] is None  # inf -> null
        assert got["accuracy"] == 0.5

    def test_warns_when_probabilities_evaluated_as_logits(self, capsys, tmp_path, rng):
        x, y = _predictions(rng)
        np.save(tmp_path / "p.npy", _softmax(x))
        np.save(tmp_path / "y.npy", y)
        code, _, err = run(capsys, "eval", tmp_path / "p.npy", tmp_path / "y.npy", "--quiet")
        assert code == 0
        assert "look like probabilities" in err and "--from probs" in err
        code, _, err = run(
            capsys, "eval", tmp_path / "p.npy", tmp_path / "y.npy", "--quiet", "--from", "probs"
        )
        assert code == 0 and err == ""

    @pytest.mark.parametrize("block_rows", [None, "4"])
    def test_nan_rows_reported_with_count_and_first_index(self, capsys, tmp_path, rng, block_rows):
        x, y = _predictions(rng, n=20, c=3)
        x[[6, 13, 14], 1] = np.nan
        x[17, 0] = np.inf
        np.save(tmp_path / "x.npy", x)
        np.save(tmp_path / "y.npy", y)
        extra = [] if block_rows is None else ["--block-rows", block_rows]
        code, out, err = run(capsys, "eval", tmp_path / "x.npy", tmp_path / "y.npy", "-q", *extra)
        assert code == 1 and out == ""
        assert err == (
            "crossentropy eval: error: PREDICTIONS (logits) has 3 row(s) with NaN (first: row 6); "
            "1 row(s) with +inf (first: row 17)\n"
        )

    @pytest.mark.parametrize(
        "pred, labels, extra, message",
        [
            (
                np.zeros((5, 3)),
                np.zeros(4, dtype=int),
                [],
                "shape mismatch: PREDICTIONS has 5 rows (5 x 3) but TARGETS has 4 labels",
            ),
            (
                np.zeros((5, 3)),
                np.array([0, 1, 3, 2, -1]),
                [],
                "2 label(s) out of range for 3 classes (valid: 0..2); first: 3 at row 2",
            ),
            (
                np.zeros((5, 3)),
                np.array([0, 1, 1.5, 2, 0]),
                [],
                "TARGETS: labels must be integers; 1 are not (first: 1.5 at row 2)",
            ),
            (np.zeros((5, 3)), np.eye(3)[[0, 1, 2, 0, 1]], [], "one-hot? save the argmax"),
            (
                np.zeros(5),
                np.zeros(5, dtype=int),
                [],
                "must hold a 2-D (rows, classes) array, got shape (5,)",
            ),
            (
                np.full((2, 2), 0.7),
                np.zeros(2, dtype=int),
                ["--from", "probs"],
                "2 row(s) with probabilities not summing to 1 (first: row 0)",
            ),
            (np.zeros((0, 3)), np.zeros(0, dtype=int), [], "is empty (shape (0, 3))"),
        ],
        ids=["rows", "range", "non-integer", "one-hot", "1-d", "probs", "empty"],
    )
    def test_bad_files(self, capsys, tmp_path, pred, labels, extra, message):
        np.save(tmp_path / "x.npy", pred)
        np.save(tmp_path / "y.npy", labels)
        code, out, err = run(capsys, "eval", tmp_path / "x.npy", tmp_path / "y.npy", "-q", *extra)
        assert code == 1 and out == ""
        assert err.startswith("crossentropy eval: error: ")
        assert message in err

    def test_unreadable_inputs(self, capsys, tmp_path):
        (tmp_path / "x.npy").write_bytes(b"not a numpy file")
        (tmp_path / "x.parquet").write_bytes(b"")
        np.save(tmp_path / "y.npy", np.zeros(2, dtype=int))
        np.savez(tmp_path / "two.npz", a=np.zeros((2, 2)), b=np.zeros((2, 2)))
        np.savetxt(tmp_path / "ragged.csv", np.zeros((2, 2)), delimiter=",")
        with (tmp_path / "ragged.csv").open("a") as f:
            f.write("1,2,3\n")
        np.save(tmp_path / "y3.npy", np.zeros(3, dtype=int))
        cases = [
            ("missing.npy", "y.npy", "PREDICTIONS: no such file"),
            ("x.npy", "y.npy", "PREDICTIONS: cannot read"),
            ("x.parquet", "y.npy", "unsupported file type '.parquet'"),
            ("two.npz", "y.npy", "holds several arrays ['a', 'b']; pick one with FILE.npz:KEY"),
            ("two.npz:c", "y.npy", "has no array 'c'"),
            ("ragged.csv", "y3.npy", "cannot parse data rows"),
            ("two.npz:a", "missing.csv", "TARGETS: no such file"),
        ]
        for pred, labels, message in cases:
            code, _, err = run(capsys, "eval", tmp_path / pred, tmp_path / labels, "-q")
            assert code == 1, pred
            assert message in err, (pred, err)

    def test_float32_logits(self, capsys, tmp_path, rng):
        x, y = _predictions(rng)
        x32 = x.astype(np.float32)
        np.save(tmp_path / "x.npy", x32)
        np.save(tmp_path / "y.npy", y.astype(np.int32))
        got = _eval_json(capsys, tmp_path / "x.npy", tmp_path / "y.npy")
        want = _oracle(x32.astype(np.float64), y)
        assert got["cross_entropy_nats"] == pytest.approx(want["cross_entropy_nats"], rel=1e-12)

    def test_top_k_larger_than_the_classes_is_a_usage_error(self, capsys, tmp_path):
        np.save(tmp_path / "x.npy", np.zeros((4, 3)))
        np.save(tmp_path / "y.npy", np.array([0, 1, 2, 0]))
        code, out, err = run(capsys, "eval", tmp_path / "x.npy", tmp_path / "y.npy", "--top-k", "5")
        assert (code, out) == (2, "")
        assert err == (
            "crossentropy eval: error: --top-k 5 is larger than the number of classes (3) "
            "of PREDICTIONS\n"
        )
        # without --top-k, k is 5 or the number of classes if fewer
        got = _eval_json(capsys, tmp_path / "x.npy", tmp_path / "y.npy")
        assert (got["top_k"], got["top_k_accuracy"]) == (3, 1.0)

    def test_brier_score_and_reliability(self, capsys, tmp_path, rng):
        sk = pytest.importorskip("sklearn.metrics")
        x, y = _predictions(rng)
        np.save(tmp_path / "x.npy", x)
        np.save(tmp_path / "y.npy", y)
        got = _eval_json(
            capsys, tmp_path / "x.npy", tmp_path / "y.npy", "--reliability", "--bins", "10"
        )
        p = _softmax(x)
        brier = sk.brier_score_loss(y, p, labels=range(7), scale_by_half=False)
        assert got["brier_score"] == pytest.approx(brier, rel=1e-12)
        assert got["ece"] == pytest.approx(_oracle(x, y, bins=10)["ece"], rel=1e-12)
        conf, right = p.max(axis=1), p.argmax(axis=1) == y
        assert len(got["reliability"]) == 10
        for b, row in enumerate(got["reliability"]):
            assert row["bin"] == pytest.approx([b / 10, (b + 1) / 10], abs=1e-15)
            in_bin = (conf > b / 10) & (conf <= (b + 1) / 10)
            assert row["count"] == in_bin.sum()
            if in_bin.any():
                assert row["confidence"] == pytest.approx(conf[in_bin].mean(), rel=1e-12)
                assert row["accuracy"] == pytest.approx(right[in_bin].mean(), rel=1e-12)
            else:
                assert row["confidence"] is None and row["accuracy"] is None  # NaN -> null
        code, out, _ = run(
            capsys, "eval", tmp_path / "x.npy", tmp_path / "y.npy", "-q", "--reliability"
        )
        assert code == 0
        assert re.search(rf"^Brier score\s+{brier:.4f}$", out, re.M)
        assert re.search(r"^confidence bin\s+rows\s+mean confidence\s+accuracy", out, re.M)

    def test_plot_draws_the_reliability_diagram(self, capsys, tmp_path, rng):
        x, y = _predictions(rng)
        np.save(tmp_path / "x.npy", x)
        np.save(tmp_path / "y.npy", y)
        png = tmp_path / "reliability.png"
        code, out, err = run(
            capsys, "eval", tmp_path / "x.npy", tmp_path / "y.npy", "-q", "--plot", png
        )
        assert code == 0 and err == ""
        assert out.endswith(f"wrote the reliability diagram to {png}\n")
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
        got = _eval_json(
            capsys, tmp_path / "x.npy", tmp_path / "y.npy", "--plot", tmp_path / "b.png"
        )
        assert got["plot"] == str(tmp_path / "b.png") and (tmp_path / "b.png").stat().st_size > 0
        code, out, err = run(
            capsys,
            "eval",
            tmp_path / "x.npy",
            tmp_path / "y.npy",
            "-q",
            "--plot",
            tmp_path / "no" / "r.png",
        )
        assert code == 1 and out == ""
        assert (
            err.startswith("crossentropy eval: error: --plot: cannot write ")
            and err.count("\n") == 1
        )


# -- demo -----------------------------------------------------------------------------------


class TestDemo:
    def test_short_schedule_cross_entropy_beats_mse(self, capsys, tmp_path):
        epochs = 3
        code, out, err = run(capsys, "demo", "--epochs", epochs, "--quiet", "--out", tmp_path)
        assert code == 0 and err == ""
        with (tmp_path / "history.csv").open() as f:
            rows = list(csv.DictReader(f))
        acc = {
            (r["model"], r["loss"]): float(r["test_accuracy"])
            for r in rows
            if int(r["epoch"]) == epochs
        }
        assert len(acc) == 8
        for model in ("softmax-regression", "mlp"):
            assert acc[(model, "cross-entropy")] > acc[(model, "softmax-mse")], model
        assert acc[("mlp", "cross-entropy")] > acc[("mlp", "sigmoid-mse")]
        # the printed table shows the same numbers
        for (model, loss), a in acc.items():
            name, desc = demo.MODELS[model].name, demo.LOSSES[loss][1]
            assert re.search(
                rf"^{re.escape(name)}\s+{re.escape(desc)}\s+\S+\s+{100 * a:.1f}%", out, re.M
            )
        assert "cross-entropy reached 90% test accuracy" in out
        png = (tmp_path / "curves.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
        # the saved logits evaluate to the accuracy the demo reports
        got = _eval_json(
            capsys, tmp_path / "test_logits_mlp_cross-entropy.npy", tmp_path / "test_labels.npy"
        )
        assert got["accuracy"] == acc[("mlp", "cross-entropy")]

    def test_deterministic_for_a_seed(self):
        data = demo.load_data(3)
        a, b = (
            demo.train("mlp", "softmax-mse", data, epochs=2, lr=0.05, seed=3, progress=False)
            for _ in range(2)
        )
        c = demo.train("mlp", "softmax-mse", data, epochs=2, lr=0.05, seed=4, progress=False)
        assert a.train_loss == b.train_loss and a.test_acc == b.test_acc
        np.testing.assert_array_equal(a.test_logits, b.test_logits)
        assert a.train_loss != c.train_loss

    def test_data_split_is_stratified_and_standardised(self):
        data = demo.load_data(0)
        assert data.x_train.shape == (1347, 64) and data.x_test.shape == (450, 64)
        np.testing.assert_allclose(data.x_train.mean(axis=0), 0, atol=1e-12)
        per_class = np.bincount(np.concatenate([data.y_train, data.y_test]))
        assert np.all(np.abs(np.bincount(data.y_test) - per_class / 4) <= 1)  # stratified

    @pytest.mark.parametrize("loss", list(demo.LOSSES))
    def test_loss_gradient_finite_differences(self, rng, loss):
        fn = demo.LOSSES[loss][0]
        z = rng.normal(size=(5, 4))
        y = np.array([0, 3, 1, 1, 2])
        onehot = np.eye(4)[y]
        if loss == "hinge":  # keep every margin away from its kink
            z[np.arange(5), y] += 1.0 + 0.5 * np.sign(rng.normal(size=5))
        value, dz = fn(z, y, onehot)
        np.testing.assert_allclose(
            dz, finite_difference(lambda t: fn(t, y, onehot)[0], z), atol=1e-7
        )
        if loss == "cross-entropy":
            assert value == pytest.approx(float(torch_oracle("cross_entropy", z, y)), rel=1e-12)
        if loss == "softmax-mse":  # summed over classes, averaged over rows
            p = _softmax(z)
            assert value == pytest.approx(np.sum((p - onehot) ** 2) / 5, rel=1e-12)

    @pytest.mark.parametrize("model", list(demo.MODELS))
    def test_backprop_finite_differences(self, rng, model):
        net = demo.MODELS[model](6, 3, rng)
        x = rng.normal(size=(4, 6))
        y = np.array([0, 2, 1, 2])
        loss_fn = demo.LOSSES["cross-entropy"][0]
        z, cache = net.forward(x)
        grads = net.backward(cache, loss_fn(z, y, None)[1])
        for name, param in net.params.items():

            def f(w, name=name):
                old = net.params[name]
                net.params[name] = w
                value = loss_fn(net.forward(x)[0], y, None)[0]
                net.params[name] = old
                return value

            np.testing.assert_allclose(grads[name], finite_difference(f, param.copy()), atol=1e-7)

    def test_missing_extras_say_how_to_install(self, capsys, monkeypatch, tmp_path):
        for name in ("sklearn", "sklearn.datasets", "sklearn.model_selection"):
            monkeypatch.setitem(sys.modules, name, None)
        code, out, err = run(capsys, "demo", "--epochs", "1", "--quiet", "--out", tmp_path)
        assert code == 1 and out == ""
        assert err == (
            "crossentropy demo: error: the demo needs sklearn, which is not installed; install "
            'the command-line extras with: pip install "crossentropy[cli]"\n'
        )

    @pytest.mark.parametrize(
        "argv, message",
        [
            (["--epochs", "0"], "--epochs must be at least 1"),
            (["--lr", "-1"], "--lr must be positive"),
        ],
    )
    def test_bad_options(self, capsys, tmp_path, argv, message):
        code, _, err = run(capsys, "demo", *argv, "--out", tmp_path)
        assert code == 2 and message in err


# -- hostile input: one line on stderr, the right exit status, the right number ----------------


def _hostile_files(d: Path) -> None:
    np.save(d / "x.npy", np.array([[1.0, 2.0], [3.0, 1.0], [0.0, 0.0]]))
    np.save(d / "y.npy", np.array([0, 1, 1]))
    np.save(d / "complex.npy", np.zeros((3, 2), dtype=complex) + 1j)
    np.save(d / "y_1e30.npy", np.array([0.0, 1e30, 1.0]))
    np.save(d / "y_inf.npy", np.array([0.0, np.inf, 1.0]))
    np.save(d / "y_u64.npy", np.array([0, 2**64 - 1, 1], dtype=np.uint64))
    np.savez(d / "nothing.npz")
    (d / "empty.csv").write_text("")
    (d / "header.csv").write_text("a,b\n")
    (d / "garbage.csv").write_bytes(bytes(range(256)))


HOSTILE = [
    # (argv, exit status, the error message after "crossentropy CMD: error: ")
    (["entropy", "0.5", "0.5", "--base", "inf"], 2, "--base must be positive and not 1 (a finite number), got inf"),
    (["entropy", "0.5", "0.5", "--base", "nan"], 2, "--base must be positive and not 1 (a finite number), got nan"),
    (["entropy", "0.5", "0.5", "--base", "0"], 2, "--base must be positive and not 1 (a finite number), got 0"),
    (["entropy", "0.5", "0.5", "--base", "-2"], 2, "--base must be positive and not 1 (a finite number), got -2"),
    (["kl", "0.5", "0.5", "--", "0.5", "0.5", "--base", "inf"], 2, "--base must be positive and not 1 (a finite number), got inf"),
    (["explain", "--logits", "1", "2", "--target", "0", "--base", "inf"], 2, "--base must be positive and not 1 (a finite number), got inf"),
    (["explain", "--logits", "1", "2", "--target", "0", "--base", "1"], 2, "--base must be positive and not 1 (a finite number), got 1"),
    (["entropy", "1e308", "1e308"], 1, "P sums to inf, not 1; pass --normalize to divide it by its sum"),
    (["entropy", "0.5", "0.5", "--digits", "100"], 2, "--digits must be between 0 and 17, got 100"),
    (["entropy"], 2, "the following arguments are required: P (see 'crossentropy entropy --help')"),
    (["explain", "--logits", "1", "2"], 2, "the following arguments are required: --target (see 'crossentropy explain --help')"),
    (["explain", "--log-probs", "-2.3", "-1e-5", "--target", "1"], 1, "--log-probs: row 0 is not normalised (exp sums to 1.10025, not 1); pass raw scores with --logits"),
    (["explain", "--logits", "inf", "0", "--target", "0"], 1, "--logits: row 0 contains +inf (its softmax is undefined)"),
    (["explain", "--logits", "-inf", "-inf", "--target", "0"], 1, "--logits: row 0 has only -inf (no class is possible)"),
    (["explain", "--logits", "1", "2", "--target", "1e30"], 1, "--target: class 1e+30 (row 0) is out of range for 2 classes; valid indices are 0..1"),
    (["explain", "--logits", "1", "2", "--target", "inf"], 1, "--target: class indices must be integers, got inf (row 0)"),
    (["explain", "--logits", "1", "2", "--target", "0", "--weight", "nan", "1"], 2, "--weight: weight nan of class 0 is not a finite number"),
    (["explain", "--logits", "{d}/complex.npy", "--target", "0"], 1, "--logits: '{d}/complex.npy' holds complex128 values, not real numbers"),
    (["explain", "--logits", "{d}/empty.csv", "--target", "0"], 1, "--logits: {d}/empty.csv holds no numbers"),
    (["explain", "--logits", "{d}/header.csv", "--target", "0"], 1, "--logits: {d}/header.csv holds no numbers"),
    (["explain", "--logits", "{d}/nothing.npz", "--target", "0"], 1, "--logits: '{d}/nothing.npz' holds no arrays"),
    (["eval", "{d}/complex.npy", "{d}/y.npy"], 1, "PREDICTIONS: {d}/complex.npy holds complex128 values, not real numbers"),
    (["eval", "{d}/x.npy", "{d}/y_1e30.npy"], 1, "1 label(s) out of range for 2 classes (valid: 0..1); first: 1e+30 at row 1"),
    (["eval", "{d}/x.npy", "{d}/y_u64.npy"], 1, "1 label(s) out of range for 2 classes (valid: 0..1); first: 18446744073709551615 at row 1"),
    (["eval", "{d}/x.npy", "{d}/y_inf.npy"], 1, "TARGETS: labels must be integers; 1 are not (first: inf at row 1)"),
    (["eval", "{d}/nothing.npz", "{d}/y.npy"], 1, "PREDICTIONS: the .npz holds no arrays"),
    (["eval", "{d}/x.npy", "{d}/empty.csv"], 1, "TARGETS: {d}/empty.csv holds no numbers"),
    (["eval", "{d}/garbage.csv", "{d}/y.npy"], 1, "PREDICTIONS: cannot read '{d}/garbage.csv': 'utf-8' codec can't decode byte 0x80 in position 128: invalid start byte"),
    (["eval", "{d}/x.npy", "{d}/y.npy", "--bins", "x"], 2, "argument --bins: invalid int value: 'x' (see 'crossentropy eval --help')"),
    (["demo", "--lr", "inf"], 2, "--lr must be positive (a finite number), got inf"),
    (["demo", "--out", "/dev/null/x"], 1, "cannot write to '/dev/null/x': [Errno 20] Not a directory: '/dev/null/x'"),
]  # fmt: skip


class TestHostileInput:
    @pytest.mark.parametrize("argv, code, message", HOSTILE, ids=[" ".join(h[0]) for h in HOSTILE])
    def test_one_line_and_exit_status(self, capsys, tmp_path, argv, code, message):
        _hostile_files(tmp_path)
        argv = [a.replace("{d}", str(tmp_path)) for a in argv]
        got, out, err = run(capsys, *argv, *(["-q"] if argv[0] in ("eval", "demo") else []))
        assert (got, out) == (code, "")
        assert err == f"crossentropy {argv[0]}: error: {message.replace('{d}', str(tmp_path))}\n"

    def test_no_warning_leaks_from_a_fresh_process(self, tmp_path):
        # in a plain interpreter, where warnings print to stderr instead of raising
        res = subprocess.run(
            [sys.executable, "-m", "crossentropy", "entropy", "1e308", "1e308"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert res.returncode == 1
        assert res.stderr == (
            "crossentropy entropy: error: P sums to inf, not 1; pass --normalize to divide it "
            "by its sum\n"
        )

    def test_negative_numbers_are_values(self, capsys):
        lp = np.log(np.array([[0.1, 0.9]]))
        tokens = [f"{v:.12e}" for v in lp[0]]  # -2.302585092994e+00 -1.053605156578e-01
        code, out, _ = run(capsys, "explain", "--log-probs", *tokens, "--target", "1")
        assert code == 0
        assert _library_value(out) == pytest.approx(-math.log(0.9), abs=6e-5)
        x = np.array([[-np.inf, 0.0, 1.0]])  # a masked class
        code, out, _ = run(capsys, "explain", "--logits", "-inf", "0", "1", "--target", "1")
        assert code == 0
        want = torch_oracle("cross_entropy", x, np.array([1]))
        assert _library_value(out) == pytest.approx(float(want), abs=6e-5)
        code, out, _ = run(capsys, "explain", "--logits", "-1e-5", "-2.5E+1", "--target", "0")
        assert code == 0
        (table,) = _sections(out)
        np.testing.assert_allclose(table[:, 0], [-1e-5, -25.0], atol=6e-5)

    def test_entropy_normalises_without_overflow(self, capsys):
        code, out, err = run(capsys, "entropy", "1e308", "1e308", "--normalize")
        assert (code, err) == (0, "")
        assert out == f"H(P) = {math.log(2):.4f} nats\n"
        code, out, _ = run(capsys, "kl", "1e308", "1e308", "--", "1", "3", "--normalize")
        assert code == 0
        assert _number(out) == pytest.approx(
            scipy_stats.entropy([0.5, 0.5], [0.25, 0.75]), abs=6e-5
        )

    def test_utf8_byte_order_mark_keeps_the_first_row(self, capsys, tmp_path, rng):
        x, y = _predictions(rng, n=5, c=3)
        text = "\n".join(",".join(f"{v:.17g}" for v in row) for row in x) + "\n"
        (tmp_path / "x.csv").write_bytes(b"\xef\xbb\xbf" + text.encode())
        (tmp_path / "y.csv").write_bytes(b"\xef\xbb\xbf" + "\n".join(map(str, y)).encode())
        got = _eval_json(capsys, tmp_path / "x.csv", tmp_path / "y.csv")
        assert got["rows"] == 5
        assert got["cross_entropy_nats"] == pytest.approx(
            _oracle(x, y)["cross_entropy_nats"], rel=1e-12
        )
        code, out, _ = run(
            capsys, "explain", "--logits", tmp_path / "x.csv", "--target", tmp_path / "y.csv"
        )
        assert code == 0 and len(_sections(out)) == 5

    def test_fortran_order_npy_is_read_in_blocks(self, tmp_path, rng):
        x, _ = _predictions(rng, n=30, c=4)
        np.save(tmp_path / "x.npy", np.asfortranarray(x))
        source = readers.open_predictions(str(tmp_path / "x.npy"))
        assert isinstance(source, readers.FortranNpySource)
        blocks = list(source.blocks(7))
        assert [b.shape for b in blocks] == [(7, 4)] * 4 + [(2, 4)]
        assert all(b.flags.c_contiguous for b in blocks)
        np.testing.assert_array_equal(np.concatenate(blocks), x)

    @pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="peak memory from /proc")
    def test_fortran_order_npy_streams_in_bounded_memory(self, tmp_path, rng):
        rows, classes = 80_000, 100  # 64 MB of float64, column-major
        x = np.asfortranarray(rng.normal(size=(rows, classes)))
        np.save(tmp_path / "x.npy", x)
        np.save(tmp_path / "y.npy", rng.integers(0, classes, rows))
        del x
        # VmHWM: this process's peak resident memory (getrusage's counts the parent's too)
        code = (
            "import re, sys\n"
            "from crossentropy.cli import main\n"
            "def peak():\n"
            "    return int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())[1])\n"
            "before = peak()\n"
            f"status = main(['eval', r'{tmp_path / 'x.npy'}', r'{tmp_path / 'y.npy'}', '-q', '--json'])\n"
            "print(status, peak() - before, file=sys.stderr)\n"
        )
        res = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
        )
        status, grown_kib = map(int, res.stderr.split())
        assert status == 0
        assert json.loads(res.stdout)["rows"] == rows
        # a C-order file of this size grows it by about 28 MiB; rows read through one mapping
        # of the whole file, by 86 MiB
        assert grown_kib < 48 * 1024, f"peak memory grew by {grown_kib} KiB for a 62500 KiB file"


# -- JSON, standard input, --rows, progress, the demo's plot -------------------------------------


def _stdin(monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))


def _json(capsys, *argv) -> dict:
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


class TestJson:
    @pytest.mark.parametrize("command", COMMANDS)
    def test_every_command_has_json(self, capsys, command):
        code, out, _ = run(capsys, command, "--help")
        assert code == 0 and "--json" in out

    def test_entropy(self, capsys):
        argv = ["entropy", "0.1", "0.1", "0.1", "0.7", "/", "0.25", "0.25", "0.25", "0.25"]
        got = _json(capsys, *argv, "--base", "2")
        assert (got["unit"], got["base"]) == ("bits", 2.0)
        assert [d["name"] for d in got["distributions"]] == ["P1", "P2"]
        assert got["distributions"][0]["p"] == [0.1, 0.1, 0.1, 0.7]
        want = scipy_stats.entropy([0.1, 0.1, 0.1, 0.7], base=2)
        assert got["distributions"][0]["entropy"] == pytest.approx(want, rel=1e-12)
        assert got["distributions"][1]["entropy"] == pytest.approx(2.0, rel=1e-12)

    @pytest.mark.parametrize("command", ["kl", "ce"])
    def test_kl_and_ce(self, capsys, command):
        p, q = [0.2, 0.3, 0.5], [0.1, 0.6, 0.3]
        got = _json(capsys, command, *map(str, p), "--", *map(str, q))
        assert (got["p"], got["q"], got["unit"]) == (p, q, "nats")
        h_p, kl = scipy_stats.entropy(p), scipy_stats.entropy(p, q)
        assert got["entropy_p"] == pytest.approx(h_p, rel=1e-12)
        assert got["kl_divergence"] == pytest.approx(kl, rel=1e-12)
        assert got["cross_entropy"] == pytest.approx(h_p + kl, rel=1e-12)

    def test_infinite_divergence_is_null(self, capsys):
        got = _json(capsys, "kl", "0.5", "0.5", "--", "1", "0")
        assert got["kl_divergence"] is None and got["cross_entropy"] is None

    def test_explain(self, capsys):
        x = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3], [-1.0, 0.0, 4.0]])
        y = np.array([0, 1, 0])
        argv = ["explain", "--logits", "2 1 0.1", "/", "0.5 2.5 0.3", "/", "-1 0 4"]
        got = _json(capsys, *argv, "--target", "0", "1", "0", "--label-smoothing", "0.1")
        want = torch_oracle("cross_entropy", x, y, label_smoothing=0.1)
        assert got["loss"] == pytest.approx(float(want), rel=1e-12)
        assert (got["input"], got["rows"], got["classes"], got["rows_shown"]) == ("logits", 3, 3, 3)
        _, grad = torch_grad("cross_entropy", 0, x, y, reduction="none", label_smoothing=0.1)
        for i, row in enumerate(got["per_row"]):
            assert (row["row"], row["target"], row["input"]) == (i, int(y[i]), x[i].tolist())
            np.testing.assert_allclose(row["softmax"], _softmax(x)[i], rtol=1e-12)
            np.testing.assert_allclose(row["gradient"], grad[i], rtol=1e-10, atol=1e-15)
        got = _json(capsys, *argv, "--target", "0", "1", "0", "--reduction", "none", "--rows", "1")
        np.testing.assert_allclose(
            got["loss"], torch_oracle("cross_entropy", x, y, reduction="none")
        )
        assert (got["rows_shown"], got["rows_not_shown"], len(got["per_row"])) == (1, 2, 1)

    def test_demo(self, capsys, tmp_path):
        code, out, err = run(capsys, "demo", "--epochs", "2", "--out", tmp_path, "--json")
        assert code == 0 and err == ""  # no progress bars with --json
        got = json.loads(out)
        assert (got["epochs"], got["train_images"], got["test_images"]) == (2, 1347, 450)
        with (tmp_path / "history.csv").open() as f:
            final = {
                (r["model"], r["loss"]): float(r["test_accuracy"])
                for r in csv.DictReader(f)
                if r["epoch"] == "2"
            }
        assert len(got["runs"]) == len(final) == 8
        for r in got["runs"]:
            assert r["test_accuracy"] == final[(r["model"], r["loss"])]
            assert Path(r["logits"]).is_file()
        assert Path(got["plot"]).is_file() and Path(got["history"]).is_file()


class TestStandardInput:
    def test_entropy_reads_stdin(self, capsys, monkeypatch):
        _stdin(monkeypatch, b"0.25,0.75\n")
        code, out, _ = run(capsys, "entropy", "-", "--base", "2")
        assert code == 0
        assert out == f"H(P) = {scipy_stats.entropy([0.25, 0.75], base=2):.4f} bits\n"

    def test_explain_logits_or_targets_from_stdin(self, capsys, monkeypatch):
        x = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3]])
        want = float(torch_oracle("cross_entropy", x, np.array([0, 1])))
        _stdin(monkeypatch, b"2 1 0.1\n0.5 2.5 0.3\n")
        code, out, _ = run(capsys, "explain", "--logits", "-", "--target", "0", "1")
        assert code == 0 and _library_value(out) == pytest.approx(want, abs=6e-5)
        _stdin(monkeypatch, b"0\n1\n")
        code, out, _ = run(
            capsys, "explain", "--logits", "2 1 0.1", "/", "0.5 2.5 0.3", "--target", "-"
        )
        assert code == 0 and _library_value(out) == pytest.approx(want, abs=6e-5)

    def test_eval_reads_npy_or_text_from_stdin(self, capsys, monkeypatch, tmp_path, rng):
        x, y = _predictions(rng)
        np.save(tmp_path / "x.npy", x)
        np.save(tmp_path / "y.npy", y)
        want = _eval_json(capsys, tmp_path / "x.npy", tmp_path / "y.npy")
        _stdin(monkeypatch, (tmp_path / "x.npy").read_bytes())
        got = _eval_json(capsys, "-", tmp_path / "y.npy")
        assert got == {**want, "predictions": "-"}
        _stdin(monkeypatch, "\n".join(map(str, y)).encode())
        got = _eval_json(capsys, tmp_path / "x.npy", "-")
        assert got == {**want, "targets": "-"}

    def test_stdin_is_read_once(self, capsys, monkeypatch):
        _stdin(monkeypatch, b"0\n")
        code, out, err = run(capsys, "eval", "-", "-")
        assert (code, out) == (2, "")
        assert err == (
            "crossentropy eval: error: PREDICTIONS: standard input ('-') is already read for "
            "TARGETS\n"
        )

    def test_errors_name_standard_input(self, capsys, monkeypatch, tmp_path):
        np.save(tmp_path / "y.npy", np.array([0, 1]))
        _stdin(monkeypatch, b"")
        code, _, err = run(capsys, "eval", "-", tmp_path / "y.npy")
        assert code == 1
        assert err == "crossentropy eval: error: PREDICTIONS: standard input holds no rows\n"

    def test_a_real_pipe(self):
        res = subprocess.run(
            [sys.executable, "-m", "crossentropy", "entropy", "-", "--normalize"],
            input="3 1\n",
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert res.returncode == 0, res.stderr
        assert res.stdout == f"H(P) = {scipy_stats.entropy([0.75, 0.25]):.4f} nats\n"


class TestExplainRows:
    def test_rows_limits_the_tables_not_the_totals(self, capsys, tmp_path, rng):
        x, y = _predictions(rng, n=450, c=10)
        np.save(tmp_path / "x.npy", x)
        np.save(tmp_path / "y.npy", y)
        argv = ["explain", "--logits", tmp_path / "x.npy", "--target", tmp_path / "y.npy"]
        code, full, _ = run(capsys, *argv)
        assert code == 0 and len(_sections(full)) == 450
        code, out, _ = run(capsys, *argv, "--rows", "3")
        assert code == 0
        assert len(_sections(out)) == 3 and len(out.splitlines()) < 60  # all rows: over 7000
        assert (
            "... 447 more row(s) not shown (--rows 3); the totals below cover all 450 rows" in out
        )
        want = float(torch_oracle("cross_entropy", x, y))
        assert _library_value(out) == _library_value(full) == pytest.approx(want, abs=6e-5)
        code, out, _ = run(capsys, *argv, "--rows", "0")
        assert code == 0 and _sections(out) == []
        code, out, _ = run(capsys, *argv, "--rows", "1000")
        assert code == 0 and out == full

    def test_negative_rows(self, capsys):
        code, _, err = run(capsys, "explain", "--logits", "1", "2", "--target", "0", "--rows", "-1")
        assert (
            code == 2 and err == "crossentropy explain: error: --rows must be at least 0, got -1\n"
        )


class TestProgressOutput:
    @pytest.mark.parametrize(
        "extra, shown", [([], True), (["--quiet"], False), (["--json"], False)]
    )
    def test_eval_progress_only_on_a_terminal(
        self, capsys, monkeypatch, tmp_path, rng, extra, shown
    ):
        x, y = _predictions(rng)
        np.save(tmp_path / "x.npy", x)
        np.save(tmp_path / "y.npy", y)
        tty = _Tty()
        monkeypatch.setattr(sys, "stderr", tty)
        assert main(["eval", str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), *extra]) == 0
        assert ("eval [" + "#" * 24 + "] 97/97 rows" in tty.getvalue()) == shown
        if not shown:
            assert tty.getvalue() == ""
        capsys.readouterr()

    def test_demo_progress_off_with_json(self, capsys, monkeypatch, tmp_path):
        tty = _Tty()
        monkeypatch.setattr(sys, "stderr", tty)
        argv = ["demo", "--epochs", "1", "--out", str(tmp_path)]
        assert main([*argv, "--json"]) == 0
        assert tty.getvalue() == ""
        assert main(argv) == 0
        lines = tty.getvalue().split("\n")[:-1]  # one bar per run, redrawn with \r, then ended
        assert len(lines) == 8 and all("] 1/1 epochs" in line for line in lines)
        capsys.readouterr()


class TestDemoPlot:
    def test_title_clear_of_the_top_row_and_every_epoch_visible(self):
        data = demo.load_data(0)
        runs = [
            demo.train(m, loss, data, epochs=3, lr=0.05, seed=0, progress=False)
            for m in demo.MODELS
            for loss in demo.LOSSES
        ]
        fig = demo.figure(runs, epochs=3, lr=0.05, seed=0)
        renderer = fig.canvas.get_renderer()
        fig.draw_without_rendering()
        title = fig._suptitle.get_window_extent(renderer)
        for ax in fig.axes[:2]:  # the top row
            # pixels between (8 with a one-line title and the default padding)
            assert title.y0 - ax.title.get_window_extent(renderer).y1 >= 16
        lowest = min(min(r.test_acc) for r in runs)
        assert lowest < 0.5  # epoch 0 is near chance (10%)
        for ax in fig.axes[1::2]:  # the accuracy axes
            bottom, top = ax.get_ylim()
            assert bottom <= 100 * lowest and top >= 100


class TestEvalHidden:
    """``eval --hidden H --head W --labels y [--bias b]``: the report of the logits
    ``H @ W.T + b``, made one block of tokens at a time."""

    @staticmethod
    def _files(tmp_path, rng, n=83, d=5, v=9):
        h = rng.normal(size=(n, d)).astype(np.float32)
        w = rng.normal(size=(v, d)).astype(np.float32)
        b = rng.normal(size=v).astype(np.float32)
        y = np.argmax(h @ w.T + rng.normal(size=(n, v)), axis=1)
        for name, a in (("h", h), ("w", w), ("b", b), ("y", y)):
            np.save(tmp_path / f"{name}.npy", a)
        logits = h.astype(np.float64) @ w.T.astype(np.float64) + b.astype(np.float64)
        np.save(tmp_path / "logits.npy", logits)
        return logits, y

    def test_the_same_report_as_on_the_logits(self, capsys, tmp_path, rng):
        logits, y = self._files(tmp_path, rng)
        hidden = ["--hidden", tmp_path / "h.npy", "--head", tmp_path / "w.npy",
                  "--bias", tmp_path / "b.npy", "--labels", tmp_path / "y.npy"]  # fmt: skip
        got = _eval_json(capsys, *hidden, "--per-class", "--reliability", "--block-rows", "10")
        want = _eval_json(capsys, tmp_path / "logits.npy", tmp_path / "y.npy", "--per-class",
                          "--reliability")  # fmt: skip
        assert got["hidden"] == str(tmp_path / "h.npy") and got["bias"] == str(tmp_path / "b.npy")
        for key, value in want.items():
            if key in ("predictions", "targets"):
                continue
            if isinstance(value, float):
                assert got[key] == pytest.approx(value, rel=1e-12, abs=1e-14), key
            elif key not in ("per_class", "reliability"):
                assert got[key] == value, key
        oracle = _oracle(logits, y)
        assert got["cross_entropy_nats"] == pytest.approx(oracle["cross_entropy_nats"], rel=1e-12)
        code, out, _ = run(capsys, "eval", *hidden, "-q")
        assert code == 0
        assert out.startswith(f"{tmp_path / 'h.npy'}: 83 tokens, logits over 9 classes through")

    def test_without_bias(self, capsys, tmp_path, rng):
        self._files(tmp_path, rng)
        h, w = np.load(tmp_path / "h.npy"), np.load(tmp_path / "w.npy")
        y = np.load(tmp_path / "y.npy")
        got = _eval_json(capsys, "--hidden", tmp_path / "h.npy", "--head", tmp_path / "w.npy",
                         "--labels", tmp_path / "y.npy")  # fmt: skip
        want = torch_oracle("cross_entropy", h.astype(np.float64) @ w.T.astype(np.float64), y)
        assert got["cross_entropy_nats"] == pytest.approx(float(want), rel=1e-12)

    def test_text_files_and_standard_input(self, capsys, tmp_path, rng, monkeypatch):
        self._files(tmp_path, rng)
        monkeypatch.chdir(tmp_path)
        np.savetxt("h.txt", np.load("h.npy"))  # "%.18e": the float32 values exactly
        np.savetxt("y.csv", np.load("y.npy"), fmt="%d")
        head = ["--head", "w.npy", "--bias", "b.npy"]
        want = _eval_json(capsys, "--hidden", "h.npy", *head, "--labels", "y.npy")
        from_text = _eval_json(capsys, "--hidden", "h.txt", *head, "--labels", "y.csv")
        _stdin(monkeypatch, Path("h.npy").read_bytes())
        from_stdin = _eval_json(capsys, "--hidden", "-", *head, "--labels", "y.npy")
        assert from_stdin["hidden"] == "-" and from_text["targets"] == "y.csv"
        for got in (from_text, from_stdin):
            for key in ("rows", "correct", "top_k"):
                assert got[key] == want[key], key
            for key in ("cross_entropy_nats", "brier_score", "ece", "mean_entropy_nats"):
                assert got[key] == pytest.approx(want[key], rel=1e-12), key

    def test_plot(self, capsys, tmp_path, rng, monkeypatch):
        self._files(tmp_path, rng)
        monkeypatch.chdir(tmp_path)
        code, out, err = run(capsys, "eval", "--hidden", "h.npy", "--head", "w.npy", "--labels",
                             "y.npy", "-q", "--plot", "r.png")  # fmt: skip
        assert code == 0 and err == ""
        assert out.endswith("wrote the reliability diagram to r.png\n")
        assert Path("r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    def test_no_probabilities_warning(self, capsys, tmp_path, rng, monkeypatch):
        # the logits of this head lie in [0, 1] and sum to 1: a logits file warns (and advises
        # --from probs), the hidden states do not (--from does not apply to them)
        monkeypatch.chdir(tmp_path)
        p = rng.dirichlet(np.ones(4), size=30)
        y = rng.integers(0, 4, size=30)
        for name, a in (("p.npy", p), ("eye.npy", np.eye(4)), ("y.npy", y)):
            np.save(name, a)
        code, _, err = run(capsys, "eval", "p.npy", "y.npy", "-q")
        assert code == 0 and "look like probabilities" in err
        code, out, err = run(capsys, "eval", "--hidden", "p.npy", "--head", "eye.npy", "--labels",
                             "y.npy", "-q")  # fmt: skip
        assert code == 0 and err == ""
        nats = float(torch_oracle("cross_entropy", p, y))
        assert re.search(rf"^cross-entropy\s+{nats:.4f} nats", out, re.M)

    _HIDDEN = ["--hidden", "h.npy", "--head", "w.npy", "--labels", "y.npy"]

    @pytest.mark.parametrize(
        ("argv", "match"),
        [
            (["--hidden", "h.npy", "--labels", "y.npy"], "--hidden needs --head"),
            (["--hidden", "h.npy", "--head", "w.npy"], "--hidden needs --head"),
            (["logits.npy", "y.npy", "--head", "w.npy"], "--head, --bias and --labels go with"),
            (["logits.npy", "y.npy", "--bias", "b.npy"], "--head, --bias and --labels go with"),
            (["--labels", "y.npy"], "--head, --bias and --labels go with --hidden"),
            ([], "PREDICTIONS and TARGETS are required (or --hidden, --head, --labels)"),
            (["logits.npy"], "PREDICTIONS and TARGETS are required"),
            (["logits.npy", *_HIDDEN], "--hidden replaces PREDICTIONS and TARGETS"),
            (["y.npy", "logits.npy", *_HIDDEN], "--hidden replaces PREDICTIONS and TARGETS"),
            ([*_HIDDEN, "--from", "probs"], "--hidden makes logits: --from probs does not apply"),
            ([*_HIDDEN, "--top-k", "10"],
             "--top-k 10 is larger than the number of classes (9) of HEAD"),
            ([*_HIDDEN, "--block-rows", "0"], "--block-rows must be at least 1, got 0"),
        ],
    )  # fmt: skip
    def test_usage_errors(self, capsys, tmp_path, rng, monkeypatch, argv, match):
        self._files(tmp_path, rng)
        monkeypatch.chdir(tmp_path)
        code, out, err = run(capsys, "eval", *argv)
        assert code == 2 and match in err and out == ""
        assert err.startswith("crossentropy eval: error: ")

    def test_standard_input_read_twice(self, capsys, tmp_path, rng, monkeypatch):
        self._files(tmp_path, rng)
        monkeypatch.chdir(tmp_path)
        _stdin(monkeypatch, "\n".join(map(str, np.load("y.npy"))).encode())
        code, _, err = run(capsys, "eval", "--hidden", "-", "--head", "w.npy", "--labels", "-")
        assert code == 2
        assert "HIDDEN: standard input ('-') is already read for LABELS" in err

    @pytest.mark.parametrize(
        ("files", "argv", "match"),
        [
            ({"w6.npy": np.zeros((9, 6))}, {"--head": "w6.npy"},
             "shape mismatch: HIDDEN h.npy has 5 features per token (83 x 5) but HEAD has "
             "shape (9, 6); HEAD must be the (vocabulary, 5) weight of the output layer"),
            ({"w3.npy": np.zeros((9, 5, 1))}, {"--head": "w3.npy"},
             "HEAD: 'w3.npy' must hold a (vocabulary, features) matrix, got shape (9, 5, 1)"),
            ({}, {"--head": "missing.npy"}, "HEAD: 'missing.npy' is neither a list of numbers"),
            ({}, {"--bias": "w.npy"},
             "shape mismatch: BIAS must hold one value per class of HEAD (9), got shape (9, 5)"),
            ({"b8.npy": np.zeros(8)}, {"--bias": "b8.npy"},
             "shape mismatch: BIAS must hold one value per class of HEAD (9), got shape (8,)"),
            ({"b3.npy": np.zeros((9, 1, 1))}, {"--bias": "b3.npy"},
             "BIAS: 'b3.npy' must hold one value per class of HEAD, got shape (9, 1, 1)"),
            ({}, {"--bias": "missing.npy"}, "BIAS: 'missing.npy' is neither a list of numbers"),
            ({}, {"--hidden": "missing.npy"}, "HIDDEN: no such file 'missing.npy'"),
            ({"h3.npy": np.zeros((83, 1, 5))}, {"--hidden": "h3.npy"},
             "HIDDEN: h3.npy must hold a 2-D (tokens, features) array, got shape (83, 1, 5)"),
            ({"hc.npy": np.zeros((83, 5), complex)}, {"--hidden": "hc.npy"},
             "HIDDEN: hc.npy holds complex128 values, not real numbers"),
            ({"h0.npy": np.zeros((0, 5))}, {"--hidden": "h0.npy"},
             "HIDDEN: h0.npy holds no tokens (shape (0, 5))"),
            ({"hnan.npy": "nan"}, {"--hidden": "hnan.npy"},
             "the logits HIDDEN @ HEAD.T have 1 row(s) with NaN (first: row 3)"),
            ({}, {"--labels": "missing.npy"}, "LABELS: no such file 'missing.npy'"),
            ({"y5.npy": np.arange(5)}, {"--labels": "y5.npy"},
             "shape mismatch: HIDDEN h.npy has 83 tokens (83 x 5) but LABELS has 5 labels; "
             "they must have one label per token"),
            ({"yf.npy": np.full(83, 1.5)}, {"--labels": "yf.npy"},
             "LABELS: labels must be integers; 83 are not (first: 1.5 at row 0)"),
            ({"y2.npy": np.zeros((83, 2), int)}, {"--labels": "y2.npy"},
             "LABELS: expected one class index per row, shape (rows,), got (83, 2)"),
            ({"y9.npy": np.full(83, 9)}, {"--labels": "y9.npy"},
             "83 label(s) out of range for 9 classes (valid: 0..8); first: 9 at row 0"),
        ],
    )  # fmt: skip
    def test_data_errors(self, capsys, tmp_path, rng, monkeypatch, files, argv, match):
        self._files(tmp_path, rng)
        monkeypatch.chdir(tmp_path)
        for name, a in files.items():
            if isinstance(a, str):  # the hidden states with one NaN, in row 3
                a = np.load("h.npy")
                a[3, 1] = np.nan
            np.save(name, a)
        options = {"--hidden": "h.npy", "--head": "w.npy", "--labels": "y.npy"} | argv
        code, out, err = run(capsys, "eval", *(x for kv in options.items() for x in kv))
        assert code == 1 and out == ""
        assert err.startswith(f"crossentropy eval: error: {match}") and err.count("\n") == 1
