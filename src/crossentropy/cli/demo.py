"""``crossentropy demo``: why classifiers are trained with cross-entropy, measured.

Trains two classifiers on scikit-learn's handwritten digits (1797 images of
8x8 pixels, 10 classes, shipped with scikit-learn: no download) in plain
NumPy: softmax regression and a one-hidden-layer MLP.  Each is trained four
times from the same initial weights, on the same split, with the same
mini-batches and the same learning rate, changing only the loss:

* softmax + cross-entropy: ``cross_entropy(z, y)``;
* softmax + MSE: ``mse_loss(softmax(z), onehot)``, summed over classes;
* sigmoid + MSE: ``mse_loss(sigmoid(z), onehot)``, summed over classes;
* multi-class hinge: ``multi_margin_loss(z, y)``.

The gradient with respect to the logits ``z`` comes from
:func:`crossentropy.value_and_grad`; the chain rule through softmax or sigmoid
and the MLP's backpropagation are written out by hand below.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._progress import Progress
from ._util import CLIError, UsageError, add_help_example, fmt, need, table, to_json

__all__ = ["LOSSES", "MODELS", "Run", "load_data", "register", "run_demo", "train"]

TARGET_ACCURACY = 0.90
DEFAULT_EPOCHS = 30
DEFAULT_LR = 0.05
BATCH_SIZE = 64
HIDDEN = 64

_EXAMPLES = """\
  crossentropy demo                        # 30 epochs, plot in ./crossentropy-demo/
  crossentropy demo --epochs 60 --seed 1 --out results/
  crossentropy demo --lr 0.05 --quiet
  crossentropy demo --epochs 5 --json
"""


# -- losses: value and dL/dlogits ---------------------------------------------------


def _softmax_ce(z: np.ndarray, y: np.ndarray, onehot: np.ndarray) -> tuple[float, np.ndarray]:
    import crossentropy as ce

    value, dz = ce.value_and_grad(ce.cross_entropy)(z, y)
    return float(value), dz


def _softmax_mse(z: np.ndarray, y: np.ndarray, onehot: np.ndarray) -> tuple[float, np.ndarray]:
    import crossentropy as ce

    n = z.shape[0]
    p = ce.softmax(z, axis=1)
    value, dp = ce.value_and_grad(ce.mse_loss)(p, onehot, reduction="sum")
    # chain rule through softmax: dL/dz_i = p_i (dL/dp_i - sum_j p_j dL/dp_j)
    dz = p * (dp - np.sum(dp * p, axis=1, keepdims=True))
    return float(value) / n, dz / n


def _sigmoid_mse(z: np.ndarray, y: np.ndarray, onehot: np.ndarray) -> tuple[float, np.ndarray]:
    import crossentropy as ce

    n = z.shape[0]
    s = ce.sigmoid(z)
    value, ds = ce.value_and_grad(ce.mse_loss)(s, onehot, reduction="sum")
    # chain rule through the sigmoid: ds/dz = s (1 - s), which vanishes where it saturates
    return float(value) / n, ds * s * (1 - s) / n


def _hinge(z: np.ndarray, y: np.ndarray, onehot: np.ndarray) -> tuple[float, np.ndarray]:
    import crossentropy as ce

    value, dz = ce.value_and_grad(ce.multi_margin_loss)(z, y)
    return float(value), dz


LossFn = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[float, np.ndarray]]

# name -> (loss on logits returning (value, dL/dz), description)
LOSSES: dict[str, tuple[LossFn, str]] = {
    "cross-entropy": (_softmax_ce, "softmax + cross-entropy"),
    "softmax-mse": (_softmax_mse, "softmax + MSE"),
    "sigmoid-mse": (_sigmoid_mse, "sigmoid + MSE"),
    "hinge": (_hinge, "multi-class hinge"),
}


# -- models: forward and hand-written backward ---------------------------------------


class Linear:
    """Softmax regression: ``z = x W + b``."""

    name = "softmax regression"

    def __init__(self, n_in: int, n_out: int, rng: np.random.Generator) -> None:
        self.params = {
            "W": rng.normal(0.0, 0.01, size=(n_in, n_out)),
            "b": np.zeros(n_out),
        }

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, Any]:
        return x @ self.params["W"] + self.params["b"], x

    def backward(self, cache: Any, dz: np.ndarray) -> dict[str, np.ndarray]:
        x = cache
        return {"W": x.T @ dz, "b": dz.sum(axis=0)}


class MLP:
    """One hidden ReLU layer: ``z = relu(x W1 + b1) W2 + b2`` (He initialisation)."""

    name = "MLP (64 ReLU)"

    def __init__(self, n_in: int, n_out: int, rng: np.random.Generator) -> None:
        self.params = {
            "W1": rng.normal(0.0, np.sqrt(2.0 / n_in), size=(n_in, HIDDEN)),
            "b1": np.zeros(HIDDEN),
            "W2": rng.normal(0.0, np.sqrt(1.0 / HIDDEN), size=(HIDDEN, n_out)),
            "b2": np.zeros(n_out),
        }

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, Any]:
        pre = x @ self.params["W1"] + self.params["b1"]
        h = np.maximum(pre, 0.0)
        return h @ self.params["W2"] + self.params["b2"], (x, pre, h)

    def backward(self, cache: Any, dz: np.ndarray) -> dict[str, np.ndarray]:
        x, pre, h = cache
        dh = dz @ self.params["W2"].T
        dpre = dh * (pre > 0)
        return {
            "W2": h.T @ dz,
            "b2": dz.sum(axis=0),
            "W1": x.T @ dpre,
            "b1": dpre.sum(axis=0),
        }


MODELS: dict[str, type] = {"softmax-regression": Linear, "mlp": MLP}


# -- data and training ---------------------------------------------------------------


@dataclass
class Data:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int = 10


def load_data(seed: int) -> Data:
    """Digits split 75/25, stratified by class with ``seed``, each pixel standardised
    with the training set's mean and standard deviation."""
    datasets = need("sklearn.datasets", "the demo")
    selection = need("sklearn.model_selection", "the demo")
    digits = datasets.load_digits()
    x = digits.data.astype(np.float64)
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = selection.train_test_split(
        x, y, test_size=0.25, random_state=seed, stratify=y
    )
    mean, std = x_tr.mean(axis=0), x_tr.std(axis=0)
    std[std == 0] = 1.0  # border pixels that are always blank
    return Data((x_tr - mean) / std, y_tr, (x_te - mean) / std, y_te)


