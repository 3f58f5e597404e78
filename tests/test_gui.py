"""The desktop app through pytest-qt: real engine, real photos written to tmp_path.

One Enhancer (restora-lite + MTCNN) is loaded for the whole file and shared by every window
through an ``EnginePool``; each test gets a fresh window with its own QSettings INI file.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PIL import Image as PILImage
from PySide6.QtCore import QMimeData, QModelIndex, QPointF, QSettings, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent, QImage
from PySide6.QtWidgets import QAbstractItemView, QApplication

from engine.errors import ModelError
from engine.imageio import load_image
from engine.resample import resize
from gui.compare_view import CompareMode
from gui.imaging import to_qimage
from gui.main_window import MainWindow
from gui.queue_model import QueueModel, Status
from gui.settings import AppSettings, load_settings, save_settings
from gui.workers import EnginePool, compose_output, display_size, scaled_restoration

RUN_TIMEOUT = 60_000  # ms: a shared 2-core machine; one photo takes about a second


@pytest.fixture(scope="module")
def engine_pool() -> EnginePool:
    pool = EnginePool()
    try:
        pool.get(AppSettings().enhance_settings())
    except ModelError as error:
        pytest.skip(f"the default models are not installed: {error}")
    return pool


@pytest.fixture(scope="module")
def enhancer(engine_pool: EnginePool):  # type: ignore[no-untyped-def]
    return engine_pool.get(AppSettings().enhance_settings())


@pytest.fixture()
def photos(tmp_path: Path, astronaut: np.ndarray) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    PILImage.fromarray(astronaut).save(folder / "astronaut.jpg", quality=92)
    return folder


@pytest.fixture()
def ini(tmp_path: Path) -> Path:
    path = tmp_path / "restora.ini"
    store = QSettings(str(path), QSettings.Format.IniFormat)
    save_settings(AppSettings(output_dir=str(tmp_path / "out"), workers=1), store)
    return path


@pytest.fixture()
def window(qtbot, ini: Path, engine_pool: EnginePool) -> Iterator[MainWindow]:  # type: ignore[no-untyped-def]
    win = MainWindow(QSettings(str(ini), QSettings.Format.IniFormat), engine_pool)
    qtbot.addWidget(win)
    win.resize(1200, 800)
    win.show()
    yield win
    win.close()


def drop(window: MainWindow, paths: list[Path]) -> None:
    """A real drag-and-drop sequence (enter, then drop) with file URLs, as a file manager sends it."""
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    actions = Qt.DropAction.CopyAction
    enter = QDragEnterEvent(QPointF(50, 50), actions, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(window, enter)
    assert enter.isAccepted()
    event = QDropEvent(QPointF(50, 50), actions, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(window, event)


def add_and_run(qtbot, window: MainWindow, paths: list[Path]) -> None:  # type: ignore[no-untyped-def]
    with qtbot.waitSignal(window.inputs_added, timeout=10_000):
        drop(window, paths)
    with qtbot.waitSignal(window.runner.run_finished, timeout=RUN_TIMEOUT):
        window.start()


def item_named(window: MainWindow, name: str):  # type: ignore[no-untyped-def]
    return next(item for item in window.model.items if item.name == name)


def select(qtbot, window: MainWindow, name: str):  # type: ignore[no-untyped-def]
    """Select a processed photo and wait until its restored preview is on screen."""
    item = item_named(window, name)
    row = window.model.row_of(item.id)
    if window.current_item() is item and window.compare.after is not None:
        return item
    with qtbot.waitSignal(window.preview_updated, timeout=RUN_TIMEOUT,
                          check_params_cb=lambda r: r.item_id == item.id and r.after is not None):
        window.queue_view.setCurrentIndex(window.model.index(row))
        window._show_current()
    return item


def image_bytes(image: QImage) -> bytes:
    converted = image.convertToFormat(QImage.Format.Format_RGB888)
    return bytes(converted.constBits())


# -- tests ---------------------------------------------------------------------------------------


def test_empty_window_invites_a_drop(qtbot, ini: Path) -> None:  # type: ignore[no-untyped-def]
    window = MainWindow(QSettings(str(ini), QSettings.Format.IniFormat), EnginePool())  # no model loaded yet
    qtbot.addWidget(window)
    window.show()
    assert window.model.rowCount() == 0
    assert window.compare.empty_title == "Drop photos or a folder here"
    assert not window.act_start.isEnabled()


def test_drop_files_and_folders_adds_rows(qtbot, window: MainWindow, photos: Path, astronaut: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    nested = photos / "album" / "2001"
    nested.mkdir(parents=True)
    PILImage.fromarray(astronaut[:, ::-1]).save(nested / "mirrored.png")
    (photos / "album" / "notes.txt").write_text("not a photo")
    single = photos.parent / "single.jpg"
    PILImage.fromarray(astronaut).save(single)

    with qtbot.waitSignal(window.inputs_added, timeout=10_000) as blocker:
        drop(window, [single, photos])
    added = blocker.args[0]
    names = sorted(item.name for item in added)
    assert names == ["astronaut.jpg", "mirrored.png", "single.jpg"]  # folder walked, sub-folders too
    assert window.model.rowCount() == 3
    assert {item.status for item in window.model.items} == {Status.QUEUED}
    assert item_named(window, "mirrored.png").relative == Path("album/2001/mirrored.png")
    with qtbot.waitSignal(window.inputs_added, timeout=10_000):
        drop(window, [single])  # the same file again is not queued twice
    assert window.model.rowCount() == 3
    assert window.act_start.isEnabled()


def test_queue_runs_saves_and_isolates_a_broken_file(qtbot, window: MainWindow, photos: Path,  # type: ignore[no-untyped-def]
                                                     tmp_path: Path) -> None:
    broken = photos / "broken.jpg"
    broken.write_text("this is a text file, not a JPEG")
    add_and_run(qtbot, window, [photos / "astronaut.jpg", broken])

    good, bad = item_named(window, "astronaut.jpg"), item_named(window, "broken.jpg")
    assert good.status == Status.DONE and good.faces == 1 and good.seconds is not None
    assert bad.status == Status.ERROR
    assert "broken.jpg" in (bad.error or "") and "not an image" in (bad.error or "")
    assert "Traceback" not in window.log_view.toPlainText()
    assert "broken.jpg" in window.log_view.toPlainText()

    out = tmp_path / "out"
    assert not out.exists() or not any(out.iterdir())  # nothing is written before Save
    select(qtbot, window, "astronaut.jpg")
    with qtbot.waitSignal(window.saves_finished, timeout=RUN_TIMEOUT) as blocker:
        window.save_selected()
    assert blocker.args == [1, 0]
    saved = out / "astronaut.jpg"
    assert saved.is_file() and good.output == saved
    restored = load_image(saved)
    original = load_image(photos / "astronaut.jpg")
    assert restored.pixels.shape == original.pixels.shape
    assert np.abs(restored.pixels.astype(int) - original.pixels.astype(int)).mean() > 0.05  # the face changed
    assert (photos / "astronaut.jpg").stat().st_size > 0 and sorted(p.name for p in photos.iterdir()) == [
        "astronaut.jpg", "broken.jpg"]  # originals untouched, nothing written next to them


def test_save_refuses_to_overwrite_the_original(qtbot, window: MainWindow, photos: Path,  # type: ignore[no-untyped-def]
                                                monkeypatch) -> None:
    add_and_run(qtbot, window, [photos / "astronaut.jpg"])
    before = (photos / "astronaut.jpg").read_bytes()
    window.settings_panel.set_settings(replace(window.settings, output_dir=str(photos), suffix=""))
    window.settings_panel._emit()
    shown: list[str] = []
    monkeypatch.setattr("gui.main_window.QMessageBox.warning", lambda _p, _t, text: shown.append(text))
    window.save_all_done()
    assert shown and "overwrite" in shown[0]
    assert (photos / "astronaut.jpg").read_bytes() == before


def test_cancel_leaves_no_partial_output(qtbot, window: MainWindow, photos: Path, tmp_path: Path,  # type: ignore[no-untyped-def]
                                         astronaut: np.ndarray) -> None:
    for index in range(3):
        PILImage.fromarray(np.roll(astronaut, index * 7, axis=1)).save(photos / f"copy{index}.jpg")
    window.settings_panel.auto_save.setChecked(True)  # each photo would be written as soon as it is done
    assert window.settings.auto_save
    with qtbot.waitSignal(window.inputs_added, timeout=10_000):
        drop(window, [photos])
    with qtbot.waitSignal(window.runner.run_finished, timeout=RUN_TIMEOUT):
        window.start()
        window.cancel_all()
    out = tmp_path / "out"
    leftovers = list(out.rglob("*")) if out.exists() else []
    assert leftovers == []  # no output and no temporary file
    assert all(item.status == Status.QUEUED for item in window.model.items)
    assert not window.runner.active


def test_fidelity_reblends_without_running_the_model(qtbot, window: MainWindow, photos: Path,  # type: ignore[no-untyped-def]
                                                     enhancer, monkeypatch) -> None:
    calls = {"restore": 0}
    original_restore = enhancer.restorer.restore

    def counting_restore(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["restore"] += 1
        return original_restore(*args, **kwargs)

    monkeypatch.setattr(enhancer.restorer, "restore", counting_restore)
    add_and_run(qtbot, window, [photos / "astronaut.jpg"])
    assert calls["restore"] == 1
    select(qtbot, window, "astronaut.jpg")
    first = image_bytes(window.compare.after)  # type: ignore[arg-type]

    target = 0.0 if window.settings.fidelity > 0.25 else 1.0
    with qtbot.waitSignal(window.preview_updated, timeout=10_000,
                          check_params_cb=lambda r: r.after is not None and r.before is None) as blocker:
        window.settings_panel.fidelity.setValue(target)
    assert window.settings.fidelity == target
    assert image_bytes(window.compare.after) != first  # type: ignore[arg-type]
    assert calls["restore"] == 1  # re-blended from the cached model output
    assert blocker.args[0].milliseconds < 2000

    # Excluding the only face brings back the original pixels, again without inference.
    face_strip = window.face_strip
    assert face_strip.count() == 1 and face_strip.isVisible()
    with qtbot.waitSignal(window.preview_updated, timeout=10_000):
        face_strip.set_included(0, False)
    assert image_bytes(window.compare.after) == image_bytes(window.compare.before)  # type: ignore[arg-type]
    assert calls["restore"] == 1


def test_settings_and_view_persist_across_restarts(qtbot, ini: Path) -> None:  # type: ignore[no-untyped-def]
    engine_pool = EnginePool()  # models load lazily: none is needed here
    first = MainWindow(QSettings(str(ini), QSettings.Format.IniFormat), engine_pool)
    qtbot.addWidget(first)
    panel = first.settings_panel
    panel.fidelity.setValue(0.8)
    panel.min_face.setValue(40)
    panel.only_largest.setChecked(True)
    panel.format.setCurrentIndex(panel.format.findData("png"))
    panel.suffix.setText("_fixed")
    panel.suffix.editingFinished.emit()
    first.set_mode(CompareMode.SIDE_BY_SIDE)
    first.act_boxes.setChecked(True)
    first.show()
    first.close()
    stored = QSettings(str(ini), QSettings.Format.IniFormat).value("window/geometry")
    assert stored is not None and not stored.isEmpty()  # the offscreen screen is too small to test its size

    second = MainWindow(QSettings(str(ini), QSettings.Format.IniFormat), engine_pool)
    qtbot.addWidget(second)
    second.show()
    settings = second.settings
    assert settings.fidelity == pytest.approx(0.8)
    assert settings.min_face == 40 and settings.only_largest
    assert settings.format == "png" and settings.suffix == "_fixed"
    assert second.settings_panel.min_face.value() == 40
    assert second.compare.mode == CompareMode.SIDE_BY_SIDE
    assert second.act_boxes.isChecked() and second.compare.show_boxes
    second.close()


def test_broken_settings_file_falls_back_per_value(tmp_path: Path) -> None:
    store = QSettings(str(tmp_path / "bad.ini"), QSettings.Format.IniFormat)
    store.setValue("settings/fidelity", "7.5")  # out of range
    store.setValue("settings/precision", "int4")  # unknown
    store.setValue("settings/min_face", "32")
    store.sync()
    loaded = load_settings(store)
    assert loaded.fidelity == AppSettings().fidelity
    assert loaded.precision == "auto"
    assert loaded.min_face == 32


def test_queue_model_operations(qtbot) -> None:  # type: ignore[no-untyped-def]
    from engine.batch import InputItem

    model = QueueModel()
    wanted: list[int] = []
    model.thumbnail_wanted.connect(lambda item_id, _path: wanted.append(item_id))
    items = model.add(InputItem(Path(f"/photos/{i:04d}.jpg"), Path(f"{i:04d}.jpg")) for i in range(2000))
    assert model.rowCount() == 2000 and wanted == []  # no thumbnail until a row is painted
    model.data(model.index(5), Qt.ItemDataRole.DecorationRole)
    model.data(model.index(5), Qt.ItemDataRole.DecorationRole)
    assert wanted == [items[5].id]  # asked for once
    assert model.move(0, 1) == 1 and model.items[1] is items[0]
    items[3].status = Status.DONE
    items[4].status = Status.ERROR
    assert model.counts()[Status.DONE] == 1
    assert len(model.remove_where(Status.DONE)) == 1 and model.rowCount() == 1999


def test_fidelity_preview_of_a_12_megapixel_photo_agrees_with_the_full_result(enhancer, astronaut: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    """Fidelity changes re-compose from cached faces, on a 4000x3000 photo.

    What the view shows first is composed over the photo scaled to the view (zoom 0.25 here, a
    1000 px wide window); the full-resolution image follows from the same job. The times are printed
    for docs/GUI.md, not asserted: speed is for benchmarks, not unit tests.
    """
    import time

    from engine.imageio import Image

    big = resize(astronaut, (3000, 3000), "cubic")
    canvas = np.zeros((3000, 4000, 3), np.uint8)
    canvas[:, 500:3500] = big
    restoration = enhancer.enhance(Image(pixels=canvas))
    assert restoration.face_count == 1
    small = scaled_restoration(restoration, 0.25)
    assert (small.source.width, small.source.height) == display_size(4000, 3000, 0.25)

    def median_ms(make) -> float:  # type: ignore[no-untyped-def]
        timings = []
        for fidelity in (0.1, 0.4, 0.7, 0.9, 0.3):
            started = time.perf_counter()
            make(replace(AppSettings(), fidelity=fidelity))
            timings.append((time.perf_counter() - started) * 1000)
        return sorted(timings)[len(timings) // 2]

    screen = median_ms(lambda s: to_qimage(compose_output(small, s, None, upscale=1).pixels))
    full = median_ms(lambda s: to_qimage(compose_output(restoration, s, None, upscale=1).pixels))
    print(f"12 MP fidelity change: on screen in {screen:.1f} ms, full resolution in {full:.1f} ms")
    # The screen-sized result must agree with the full one scaled down (same faces, same blend).
    settings = replace(AppSettings(), fidelity=0.3)
    full_small = resize(compose_output(restoration, settings, None, upscale=1).pixels, display_size(4000, 3000, 0.25))
    difference = np.abs(compose_output(small, settings, None, upscale=1).pixels.astype(int) - full_small).mean()
    assert difference < 3.0
    # A different fidelity gives a different photo: the preview re-blends, it does not replay a cache.
    other = compose_output(small, replace(settings, fidelity=0.9), None, upscale=1).pixels
    assert np.abs(other.astype(int) - compose_output(small, settings, None, upscale=1).pixels).mean() > 0.05


def test_rerunning_the_model_on_cached_faces_restores_them_as_the_engine_did(  # type: ignore[no-untyped-def]
    enhancer, astronaut: np.ndarray
) -> None:
    """The fidelity re-run (a model with a fidelity input) takes the cached crops the way the engine
    restored them: a coarse face (a small photo blown up) as itself and mirrored, a sharp one once."""
    from engine.imageio import Image
    from gui.workers import rerun_native

    enlarged = resize(resize(astronaut, (96, 96), "area"), (512, 512), "cubic")
    for photo, coarse in ((enlarged, True), (astronaut, False)):
        restoration = enhancer.enhance(Image(pixels=photo))
        (face,) = restoration.faces
        assert face.coarse is coarse
        (rerun,) = rerun_native(enhancer, restoration, 0.3).faces
        assert np.array_equal(rerun.restored, face.restored) and rerun.native_fidelity == 0.3


def test_rows_drag_to_a_new_place_and_files_dropped_on_the_queue_still_add(  # type: ignore[no-untyped-def]
    qtbot, window: MainWindow, photos: Path
) -> None:
    from engine.batch import InputItem
    from gui.queue_model import ROWS_MIME_TYPE

    view = window.queue_view
    assert view.dragDropMode() == QAbstractItemView.DragDropMode.InternalMove
    model = QueueModel()
    items = model.add(InputItem(Path(f"/photos/{i}.jpg"), Path(f"{i}.jpg")) for i in range(5))
    moved = qtbot.waitSignal(model.rowsMoved, timeout=1000)
    with moved:
        # What QListView's internal drop does: Qt's moveRow, destination counted before the move.
        assert model.moveRow(QModelIndex(), 0, QModelIndex(), 3)
    assert [i.name for i in model.items] == ["1.jpg", "2.jpg", "0.jpg", "3.jpg", "4.jpg"]
    assert model.moveRow(QModelIndex(), 4, QModelIndex(), 0)
    assert [i.name for i in model.items] == ["4.jpg", "1.jpg", "2.jpg", "0.jpg", "3.jpg"]
    assert not model.moveRow(QModelIndex(), 1, QModelIndex(), 2)  # onto itself: nothing to do
    assert set(model.items) == set(items)
    mime = model.mimeData([model.index(3), model.index(1)])
    assert bytes(mime.data(ROWS_MIME_TYPE).data()) == b"1,3"
    assert model.canDropMimeData(mime, Qt.DropAction.MoveAction, -1, -1, QModelIndex())
    # A file manager's drop onto the queue list itself (not the window) is still taken as photos.
    urls = QMimeData()
    urls.setUrls([QUrl.fromLocalFile(str(next(photos.glob("*.jpg"))))])
    point = QPointF(20, 20)
    enter = QDragEnterEvent(point, Qt.DropAction.CopyAction, urls, Qt.MouseButton.LeftButton,
                            Qt.KeyboardModifier.NoModifier)
    with qtbot.waitSignal(window.inputs_added, timeout=10_000):
        QApplication.sendEvent(view.viewport(), enter)
        drop_event = QDropEvent(point, Qt.DropAction.CopyAction, urls, Qt.MouseButton.LeftButton,
                                Qt.KeyboardModifier.NoModifier)
        QApplication.sendEvent(view.viewport(), drop_event)
    assert window.model.rowCount() == 1
