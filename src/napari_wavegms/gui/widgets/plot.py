"""A tiny live plot of training loss and validation Dice, painted with QPainter.

Hand-written rather than matplotlib or pyqtgraph: napari ships neither, and two polylines with a
legend are not worth a new dependency for every user of the plugin.
"""

from __future__ import annotations

from qtpy.QtCore import QPointF, Qt
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QWidget

LOSS_COLOUR = QColor(90, 170, 255)
DICE_COLOUR = QColor(255, 170, 60)


class LossPlot(QWidget):
    """Loss per step (left scale, its own range) and validation Dice per epoch (right scale, 0–1)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumHeight(120)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.losses: list[tuple[float, float]] = []  # (step, loss)
        self.dice: list[tuple[float, float]] = []  # (step, dice)
        self.total_steps = 1

    def clear(self) -> None:
        self.losses, self.dice, self.total_steps = [], [], 1
        self.update()

    def add_loss(self, step: float, loss: float, total_steps: int) -> None:
        self.total_steps = max(1, total_steps)
        self.losses.append((step, loss))
        self.update()

    def add_dice(self, step: float, dice: float) -> None:
        self.dice.append((step, dice))
        self.update()

    def paintEvent(self, _event) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        w, h = self.width(), self.height()
        left, right, top, bottom = 8, 8, 18, 8
        pw, ph = max(1, w - left - right), max(1, h - top - bottom)
        p.fillRect(self.rect(), QColor(30, 33, 40))
        p.setPen(QPen(QColor(90, 90, 100), 1))
        p.drawRect(left, top, pw, ph)

        def x_of(step: float) -> float:
            return left + pw * step / self.total_steps

        if self.losses:
            values = [v for _, v in self.losses]
            lo, hi = min(values), max(values)
            span = hi - lo or 1.0
            poly = QPolygonF([QPointF(x_of(s), top + ph * (1 - (v - lo) / span)) for s, v in self.losses])
            p.setPen(QPen(LOSS_COLOUR, 1.5))
            p.drawPolyline(poly)
        if self.dice:
            poly = QPolygonF([QPointF(x_of(s), top + ph * (1 - min(max(d, 0.0), 1.0))) for s, d in self.dice])
            p.setPen(QPen(DICE_COLOUR, 2))
            p.drawPolyline(poly)
            for point in poly:
                p.drawEllipse(point, 2.5, 2.5)
        p.setPen(LOSS_COLOUR)
        loss_text = f"loss {self.losses[-1][1]:.3f}" if self.losses else "loss"
        p.drawText(
            left, 2, pw // 2, top - 2, Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, loss_text
        )
        p.setPen(DICE_COLOUR)
        dice_text = f"val Dice {self.dice[-1][1]:.3f}" if self.dice else "val Dice"
        p.drawText(
            left + pw // 2,
            2,
            pw // 2,
            top - 2,
            Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter,
            dice_text,
        )
        p.end()