@dataclass
class Run:
    """The history of one training run (index 0 is before the first epoch)."""

    model: str
    loss: str
    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    test_acc: list[float] = field(default_factory=list)
    test_logits: np.ndarray | None = None
    seconds: float = 0.0

    def epochs_to(self, accuracy: float = TARGET_ACCURACY) -> int | None:
        """The first epoch whose test accuracy reaches ``accuracy``, or None."""
        for epoch, acc in enumerate(self.test_acc):
            if acc >= accuracy:
                return epoch
        return None


def _accuracy(z: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(z, axis=1) == y))


def train(
    model_name: str,
    loss_name: str,
    data: Data,
    *,
    epochs: int,
    lr: float,
    seed: int,
    batch_size: int = BATCH_SIZE,
    progress: bool = True,
) -> Run:
    """Train one model with one loss by mini-batch gradient descent.

    The initial weights and the order of the mini-batches depend on ``seed``
    only, so every loss starts from the same weights and sees the same batches.
    """
    loss_fn = LOSSES[loss_name][0]
    rng = np.random.default_rng(seed)
    model = MODELS[model_name](data.x_train.shape[1], data.n_classes, rng)
    eye = np.eye(data.n_classes)
    onehot_train = eye[data.y_train]
    n = data.x_train.shape[0]
    run = Run(model_name, loss_name)
    start = time.perf_counter()

    def record() -> None:
        z_train, _ = model.forward(data.x_train)
        run.train_loss.append(loss_fn(z_train, data.y_train, onehot_train)[0])
        run.train_acc.append(_accuracy(z_train, data.y_train))
        run.test_acc.append(_accuracy(model.forward(data.x_test)[0], data.y_test))

    record()
    desc = f"{model.name:<18} {LOSSES[loss_name][1]:<23}"
    with Progress(epochs, desc, unit="epochs", enabled=progress) as bar:
        for _ in range(epochs):
            order = rng.permutation(n)
            for i in range(0, n, batch_size):
                idx = order[i : i + batch_size]
                z, cache = model.forward(data.x_train[idx])
                _, dz = loss_fn(z, data.y_train[idx], onehot_train[idx])
                for k, g in model.backward(cache, dz).items():
                    model.params[k] -= lr * g
            record()
            bar.update(1, loss=run.train_loss[-1], test_acc=run.test_acc[-1])
    run.test_logits = model.forward(data.x_test)[0]
    run.seconds = time.perf_counter() - start
    return run


def run_demo(
    *, epochs: int, seed: int, lr: float, progress: bool = True, models: tuple[str, ...] = ()
) -> tuple[Data, list[Run]]:
    """Train every model with every loss; return the data and the runs."""
    data = load_data(seed)
    with _one_blas_thread():
        runs = [
            train(m, loss, data, epochs=epochs, lr=lr, seed=seed, progress=progress)
            for m in (models or tuple(MODELS))
            for loss in LOSSES
        ]
    return data, runs


