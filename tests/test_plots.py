"""rmtl.lab.plots: panel layout and readable labels."""

import numpy as np
from conftest import optional

optional("matplotlib", "plots")
from rmtl.lab import plots  # noqa: E402 - after optional()


def history(scale):
    return {
        "epochs": [
            {"epoch": e, "train_loss": scale / e, "valid_auc": 0.6 + 0.01 * e} for e in (1, 2, 3)
        ]
    }


def test_training_curves_give_each_run_its_own_loss_axis():
    # stage 3's loss is weighted (about lam Q larger): it must not share stage 1's scale
    fig = plots.training_curves({"stage 1": history(0.2), "stage 3": history(3.0)})
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == [
        "training loss, stage 1",
        "training loss, stage 3",
        "validation AUC",
    ]
    assert len(axes[0].lines) == len(axes[1].lines) == 1 and len(axes[2].lines) == 2
    assert axes[1].get_ylim()[1] > 1 > axes[0].get_ylim()[1]
    many = plots.training_curves({f"run {k}": history(k + 1.0) for k in range(6)})
    shown = [ax for ax in many.axes if ax.get_visible()]
    assert len(shown) == 7 and many.get_figwidth() < 15  # wrapped into rows of three


def test_cell_labels_contrast_with_the_cell():
    fig, (ax,) = plots.figure(1)
    image = ax.imshow(np.array([[-1.0, 0.0, 1.0]]), cmap="RdBu", vmin=-1, vmax=1)
    for j in range(3):
        plots.annotate_cell(ax, image, 0, j, ["+0.0010", "±0.0004"])
    colours = [t.get_color() for t in ax.texts]
    assert colours == ["white", "black", "white"]  # dark red, near-white, dark blue
