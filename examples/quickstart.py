"""Quickstart: a few losses computed by hand-checkable numbers, then a softmax regression
trained with value_and_grad.

Run with ``python examples/quickstart.py`` (NumPy only; no PyTorch needed).
"""

import numpy as np

import crossentropy as ce

# A picture of a horse, predicted cat / dog / horse with [0.1, 0.1, 0.8]: -log 0.8.
print("H([0,0,1], [0.1,0.1,0.8])      =", round(float(ce.info.cross_entropy([0, 0, 1.0], [0.1, 0.1, 0.8])), 4))

# Four-outcome lotteries: entropy in bits (2 for the uniform one).
for a in ([0.25] * 4, [0.1, 0.1, 0.1, 0.7], [0.001, 0.001, 0.001, 0.999]):
    print(f"entropy({a}) = {float(ce.entropy(a, base=2)):.4f} bits")

# CrossEntropyLoss = LogSoftmax + NLLLoss, on four rows of scores in [0, 1]
# (torch.manual_seed(100); torch.rand(4, 5), rounded) with labels [4, 3, 3, 2].
predict = np.array(
    [
        [0.1117, 0.8158, 0.2626, 0.4839, 0.6765],
        [0.7539, 0.2627, 0.0428, 0.2080, 0.1180],
        [0.1217, 0.7356, 0.7118, 0.7876, 0.4183],
        [0.9014, 0.9969, 0.7565, 0.2239, 0.3023],
    ]
)
label = np.array([4, 3, 3, 2])
print("cross_entropy                  =", round(float(ce.cross_entropy(predict, label)), 4))
print("nll_loss(log_softmax)          =", round(float(ce.nll_loss(ce.log_softmax(predict, axis=1), label)), 4))

# Train a 3-class softmax regression on three Gaussian blobs with analytic gradients.
rng = np.random.default_rng(0)
centers = np.array([[0.0, 3.0], [3.0, -2.0], [-3.0, -2.0]])
y = rng.integers(0, 3, size=600)
X = centers[y] + rng.normal(size=(600, 2))
W, b = np.zeros((2, 3)), np.zeros(3)
loss_and_grad = ce.value_and_grad(ce.cross_entropy)
for step in range(201):
    loss, dlogits = loss_and_grad(X @ W + b, y)  # dlogits = (softmax - one-hot) / N
    W -= 0.5 * X.T @ dlogits
    b -= 0.5 * dlogits.sum(axis=0)
    if step % 50 == 0:
        acc = np.mean(np.argmax(X @ W + b, axis=1) == y)
        print(f"step {step:3d}  loss {float(loss):.4f}  accuracy {acc:.3f}")
