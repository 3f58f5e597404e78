"""Before/after compare: split with a draggable divider, side by side, hold-to-see-original.

One view transform (zoom + the image point at the centre) serves both halves, so zoom and pan stay
in sync. Painting only draws QImages: below 100 % a smoothly scaled copy is made once per zoom
level and reused while panning or dragging the divider, so interaction never rescales 12 MP.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from PySide6.QtCore import QPointF, QRect, QRectF, QSize, Qt, Signal
from PySide6.QtGui import (
    QColor,
    QFont,
    QImage,
    QMouseEvent,
    QPainter,
    QPaintEvent,
    QPalette,
    QPen,
    QResizeEvent,
    QWheelEvent,
)
from PySide6.QtWidgets import QSizePolicy, QWidget

MIN_ZOOM, MAX_ZOOM = 0.02, 16.0
ZOOM_STEP = 1.25
DIVIDER_GRAB = 10  # pixels either side of the divider that start a divider drag


class CompareMode(StrEnum):
    SPLIT = "split"
    SIDE_BY_SIDE = "side"


class CompareView(QWidget):
    zoom_changed = Signal(float)  # the effective zoom (1.0 = 100 %)
    divider_moved = Signal(float)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMouseTracking(True)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setMinimumSize(320, 240)
        self._before: QImage | None = None
        self._after: QImage | None = None
        self._boxes: list[tuple[float, float, float, float]] = []
        self._included: list[bool] = []
        self._highlight: int | None = None
        self.show_boxes = False
        self.mode = CompareMode.SPLIT
        self.showing_original = False
        self.divider = 0.5  # fraction of the width (split mode)
        self._zoom: float | None = None  # None = fit
        self._center = QPointF(0, 0)  # image coordinates at the centre of each viewport
        self._drag: str | None = None  # "divider" | "pan"
        self._last_pos = QPointF()
        self._scaled: dict[tuple[int, int, int], QImage] = {}
        self.empty_title = "Drop photos or a folder here"
        self.empty_hint = "or use Add photos (Ctrl+O) · Add folder (Ctrl+Shift+O) · Paste (Ctrl+V)"
        self.message = ""  # shown over the image (e.g. "Restoring…") or instead of it (an error)
        self.drop_highlight = False

    # -- content -------------------------------------------------------------------------------

    def set_images(
        self, before: QImage | None, after: QImage | None, *, keep_view: bool = False,
        before_display: QImage | None = None, after_display: QImage | None = None,
    ) -> None:
        """Show a photo; ``*_display`` are the same images already scaled to the view's zoom (optional)."""
        same_size = (
            self._before is not None and before is not None and self._before.size() == before.size()
        )
        self._before, self._after = before, after
        self._scaled.clear()
        self._seed(0, before_display)
        self._seed(1, after_display)
        if not (keep_view and same_size):
            self._zoom = None
            self._center = self._image_center()
        self.update()
        self.zoom_changed.emit(self.zoom)

    def set_after(self, after: QImage | None, display: QImage | None = None) -> None:
        """Swap in a new restored image (fidelity or face choice changed); the view stays put.

        ``after`` None with a ``display`` image: only the screen-sized version is new so far (the
        full-resolution one follows); it is shown wherever the view is zoomed out.
        """
        if after is not None:
            self._after = after
        self._scaled = {k: v for k, v in self._scaled.items() if k[0] != 1}
        self._seed(1, display)
        self.update()

    def _seed(self, slot: int, display: QImage | None) -> None:
        if display is not None and not display.isNull():
            self._scaled[(slot, display.width(), display.height())] = display

    def set_faces(self, boxes: Sequence[tuple[float, float, float, float]], included: Sequence[bool]) -> None:
        self._boxes = list(boxes)
        self._included = list(included)
        self.update()

    def set_highlight(self, index: int | None) -> None:
        self._highlight = index
        self.update()

    def clear(self) -> None:
        self.set_images(None, None)
        self.set_faces([], [])
        self.message = ""

    @property
    def before(self) -> QImage | None:
        return self._before

    @property
    def after(self) -> QImage | None:
        return self._after

    def _image(self) -> QImage | None:
        return self._before if self._before is not None else self._after

    def _image_center(self) -> QPointF:
        image = self._image()
        return QPointF(image.width() / 2, image.height() / 2) if image is not None else QPointF(0, 0)

    # -- view state ----------------------------------------------------------------------------

    def _viewports(self) -> list[QRect]:
        rect = self.rect()
        if self.mode == CompareMode.SIDE_BY_SIDE and self._comparing():
            half = (rect.width() - 6) // 2
            return [QRect(0, 0, half, rect.height()), QRect(rect.width() - half, 0, half, rect.height())]
        return [rect]

    def _comparing(self) -> bool:
        return self._before is not None and self._after is not None and not self.showing_original

    def fit_zoom(self) -> float:
        image = self._image()
        if image is None or image.isNull():
            return 1.0
        port = self._viewports()[0]
        margin = 24
        return max(MIN_ZOOM, min((port.width() - margin) / image.width(), (port.height() - margin) / image.height()))

    @property
    def zoom(self) -> float:
        return self.fit_zoom() if self._zoom is None else self._zoom

    @property
    def is_fit(self) -> bool:
        return self._zoom is None

    def set_zoom(self, zoom: float | None, anchor: QPointF | None = None) -> None:
        """Zoom to ``zoom`` (None = fit) keeping the image point under ``anchor`` (widget coords) still."""
        image = self._image()
        if image is None:
            return
        if zoom is None:
            self._zoom = None
            self._center = self._image_center()
        else:
            zoom = min(MAX_ZOOM, max(MIN_ZOOM, zoom))
            if anchor is not None:
                port = self._port_at(anchor)
                before_point = self._to_image(anchor, port)
                self._zoom = zoom
                after_point = self._to_image(anchor, port)
                self._center += before_point - after_point
            else:
                self._zoom = zoom
            self._clamp_center()
        self.update()
        self.zoom_changed.emit(self.zoom)

    def zoom_in(self) -> None:
        self.set_zoom(self.zoom * ZOOM_STEP)

    def zoom_out(self) -> None:
        self.set_zoom(self.zoom / ZOOM_STEP)

    def focus_on(self, box: tuple[float, float, float, float]) -> None:
        """Zoom so that a face box fills about 40 % of the view, centred."""
        port = self._viewports()[0]
        x1, y1, x2, y2 = box
        size = max(x2 - x1, y2 - y1, 1.0)
        self._zoom = min(MAX_ZOOM, max(MIN_ZOOM, 0.4 * min(port.width(), port.height()) / size))
        self._center = QPointF((x1 + x2) / 2, (y1 + y2) / 2)
        self._clamp_center()
        self.update()
        self.zoom_changed.emit(self.zoom)

    def set_mode(self, mode: CompareMode) -> None:
        self.mode = mode
        self._scaled.clear()
        self.update()
        self.zoom_changed.emit(self.zoom)

    def set_showing_original(self, showing: bool) -> None:
        if showing != self.showing_original:
            self.showing_original = showing
            self.update()

    def _port_at(self, point: QPointF) -> QRect:
        for port in self._viewports():
            if port.contains(point.toPoint()):
                return port
        return self._viewports()[0]

    def _origin(self, port: QRect) -> QPointF:
        """Widget position of image pixel (0, 0) in a viewport."""
        zoom = self.zoom
        centre = QPointF(port.center()) + QPointF(0.5, 0.5)
        return centre - self._center * zoom

    def _to_image(self, point: QPointF, port: QRect) -> QPointF:
        return (point - self._origin(port)) / self.zoom

    def _clamp_center(self) -> None:
        image = self._image()
        if image is None:
            return
        self._center = QPointF(
            min(max(self._center.x(), 0.0), float(image.width())),
            min(max(self._center.y(), 0.0), float(image.height())),
        )

    def _divider_x(self) -> float:
        return self.rect().width() * self.divider

    # -- painting ------------------------------------------------------------------------------

    def sizeHint(self) -> QSize:
        return QSize(900, 640)

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        palette = self.palette()
        background = palette.color(QPalette.ColorRole.Base).darker(108)
        painter.fillRect(self.rect(), background)
        image = self._image()
        if image is None:
            self._paint_empty(painter)
            painter.end()
            return
        if self._comparing() and self.mode == CompareMode.SPLIT:
            port = self.rect()
            split = round(self._divider_x())
            painter.save()
            painter.setClipRect(QRect(0, 0, split, port.height()))
            self._paint_image(painter, self._before, port, 0)  # type: ignore[arg-type]
            painter.restore()
            painter.save()
            painter.setClipRect(QRect(split, 0, port.width() - split, port.height()))
            self._paint_image(painter, self._after, port, 1)  # type: ignore[arg-type]
            painter.restore()
            self._paint_boxes(painter, port)
            self._paint_divider(painter, split)
            self._paint_label(painter, "Before", port, left=True)
            self._paint_label(painter, "After", port, left=False)
        elif self._comparing():
            left, right = self._viewports()
            for port, picture, label, slot in ((left, self._before, "Before", 0), (right, self._after, "After", 1)):
                painter.save()
                painter.setClipRect(port)
                self._paint_image(painter, picture, port, slot)  # type: ignore[arg-type]
                self._paint_boxes(painter, port)
                painter.restore()
                self._paint_label(painter, label, port, left=True)
        else:
            port = self.rect()
            shown = self._before if self._before is not None else self._after
            self._paint_image(painter, shown, port, 0)  # type: ignore[arg-type]
            self._paint_boxes(painter, port)
            if self.showing_original and self._after is not None:
                self._paint_label(painter, "Original (release Space)", port, left=True)
            elif self._after is None and self._before is not None:
                self._paint_label(painter, "Original", port, left=True)
        if self.message:
            self._paint_banner(painter, self.message)
        painter.end()

    def _scaled_image(self, image: QImage, slot: int, zoom: float) -> QImage:
        width = max(1, round(image.width() * zoom))
        height = max(1, round(image.height() * zoom))
        key = (slot, width, height)
        found = self._scaled.get(key)
        if found is None:
            if len(self._scaled) > 6:
                self._scaled.clear()
            found = image.scaled(width, height, Qt.AspectRatioMode.IgnoreAspectRatio,
                                 Qt.TransformationMode.SmoothTransformation)
            self._scaled[key] = found
        return found

    def _paint_image(self, painter: QPainter, image: QImage, port: QRect, slot: int) -> None:
        zoom = self.zoom
        origin = self._origin(port)
        if zoom < 1.0:
            scaled = self._scaled_image(image, slot, zoom)
            painter.drawImage(QPointF(round(origin.x()), round(origin.y())), scaled)
            return
        # At 100 % and above draw only the visible part: smoothed up to 300 %, pixel-exact beyond
        # (where people zoom to inspect single pixels).
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, zoom < 3.0)
        visible = QRectF(port).intersected(QRectF(origin, QSize(image.width(), image.height()) * zoom))
        if visible.isEmpty():
            return
        source = QRectF((visible.topLeft() - origin) / zoom, visible.size() / zoom)
        painter.drawImage(visible, image, source)

    def _paint_boxes(self, painter: QPainter, port: QRect) -> None:
        if not self._boxes or not (self.show_boxes or self._highlight is not None):
            return
        origin, zoom = self._origin(port), self.zoom
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        font = QFont(self.font())
        font.setBold(True)
        painter.setFont(font)
        for index, (x1, y1, x2, y2) in enumerate(self._boxes):
            if not self.show_boxes and index != self._highlight:
                continue
            included = self._included[index] if index < len(self._included) else True
            color = QColor("#3ddc97") if included else QColor("#e5484d")
            pen = QPen(color, 3 if index == self._highlight else 2)
            if not included:
                pen.setStyle(Qt.PenStyle.DashLine)
            painter.setPen(pen)
            painter.setBrush(Qt.BrushStyle.NoBrush)
            rect = QRectF(origin + QPointF(x1, y1) * zoom, origin + QPointF(x2, y2) * zoom)
            painter.drawRoundedRect(rect, 4, 4)
            tag = QRectF(rect.left(), rect.top() - 20, 24, 18)
            painter.fillRect(tag, color)
            painter.setPen(QColor("black"))
            painter.drawText(tag, Qt.AlignmentFlag.AlignCenter, str(index + 1))
        painter.restore()

    def _paint_divider(self, painter: QPainter, x: int) -> None:
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setPen(QPen(QColor(255, 255, 255, 230), 2))
        painter.drawLine(x, 0, x, self.height())
        centre = QPointF(x, self.height() / 2)
        painter.setBrush(QColor(255, 255, 255, 235))
        painter.setPen(QPen(QColor(0, 0, 0, 90), 1))
        painter.drawEllipse(centre, 15, 15)
        painter.setPen(QPen(QColor(40, 40, 40), 2))
        for sign in (-1, 1):
            tip = centre + QPointF(sign * 9, 0)
            painter.drawLine(tip, tip + QPointF(-sign * 5, -5))
            painter.drawLine(tip, tip + QPointF(-sign * 5, 5))
        painter.restore()

    def _paint_label(self, painter: QPainter, text: str, port: QRect, *, left: bool) -> None:
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        font = QFont(self.font())
        font.setBold(True)
        painter.setFont(font)
        width = painter.fontMetrics().horizontalAdvance(text) + 20
        x = port.left() + 12 if left else port.right() - width - 12
        rect = QRectF(x, port.top() + 12, width, 24)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QColor(0, 0, 0, 150))
        painter.drawRoundedRect(rect, 12, 12)
        painter.setPen(QColor("white"))
        painter.drawText(rect, Qt.AlignmentFlag.AlignCenter, text)
        painter.restore()

    def _paint_banner(self, painter: QPainter, text: str) -> None:
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        metrics = painter.fontMetrics()
        width = min(metrics.horizontalAdvance(text) + 32, self.width() - 40)
        rect = QRectF((self.width() - width) / 2, self.height() - 56, width, 32)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QColor(0, 0, 0, 170))
        painter.drawRoundedRect(rect, 16, 16)
        painter.setPen(QColor("white"))
        elided = metrics.elidedText(text, Qt.TextElideMode.ElideMiddle, int(width) - 24)
        painter.drawText(rect, Qt.AlignmentFlag.AlignCenter, elided)
        painter.restore()

    def _paint_empty(self, painter: QPainter) -> None:
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        text_color = self.palette().color(QPalette.ColorRole.Text)
        accent = self.palette().color(QPalette.ColorRole.Highlight)
        frame = QRectF(self.rect()).adjusted(28, 28, -28, -28)
        pen = QPen(accent if self.drop_highlight else QColor(text_color.red(), text_color.green(),
                                                             text_color.blue(), 70), 2)
        pen.setStyle(Qt.PenStyle.DashLine)
        painter.setPen(pen)
        painter.setBrush(QColor(accent.red(), accent.green(), accent.blue(), 28) if self.drop_highlight
                         else Qt.BrushStyle.NoBrush)
        painter.drawRoundedRect(frame, 18, 18)

        centre = frame.center()
        icon = QRectF(centre.x() - 34, centre.y() - 96, 68, 56)
        painter.setPen(QPen(QColor(text_color.red(), text_color.green(), text_color.blue(), 150), 3))
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawRoundedRect(icon, 8, 8)
        painter.drawEllipse(QPointF(icon.center().x(), icon.center().y() + 3), 14, 14)
        painter.drawLine(QPointF(icon.left() + 10, icon.top()), QPointF(icon.left() + 20, icon.top() - 8))
        painter.drawLine(QPointF(icon.left() + 20, icon.top() - 8), QPointF(icon.left() + 34, icon.top() - 8))

        title = QFont(self.font())
        title.setPointSizeF(self.font().pointSizeF() * 1.6)
        title.setBold(True)
        painter.setFont(title)
        painter.setPen(text_color)
        painter.drawText(QRectF(frame.left(), centre.y() - 24, frame.width(), 40), Qt.AlignmentFlag.AlignCenter,
                         self.message or self.empty_title)
        painter.setFont(self.font())
        hint_color = QColor(text_color)
        hint_color.setAlpha(160)
        painter.setPen(hint_color)
        painter.drawText(QRectF(frame.left(), centre.y() + 20, frame.width(), 28), Qt.AlignmentFlag.AlignCenter,
                         self.empty_hint if not self.message else "")
        painter.restore()

    # -- interaction ---------------------------------------------------------------------------

    def resizeEvent(self, event: QResizeEvent) -> None:
        if self._zoom is None:
            self._scaled.clear()
            self.zoom_changed.emit(self.zoom)
        super().resizeEvent(event)

    def _near_divider(self, x: float) -> bool:
        return self._comparing() and self.mode == CompareMode.SPLIT and abs(x - self._divider_x()) <= DIVIDER_GRAB

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if event.button() != Qt.MouseButton.LeftButton or self._image() is None:
            return super().mousePressEvent(event)
        position = event.position()
        self._drag = "divider" if self._near_divider(position.x()) else "pan"
        self._last_pos = position
        if self._drag == "pan":
            self.setCursor(Qt.CursorShape.ClosedHandCursor)
        else:
            self._move_divider(position.x())
        event.accept()

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        position = event.position()
        if self._drag == "divider":
            self._move_divider(position.x())
        elif self._drag == "pan":
            delta = position - self._last_pos
            self._last_pos = position
            if self._zoom is None:
                self._zoom = self.fit_zoom()
            self._center -= delta / self.zoom
            self._clamp_center()
            self.update()
        elif self._near_divider(position.x()):
            self.setCursor(Qt.CursorShape.SplitHCursor)
        else:
            self.setCursor(Qt.CursorShape.OpenHandCursor if self._image() is not None else Qt.CursorShape.ArrowCursor)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        self._drag = None
        self.setCursor(Qt.CursorShape.ArrowCursor)
        super().mouseReleaseEvent(event)

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:
        if self._image() is None:
            return
        self.set_zoom(None if not self.is_fit and abs(self.zoom - 1.0) < 1e-6 else 1.0, event.position())

    def wheelEvent(self, event: QWheelEvent) -> None:
        if self._image() is None:
            return
        steps = event.angleDelta().y() / 120.0
        if steps:
            self.set_zoom(self.zoom * (ZOOM_STEP**steps), event.position())
        event.accept()

    def _move_divider(self, x: float) -> None:
        width = max(self.rect().width(), 1)
        self.divider = min(max(x / width, 0.0), 1.0)
        self.update()
        self.divider_moved.emit(self.divider)