def _one_blas_thread() -> Any:
    """Single-threaded BLAS: on matrices this small, threads cost more than they save."""
    try:
        from threadpoolctl import threadpool_limits  # installed with scikit-learn
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


# -- report: table, plot, files ------------------------------------------------------


def results_table(runs: list[Run], epochs: int) -> str:
    header = ["model", "loss", "final train loss", "test accuracy", "epochs to 90%"]
    rows = []
    for r in runs:
        e = r.epochs_to()
        rows.append(
            [
                MODELS[r.model].name,
                LOSSES[r.loss][1],
                fmt(r.train_loss[-1]),
                f"{100 * r.test_acc[-1]:.1f}%",
                str(e) if e is not None else f"> {epochs}",
            ]
        )
    return table(header, rows, align="ll")


def _epochs(n: int) -> str:
    return f"{n} epoch" if n == 1 else f"{n} epochs"


def summary(runs: list[Run], epochs: int) -> list[str]:
    """One sentence per model comparing cross-entropy with softmax + MSE."""
    lines = []
    for m in dict.fromkeys(r.model for r in runs):
        by_loss = {r.loss: r for r in runs if r.model == m}
        ce_run, mse_run = by_loss["cross-entropy"], by_loss["softmax-mse"]
        e_ce, e_mse = ce_run.epochs_to(), mse_run.epochs_to()
        if e_ce is not None and e_mse is not None:
            speed = f"cross-entropy reached 90% test accuracy in {_epochs(e_ce)} against {e_mse} for softmax + MSE"
        elif e_ce is not None:
            speed = f"cross-entropy reached 90% test accuracy in {_epochs(e_ce)}; softmax + MSE did not within {epochs}"
        elif e_mse is not None:
            speed = f"softmax + MSE reached 90% test accuracy in {_epochs(e_mse)}; cross-entropy did not within {epochs}"
        else:
            speed = f"neither cross-entropy nor softmax + MSE reached 90% test accuracy within {_epochs(epochs)}"
        lines.append(
            f"{MODELS[m].name}: {speed}; after {_epochs(epochs)} "
            f"{100 * ce_run.test_acc[-1]:.1f}% against {100 * mse_run.test_acc[-1]:.1f}%."
        )  # fmt: skip
    return lines


def plot(runs: list[Run], path: Path, *, epochs: int, lr: float, seed: int) -> None:
    """Loss and test-accuracy curves, one row per model, written as a PNG (Agg, no display)."""
    figure(runs, epochs=epochs, lr=lr, seed=seed).savefig(path, dpi=110)


def figure(runs: list[Run], *, epochs: int, lr: float, seed: int) -> Any:
    """The matplotlib ``Figure`` of :func:`plot`."""
    need("matplotlib", "the demo")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    models = list(dict.fromkeys(r.model for r in runs))
    fig = Figure(figsize=(11, 4.2 * len(models)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(models), 2, squeeze=False)
    colors = dict(zip(LOSSES, ("tab:blue", "tab:orange", "tab:red", "tab:green")))
    for row, m in enumerate(models):
        ax_loss, ax_acc = axes[row]
        for r in (r for r in runs if r.model == m):
            x = np.arange(len(r.train_loss))
            label = LOSSES[r.loss][1]
            ax_loss.plot(x, r.train_loss, color=colors[r.loss], label=label, lw=1.8)
            ax_acc.plot(x, 100 * np.asarray(r.test_acc), color=colors[r.loss], label=label, lw=1.8)
        name = MODELS[m].name
        ax_loss.set_title(f"{name}: training loss (each run's own loss)")
        ax_loss.set_xlabel("epoch")
        ax_loss.set_ylabel("training loss (log scale)")
        ax_loss.set_yscale("log")
        ax_acc.set_title(f"{name}: test accuracy")
        ax_acc.set_xlabel("epoch")
        ax_acc.set_ylabel("test accuracy (%)")
        ax_acc.axhline(100 * TARGET_ACCURACY, color="gray", ls="--", lw=1, label="90%")
        chance = 100 / 10
        ax_acc.axhline(chance, color="gray", ls=":", lw=1, label="chance (10%)")
        ax_acc.set_ylim(0, 100)  # from chance at epoch 0 to the top: every epoch shows
        ax_acc.set_yticks(range(0, 101, 10))
        for ax in (ax_loss, ax_acc):
            ax.grid(True, alpha=0.3)
            ax.set_xlim(0, epochs)
        ax_loss.legend(loc="upper right")
        ax_acc.legend(loc="lower right")
    fig.suptitle(
        "Handwritten digits (8x8, 10 classes): each model trained with four losses\n"
        f"same initial weights, mini-batches ({BATCH_SIZE}) and learning rate ({lr}); "
        f"seed {seed}",
        fontsize=12,
    )
    # room between the figure title and the titles of the top row
    fig.get_layout_engine().set(h_pad=0.12, hspace=0.06)
    return fig


def write_history(runs: list[Run], path: Path) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "loss", "epoch", "train_loss", "train_accuracy", "test_accuracy"])
        for r in runs:
            for e, (tl, ta, te) in enumerate(zip(r.train_loss, r.train_acc, r.test_acc)):
                w.writerow([r.model, r.loss, e, repr(tl), repr(ta), repr(te)])


# -- command -------------------------------------------------------------------------


def register(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="train classifiers on handwritten digits: cross-entropy vs MSE vs hinge",
        **add_help_example(
            "Train softmax regression and a one-hidden-layer MLP on scikit-learn's\n"
            "handwritten digits (offline) in plain NumPy, once per loss (softmax +\n"
            "cross-entropy, softmax + MSE, sigmoid + MSE, multi-class hinge) with the\n"
            "same split, initial weights, mini-batches (64) and learning rate; print a\n"
            "comparison table and write a plot of the loss and accuracy curves.\n"
            "Needs the extras: pip install 'crossentropy[cli]'.",
            _EXAMPLES,
        ),
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=DEFAULT_EPOCHS,
        help="passes over the training set (%(default)s)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="split, initial weights, batch order (%(default)s)"
    )
    p.add_argument("--lr", type=float, default=DEFAULT_LR, help="learning rate (%(default)s)")
    p.add_argument(
        "--out",
        type=Path,
        default=Path("crossentropy-demo"),
        metavar="DIR",
        help="directory for curves.png, history.csv and the test logits (%(default)s/)",
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    if args.epochs < 1:
        raise UsageError(f"--epochs must be at least 1, got {args.epochs}")
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise UsageError(f"--lr must be positive (a finite number), got {args.lr}")
    out: Path = args.out
    try:
        out.mkdir(parents=True, exist_ok=True)  # before training: a bad --out fails at once
    except OSError as e:
        raise CLIError(f"cannot write to {str(out)!r}: {e}") from None
    start = time.perf_counter()
    try:
        data, runs = run_demo(
            epochs=args.epochs, seed=args.seed, lr=args.lr, progress=not (args.quiet or args.json)
        )
    except RuntimeWarning as e:  # an overflow: the weights blew up
        raise CLIError(f"training diverged with --lr {args.lr} ({e}); try a smaller --lr") from None
    try:
        png = out / "curves.png"
        plot(runs, png, epochs=args.epochs, lr=args.lr, seed=args.seed)
        write_history(runs, out / "history.csv")
        np.save(out / "test_labels.npy", data.y_test)
        for r in runs:
            np.save(out / f"test_logits_{r.model}_{r.loss}.npy", r.test_logits)
    except OSError as e:
        raise CLIError(f"cannot write to {str(out)!r}: {e}") from None
    elapsed = time.perf_counter() - start
    if args.json:
        print(to_json(_as_json(args, data, runs, png, elapsed)))
        return 0
    print(
        f"Handwritten digits: {len(data.y_train)} training and {len(data.y_test)} test images "
        f"(8x8, 10 classes); {_epochs(args.epochs)}, mini-batches of {BATCH_SIZE}, lr {args.lr}, "
        f"seed {args.seed}\n"
    )
    print(results_table(runs, args.epochs))
    print()
    for line in summary(runs, args.epochs):
        print(line)
    print(
        "\nTraining loss is each run's own objective (MSE summed over the 10 classes, averaged "
        "over images), so compare losses down a column, accuracies across."
    )
    print(f"\nwrote {png}, {out / 'history.csv'} and the test logits in {out}/ ({elapsed:.1f}s)")
    return 0


def _as_json(
    args: argparse.Namespace, data: Data, runs: list[Run], png: Path, seconds: float
) -> dict[str, Any]:
    """The settings, each run's final numbers and the files written, for ``--json``."""
    out: Path = args.out
    return {
        "train_images": len(data.y_train),
        "test_images": len(data.y_test),
        "classes": data.n_classes,
        "epochs": args.epochs,
        "batch_size": BATCH_SIZE,
        "lr": args.lr,
        "seed": args.seed,
        "runs": [
            {
                "model": r.model,
                "loss": r.loss,
                "final_train_loss": r.train_loss[-1],
                "test_accuracy": r.test_acc[-1],
                "epochs_to_90": r.epochs_to(),
                "logits": str(out / f"test_logits_{r.model}_{r.loss}.npy"),
            }
            for r in runs
        ],
        "plot": str(png),
        "history": str(out / "history.csv"),
        "labels": str(out / "test_labels.npy"),
        "seconds": seconds,
    }
