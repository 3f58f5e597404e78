"""The main window: queue on the left, before/after in the middle, settings on the right."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path

import platformdirs
from PySide6.QtCore import (
    QByteArray,
    QEvent,
    QModelIndex,
    QObject,
    QPoint,
    QSettings,
    QSize,
    Qt,
    QThreadPool,
    QTimer,
    QUrl,
    Signal,
)
from PySide6.QtGui import (
    QAction,
    QCloseEvent,
    QDesktopServices,
    QDragEnterEvent,
    QDragLeaveEvent,
    QDragMoveEvent,
    QDropEvent,
    QGuiApplication,
    QImage,
    QKeyEvent,
    QKeySequence,
)
from PySide6.QtWidgets import (
    QAbstractItemView,
    QAbstractSpinBox,
    QApplication,
    QComboBox,
    QDockWidget,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListView,
    QMainWindow,
    QMenu,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QSplitter,
    QStyle,
    QToolBar,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from engine.batch import InputItem, collect_inputs, describe_error
from engine.errors import CancelledError, OutputError
from engine.imageio import DEFAULT_MAX_PIXELS, Image, save_image
from engine.models import ModelStore
from engine.pipeline import CancelToken, Restoration
from gui.compare_view import CompareMode, CompareView
from gui.face_strip import FaceStrip
from gui.imaging import from_qimage
from gui.model_dialog import ModelDialog
from gui.queue_model import ItemRole, QueueDelegate, QueueItem, QueueModel, Status
from gui.runner import QueueRunner, RunProgress, plan_targets
from gui.settings import AppSettings, load_settings, save_settings
from gui.settings_panel import SettingsPanel
from gui.workers import (
    EnginePool,
    JobEvents,
    PreviewJob,
    PreviewRequest,
    PreviewResult,
    ResultCache,
    SaveJob,
    SaveRequest,
    ThumbnailJob,
    run_task,
)

APP_NAME = "Restora"
TEXT_INPUTS = (QLineEdit, QAbstractSpinBox, QComboBox, QPlainTextEdit)


def _format_duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
    return f"{seconds // 60}:{seconds % 60:02d}"


def gather_inputs(paths: Sequence[Path], recursive: bool) -> tuple[list[InputItem], list[str]]:
    """Expand dropped files and folders; a path that fails is reported, the others are kept."""
    items: list[InputItem] = []
    problems: list[str] = []
    for path in paths:
        try:
            items.extend(collect_inputs([path], recursive))
        except Exception as error:
            problems.append(describe_error(error))
    return items, problems


def save_pasted(pixels: object, folder: Path) -> Path:
    """Write a pasted clipboard image as a PNG the queue can read (run in a pool)."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = folder / f"pasted-{stamp}.png"
    counter = 1
    while target.exists():
        counter += 1
        target = folder / f"pasted-{stamp}-{counter}.png"
    save_image(Image(pixels=pixels), target)  # type: ignore[arg-type]
    return target


class MainWindow(QMainWindow):
    inputs_added = Signal(list)  # list[QueueItem], after a drop / open / paste
    preview_updated = Signal(object)  # PreviewResult shown in the compare view
    saves_finished = Signal(int, int)  # saved, failed

    def __init__(self, settings_store: QSettings | None = None, engine: EnginePool | None = None) -> None:
        super().__init__()
        self.setWindowTitle(APP_NAME)
        self.setAcceptDrops(True)
        self.store_settings = settings_store if settings_store is not None else QSettings()
        self.engine = engine if engine is not None else EnginePool()
        self.app_settings = load_settings(self.store_settings)
        self.events = JobEvents(self)
        self.results = ResultCache()
        self.model = QueueModel()
        self.runner = QueueRunner(self.model, self.engine, self.events, self.results)
        self.preview_pool = self._pool("restora-preview", 1)
        self.thumbnail_pool = self._pool("restora-thumbnails", 2)
        self.save_pool = self._pool("restora-save", 2)
        self.task_pool = self._pool("restora-tasks", 2)
        self._face_thumbnails: OrderedDict[int, list[QImage]] = OrderedDict()
        self._preview_generation = 0
        self._preview_item: int | None = None
        self._preview_running = False
        self._preview_pending: tuple[bool] | None = None
        self._display_source: tuple[Restoration, Restoration] | None = None  # (full, scaled for the view)
        self._preview_restoration: Restoration | None = None
        self._thumbnail_priority = 0
        self._save_token = CancelToken()
        self._saves_pending = 0
        self._saves_done = 0
        self._saves_failed: list[str] = []
        self._errors = 0
        self._closing = False
        self._persist_timer = QTimer(self)
        self._persist_timer.setSingleShot(True)
        self._persist_timer.setInterval(400)
        self._persist_timer.timeout.connect(self._persist_settings)

        self._build_ui()
        self._build_actions()
        self._build_menus()
        self._connect()
        self.settings_panel.set_settings(self.app_settings)
        self._load_models()
        self._restore_window_state()
        self._update_actions()
        self._update_status_idle()
        app = QApplication.instance()
        if app is not None:
            app.installEventFilter(self)

    # -- construction --------------------------------------------------------------------------

    def _pool(self, name: str, threads: int) -> QThreadPool:
        pool = QThreadPool(self)
        pool.setObjectName(name)
        pool.setMaxThreadCount(threads)
        return pool

    def _build_ui(self) -> None:
        # Queue (left)
        self.queue_view = QListView()
        self.queue_view.setModel(self.model)
        self.queue_view.setItemDelegate(QueueDelegate(self.queue_view))
        self.queue_view.setUniformItemSizes(True)
        self.queue_view.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.queue_view.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.queue_view.setMouseTracking(True)
        # Drag rows to reorder; files dropped from outside fall through to the window's drop handler.
        self.queue_view.setDragDropMode(QAbstractItemView.DragDropMode.InternalMove)
        self.queue_view.setDefaultDropAction(Qt.DropAction.MoveAction)
        self.queue_view.setDragDropOverwriteMode(False)
        self.queue_view.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.queue_title = QLabel("Queue")
        self.queue_title.setObjectName("panelTitle")
        queue_panel = QWidget()
        queue_layout = QVBoxLayout(queue_panel)
        queue_layout.setContentsMargins(8, 8, 4, 8)
        queue_layout.addWidget(self.queue_title)
        queue_layout.addWidget(self.queue_view, 1)
        self.queue_buttons = QHBoxLayout()
        queue_layout.addLayout(self.queue_buttons)

        # Compare (centre)
        self.compare = CompareView()
        self.face_strip = FaceStrip()
        self.face_strip.hide()
        self.compare_bar = QToolBar()
        self.compare_bar.setIconSize(QSize(16, 16))
        self.zoom_label = QLabel("Fit")
        self.zoom_label.setMinimumWidth(48)
        self.zoom_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.hint_label = QLabel("Hold Space to see the original")
        self.hint_label.setEnabled(False)
        centre = QWidget()
        centre_layout = QVBoxLayout(centre)
        centre_layout.setContentsMargins(4, 4, 4, 4)
        centre_layout.setSpacing(4)
        centre_layout.addWidget(self.compare_bar)
        centre_layout.addWidget(self.compare, 1)
        centre_layout.addWidget(self.face_strip)

        # Settings (right)
        self.settings_panel = SettingsPanel()

        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(queue_panel)
        self.splitter.addWidget(centre)
        self.splitter.addWidget(self.settings_panel)
        self.splitter.setStretchFactor(0, 0)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setStretchFactor(2, 0)
        self.splitter.setSizes([300, 820, 310])
        self.splitter.setChildrenCollapsible(False)
        self.setCentralWidget(self.splitter)

        # Log (bottom dock, hidden until wanted)
        self.log_view = QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(5000)
        self.log_dock = QDockWidget("Log", self)
        self.log_dock.setObjectName("logDock")
        self.log_dock.setWidget(self.log_view)
        self.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, self.log_dock)
        self.log_dock.hide()

        # Status bar
        self.status_text = QLabel()
        self.stats_label = QLabel()
        self.progress_bar = QProgressBar()
        self.progress_bar.setMaximumWidth(260)
        self.progress_bar.setTextVisible(True)
        self.progress_bar.hide()
        self.errors_button = QToolButton()
        self.errors_button.setAutoRaise(True)
        self.errors_button.setToolTip("Show the log")
        self.errors_button.hide()
        bar = self.statusBar()
        bar.addWidget(self.status_text, 1)
        bar.addPermanentWidget(self.errors_button)
        bar.addPermanentWidget(self.stats_label)
        bar.addPermanentWidget(self.progress_bar)

    def _action(self, text: str, slot: object,
                shortcut: QKeySequence | QKeySequence.StandardKey | str | None = None,
                icon: QStyle.StandardPixmap | None = None, tip: str | None = None,
                checkable: bool = False) -> QAction:
        action = QAction(text, self)
        if icon is not None:
            action.setIcon(self.style().standardIcon(icon))
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
            action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        if tip:
            action.setToolTip(f"{tip} ({action.shortcut().toString(QKeySequence.SequenceFormat.NativeText)})"
                              if shortcut else tip)
        action.setCheckable(checkable)
        if checkable:
            action.toggled.connect(slot)
        else:
            action.triggered.connect(slot)
        self.addAction(action)
        return action

    def _build_actions(self) -> None:
        sp = QStyle.StandardPixmap
        self.act_open = self._action("Add photos…", self.open_files, QKeySequence.StandardKey.Open,
                                     sp.SP_DialogOpenButton, "Add photos")
        self.act_open_folder = self._action("Add folder…", self.open_folder, "Ctrl+Shift+O", sp.SP_DirOpenIcon,
                                            "Add every photo in a folder")
        self.act_paste = self._action("Paste", self.paste, QKeySequence.StandardKey.Paste, None,
                                      "Paste photos or an image from the clipboard")
        self.act_start = self._action("Start", self.start, "Ctrl+Return", sp.SP_MediaPlay,
                                      "Restore the queued photos")
        self.act_cancel = self._action("Cancel", self.cancel_all, "Esc", sp.SP_MediaStop,
                                       "Stop the queue (and saving)")
        self.act_cancel_selected = self._action("Cancel selected", self.cancel_selected, "Shift+Esc")
        self.act_save = self._action("Save", self.save_selected, QKeySequence.StandardKey.Save,
                                     sp.SP_DialogSaveButton, "Save the selected photos")
        self.act_save_all = self._action("Save all", self.save_all_done, "Ctrl+Shift+S", sp.SP_DriveHDIcon,
                                         "Save every finished photo")
        self.act_open_output = self._action("Open output folder", self.open_output_folder, "Ctrl+Shift+E",
                                            sp.SP_DirLinkIcon, "Open the output folder")
        self.act_models = self._action("Models…", self.show_models, "Ctrl+M", sp.SP_ComputerIcon,
                                       "Installed models, licences, import")
        self.act_remove = self._action("Remove", self.remove_selected, QKeySequence.StandardKey.Delete,
                                       sp.SP_TrashIcon, "Remove the selected photos from the queue")
        self.act_clear_done = self._action("Clear done", self.clear_done, "Ctrl+Shift+D", sp.SP_DialogResetButton,
                                           "Remove finished photos from the queue")
        self.act_retry = self._action("Retry failed", self.retry_failed, "Ctrl+R", sp.SP_BrowserReload,
                                      "Queue the failed photos again")
        self.act_rerun = self._action("Process again", self.process_selected_again, "Ctrl+Shift+R", None,
                                      "Queue the selected photos again with the current settings")
        self.act_up = self._action("Move up", lambda: self.move_selected(-1), "Ctrl+Up", sp.SP_ArrowUp, "Move up")
        self.act_down = self._action("Move down", lambda: self.move_selected(1), "Ctrl+Down", sp.SP_ArrowDown,
                                     "Move down")
        self.act_split = self._action("Split view", lambda on: self._mode_toggled(CompareMode.SPLIT, on), "S",
                                      checkable=True, tip="Before and after split by a divider")
        self.act_side = self._action("Side by side", lambda on: self._mode_toggled(CompareMode.SIDE_BY_SIDE, on),
                                     "D", checkable=True, tip="Before and after next to each other")
        self.act_toggle_mode = self._action("Toggle split / side by side", self.toggle_mode, "C")
        self.act_fit = self._action("Fit", lambda: self.compare.set_zoom(None), "F", tip="Fit to window")
        self.act_actual = self._action("100 %", lambda: self.compare.set_zoom(1.0), "1", tip="Actual pixels")
        self.act_zoom_in = self._action("Zoom in", self.compare.zoom_in, QKeySequence.StandardKey.ZoomIn,
                                        tip="Zoom in")
        self.act_zoom_out = self._action("Zoom out", self.compare.zoom_out, QKeySequence.StandardKey.ZoomOut,
                                         tip="Zoom out")
        self.act_boxes = self._action("Face boxes", self.set_boxes, "B", checkable=True,
                                      tip="Show the detected faces")
        self.act_log = self.log_dock.toggleViewAction()
        self.act_log.setShortcut(QKeySequence("Ctrl+L"))
        self.act_about = self._action("About Restora", self.show_about)
        self.act_quit = self._action("Quit", self.close, QKeySequence.StandardKey.Quit)
        self.act_zoom_in.setIconText("+")
        self.act_zoom_out.setIconText("-")
        self.act_split.setChecked(True)

        # Main toolbar
        toolbar = QToolBar("Main")
        toolbar.setObjectName("mainToolbar")
        toolbar.setMovable(False)
        toolbar.setIconSize(QSize(20, 20))
        toolbar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        for action in (self.act_open, self.act_open_folder, None, self.act_start, self.act_cancel, None,
                       self.act_save, self.act_save_all, self.act_open_output, None, self.act_models):
            if action is None:
                toolbar.addSeparator()
            else:
                toolbar.addAction(action)
        self.addToolBar(Qt.ToolBarArea.TopToolBarArea, toolbar)
        self.main_toolbar = toolbar

        # Queue buttons
        for action in (self.act_remove, self.act_clear_done, self.act_retry, self.act_up, self.act_down):
            button = QToolButton()
            button.setDefaultAction(action)
            button.setAutoRaise(True)
            if action in (self.act_up, self.act_down, self.act_remove):
                button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonIconOnly)
            else:
                button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
            self.queue_buttons.addWidget(button)
        self.queue_buttons.addStretch(1)

        # Compare toolbar
        bar = self.compare_bar
        for action in (self.act_split, self.act_side):
            bar.addAction(action)
        bar.addSeparator()
        bar.addAction(self.act_fit)
        bar.addAction(self.act_actual)
        bar.addAction(self.act_zoom_out)
        bar.addWidget(self.zoom_label)
        bar.addAction(self.act_zoom_in)
        bar.addSeparator()
        bar.addAction(self.act_boxes)
        spacer = QWidget()
        spacer.setSizePolicy(spacer.sizePolicy().horizontalPolicy().Expanding,
                             spacer.sizePolicy().verticalPolicy().Preferred)
        bar.addWidget(spacer)
        bar.addWidget(self.hint_label)

    def _build_menus(self) -> None:
        menu = self.menuBar()
        file_menu = menu.addMenu("&File")
        for action in (self.act_open, self.act_open_folder, self.act_paste, None, self.act_save, self.act_save_all,
                       self.act_open_output, None, self.act_quit):
            file_menu.addSeparator() if action is None else file_menu.addAction(action)
        queue_menu = menu.addMenu("&Queue")
        for action in (self.act_start, self.act_cancel, self.act_cancel_selected, None, self.act_remove,
                       self.act_clear_done, self.act_retry, self.act_rerun, None, self.act_up, self.act_down):
            queue_menu.addSeparator() if action is None else queue_menu.addAction(action)
        view_menu = menu.addMenu("&View")
        for action in (self.act_split, self.act_side, self.act_toggle_mode, None, self.act_fit, self.act_actual,
                       self.act_zoom_in, self.act_zoom_out, None, self.act_boxes, self.act_log):
            view_menu.addSeparator() if action is None else view_menu.addAction(action)
        view_menu.addSeparator()
        theme_menu = view_menu.addMenu("Theme")
        self.theme_actions: dict[str, QAction] = {}
        for theme, label in (("system", "Follow the system"), ("dark", "Dark"), ("light", "Light")):
            action = QAction(label, self, checkable=True)
            action.triggered.connect(lambda _=False, t=theme: self.set_theme(t))
            theme_menu.addAction(action)
            self.theme_actions[theme] = action
        tools = menu.addMenu("&Tools")
        tools.addAction(self.act_models)
        help_menu = menu.addMenu("&Help")
        help_menu.addAction(self.act_about)
        self._sync_theme_actions()

    def _connect(self) -> None:
        self.model.thumbnail_wanted.connect(self._request_thumbnail)
        self.model.rowsInserted.connect(self._on_rows_changed)
        self.model.rowsRemoved.connect(self._on_rows_changed)
        self.model.dataChanged.connect(self._on_data_changed)
        self.queue_view.selectionModel().currentChanged.connect(self._on_current_changed)
        self.queue_view.selectionModel().selectionChanged.connect(lambda *_: self._update_actions())
        self.queue_view.customContextMenuRequested.connect(self._queue_menu)
        self.queue_view.doubleClicked.connect(lambda _: self.compare.setFocus())
        self.events.finished.connect(lambda result: self._remember_faces(result.item_id, result.face_thumbnails))
        self.events.thumbnail.connect(self._on_thumbnail)
        self.events.preview.connect(self._on_preview)
        self.events.preview_failed.connect(self._on_preview_failed)
        self.events.saved.connect(self._on_saved)
        self.events.save_failed.connect(self._on_save_failed)
        self.runner.progress.connect(self._on_progress)
        self.runner.item_done.connect(self._on_item_done)
        self.runner.run_finished.connect(self._on_run_finished)
        self.runner.run_failed.connect(self._on_run_failed)
        self.runner.log.connect(self.log)
        self.settings_panel.changed.connect(self._on_settings_changed)
        self.settings_panel.fidelity_changed.connect(lambda _: self._request_preview(want_before=False))
        self.settings_panel.manage_models.connect(self.show_models)
        self.face_strip.include_changed.connect(self._on_include_changed)
        self.face_strip.face_activated.connect(self._focus_face)
        self.face_strip.currentRowChanged.connect(lambda row: self.compare.set_highlight(row if row >= 0 else None))
        self.compare.zoom_changed.connect(self._on_zoom)
        self.errors_button.clicked.connect(lambda: self.log_dock.setVisible(True))

    # -- helpers -------------------------------------------------------------------------------

    @property
    def settings(self) -> AppSettings:
        return self.settings_panel.settings()

    def log(self, level: str, message: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        marker = {"error": "✖", "warning": "⚠"}.get(level, "•")
        self.log_view.appendPlainText(f"{stamp}  {marker}  {message}")
        if level == "error":
            self._errors += 1
            self.errors_button.setText(f"⚠ {self._errors} error{'s' if self._errors != 1 else ''}")
            self.errors_button.show()

    def show_error(self, title: str, error: BaseException | str) -> None:
        message = error if isinstance(error, str) else describe_error(error)
        self.log("error", message)
        if not self._closing:
            QMessageBox.warning(self, title, message)

    def _selected_items(self) -> list[QueueItem]:
        rows = sorted(index.row() for index in self.queue_view.selectionModel().selectedRows())
        return [self.model.items[row] for row in rows if 0 <= row < len(self.model.items)]

    def current_item(self) -> QueueItem | None:
        index = self.queue_view.currentIndex()
        return index.data(ItemRole) if index.isValid() else None

    def _load_models(self) -> None:
        try:
            store = self.engine.store
        except Exception as error:  # a broken manifest: say so, keep the window usable
            self.show_error("Models", error)
            return
        self.settings_panel.set_store(store)

    # -- input ---------------------------------------------------------------------------------

    def add_paths(self, paths: Iterable[Path | str]) -> None:
        chosen = [Path(p) for p in paths]
        if not chosen:
            return
        recursive = self.settings.recursive
        self.status_text.setText("Looking for photos…")
        run_task(self.task_pool, lambda: gather_inputs(chosen, recursive), self._on_inputs, self._on_inputs_failed)

    def _on_inputs(self, found: tuple[list[InputItem], list[str]]) -> None:
        items, problems = found
        for problem in problems:
            self.log("error", problem)
        added = self.model.add(items)
        if added:
            self.log("info", f"Added {len(added)} photo{'s' if len(added) != 1 else ''}")
            if not self.current_item():
                self.queue_view.setCurrentIndex(self.model.index(self.model.row_of(added[0].id)))
            if self.runner.running:
                self.runner.start(self.settings)
        elif not problems:
            self.status_text.setText("No new photos found")
        self._update_status_idle()
        self.inputs_added.emit(added)

    def _on_inputs_failed(self, error: Exception) -> None:
        self.show_error("Could not add photos", error)

    def open_files(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(
            self, "Add photos", str(Path.home()),
            "Photos (*.jpg *.jpeg *.jpe *.png *.webp *.tif *.tiff *.bmp *.gif);;All files (*)")
        self.add_paths(files)

    def open_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add a folder of photos", str(Path.home()))
        if folder:
            self.add_paths([folder])

    def paste(self) -> None:
        mime = QGuiApplication.clipboard().mimeData()
        if mime is None:
            return
        files = [url.toLocalFile() for url in mime.urls() if url.isLocalFile()]
        if files:
            self.add_paths(files)
            return
        if mime.hasImage():
            image = QGuiApplication.clipboard().image()
            if image.isNull():
                return
            pixels = from_qimage(image)
            folder = platformdirs.user_cache_path("restora") / "pasted"
            run_task(self.task_pool, lambda: save_pasted(pixels, folder),
                     lambda path: self.add_paths([path]),
                     lambda error: self.show_error("Could not paste", error))
            return
        self.status_text.setText("The clipboard holds no photo")

    def _paths_from_mime(self, event: QDragEnterEvent | QDragMoveEvent | QDropEvent) -> list[str]:
        mime = event.mimeData()
        return [url.toLocalFile() for url in mime.urls() if url.isLocalFile()] if mime.hasUrls() else []

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if self._paths_from_mime(event):
            event.acceptProposedAction()
            self.compare.drop_highlight = True
            self.compare.update()
        else:
            event.ignore()

    def dragMoveEvent(self, event: QDragMoveEvent) -> None:
        if self._paths_from_mime(event):
            event.acceptProposedAction()

    def dragLeaveEvent(self, event: QDragLeaveEvent) -> None:
        self.compare.drop_highlight = False
        self.compare.update()

    def dropEvent(self, event: QDropEvent) -> None:
        self.compare.drop_highlight = False
        self.compare.update()
        paths = self._paths_from_mime(event)
        if paths:
            event.acceptProposedAction()
            self.add_paths(paths)

    # -- queue operations ----------------------------------------------------------------------

    def start(self) -> None:
        if not self.runner.start(self.settings):
            if not self.model.items:
                self.status_text.setText("Add photos first: drop them on the window")
            elif not self.runner.active:
                self.status_text.setText("Nothing queued: use Retry failed or Process again")
            return
        if self.current_item() is None and self.model.items:
            self.queue_view.setCurrentIndex(self.model.index(0))
        self._update_actions()

    def cancel_all(self) -> None:
        self.runner.cancel_all()
        if self._saves_pending:
            self._save_token.cancel()
        self._update_actions()

    def cancel_selected(self) -> None:
        for item in self._selected_items():
            self.runner.cancel(item.id)

    def remove_selected(self) -> None:
        rows = [index.row() for index in self.queue_view.selectionModel().selectedRows()]
        for row in rows:
            self.runner.cancel(self.model.items[row].id)
        self._forget(self.model.remove_rows(rows))

    def clear_done(self) -> None:
        self._forget(self.model.remove_where(Status.DONE) + self.model.remove_where(Status.SKIPPED))

    def _forget(self, items: list[QueueItem]) -> None:
        for item in items:
            self.results.pop(item.id)
            self._face_thumbnails.pop(item.id, None)
        if self.current_item() is None:
            self._show_current()

    def retry_failed(self) -> None:
        failed = [item for item in self.model.items if item.status == Status.ERROR]
        self._requeue(failed)

    def process_selected_again(self) -> None:
        self._requeue([i for i in self._selected_items() if i.status in (Status.DONE, Status.ERROR, Status.SKIPPED)])

    def _requeue(self, items: list[QueueItem]) -> None:
        for item in items:
            item.reset()
            self.results.pop(item.id)
            self._face_thumbnails.pop(item.id, None)
            self.model.refresh(item.id)
        if items:
            self.log("info", f"Queued {len(items)} photo{'s' if len(items) != 1 else ''} again")
            if self.runner.active:
                self.runner.start(self.settings)
            self._show_current()

    def move_selected(self, delta: int) -> None:
        index = self.queue_view.currentIndex()
        if not index.isValid():
            return
        row = self.model.move(index.row(), delta)
        self.queue_view.setCurrentIndex(self.model.index(row))

    def _queue_menu(self, position: QPoint) -> None:
        menu = QMenu(self)
        for action in (self.act_save, self.act_rerun, self.act_cancel_selected, None, self.act_up, self.act_down,
                       None, self.act_remove):
            menu.addSeparator() if action is None else menu.addAction(action)
        menu.exec(self.queue_view.viewport().mapToGlobal(position))

    # -- thumbnails ----------------------------------------------------------------------------

    def _request_thumbnail(self, item_id: int, path: Path) -> None:
        # Newest requests first: the rows on screen now matter more than those scrolled past.
        self._thumbnail_priority += 1
        self.thumbnail_pool.start(ThumbnailJob(item_id, path, self.events), self._thumbnail_priority)

    def _on_thumbnail(self, item_id: int, image: QImage | None, size: int | None) -> None:
        item = self.model.find(item_id)
        if item is not None and size is not None:
            item.file_size = size
        self.model.set_thumbnail(item_id, image)

    # -- preview -------------------------------------------------------------------------------

    def _on_current_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        self._show_current()
        self._update_actions()

    def _show_current(self) -> None:
        item = self.current_item()
        self._preview_generation += 1
        self.compare.set_highlight(None)
        if item is None:
            self._preview_item = None
            self.compare.clear()
            self.face_strip.hide()
            return
        new_item = item.id != self._preview_item
        self._preview_item = item.id
        if new_item:
            self.compare.set_images(None, None)
            self.compare.set_faces([], [])
            self.face_strip.hide()
        self.compare.message = self._message_for(item)
        self.compare.update()
        self._request_preview(want_before=True)

    def _message_for(self, item: QueueItem) -> str:
        if item.status == Status.ERROR:
            return item.error or "This photo could not be restored"
        if item.status == Status.WORKING:
            return "Restoring…"
        if item.status == Status.QUEUED:
            return "Queued: press Start (Ctrl+Enter) to restore"
        if item.status == Status.SKIPPED:
            return "Skipped: the output already exists"
        return ""

    def _request_preview(self, want_before: bool) -> None:
        item = self.current_item()
        if item is None:
            return
        if self._preview_running:
            # One compose at a time; the latest request runs when the current one returns.
            pending_before = self._preview_pending[0] if self._preview_pending else False
            self._preview_pending = (want_before or pending_before,)
            return
        self._preview_generation += 1
        done = item.status == Status.DONE
        restoration = self.results.get(item.id) if done else None
        if done and restoration is None:
            self.compare.message = "Restoring again (it was no longer in memory)…"
            self.compare.update()
        include = tuple(item.include) if item.include else None
        zoom = self.compare.zoom if self.compare.before is not None else None
        display_source = None
        if self._display_source is not None and self._display_source[0] is restoration is not None:
            display_source = self._display_source[1]  # the same photo scaled down by an earlier job
        self._preview_restoration = restoration
        request = PreviewRequest(item.id, self._preview_generation, item.path, self.settings, include, restoration,
                                 want_before or self.compare.before is None, done, DEFAULT_MAX_PIXELS,
                                 zoom, display_source)
        self._preview_running = True
        self.preview_pool.start(PreviewJob(request, self.engine, self.events))

    def _next_preview(self) -> None:
        self._preview_running = False
        if self._preview_pending is not None:
            (want_before,) = self._preview_pending
            self._preview_pending = None
            self._request_preview(want_before)

    def _on_preview(self, result: PreviewResult) -> None:
        item = self.model.find(result.item_id)
        if item is not None and result.restoration is not None:
            self.results.put(item.id, result.restoration)
        if item is not None and result.face_thumbnails is not None:
            self._remember_faces(item.id, result.face_thumbnails)
        if item is not None and item.id == self._preview_item:
            source_of = result.restoration or self._preview_restoration
            if result.display_source is not None and source_of is not None:
                self._display_source = (source_of, result.display_source)
            if result.before is not None:
                self.compare.set_images(result.before, result.after, keep_view=True,
                                        before_display=result.before_display, after_display=result.after_display)
            else:
                self.compare.set_after(result.after, result.after_display)
            if result.partial:
                return  # the full-resolution result of the same job follows
            self.compare.message = self._message_for(item)
            self._show_faces(item)
            self.preview_updated.emit(result)
        if not result.partial:
            self._next_preview()

    def _on_preview_failed(self, item_id: int, generation: int, error: Exception) -> None:
        item = self.model.find(item_id)
        if item is not None and item_id == self._preview_item:
            self.compare.set_images(None, None)
            self.compare.message = item.error or describe_error(error)
            self.compare.update()
        self._next_preview()

    def _remember_faces(self, item_id: int, thumbnails: list[QImage]) -> None:
        self._face_thumbnails[item_id] = thumbnails
        self._face_thumbnails.move_to_end(item_id)
        while len(self._face_thumbnails) > 500:
            self._face_thumbnails.popitem(last=False)

    def _show_faces(self, item: QueueItem) -> None:
        restoration = self.results.get(item.id) if item.status == Status.DONE else None
        if restoration is None:
            self.compare.set_faces([], [])
            self.face_strip.hide()
            return
        if len(item.include) != restoration.face_count:
            item.include = [True] * restoration.face_count
        boxes = [face.face.box for face in restoration.faces]
        self.compare.set_faces(boxes, item.include)
        thumbnails = self._face_thumbnails.get(item.id, [])
        if thumbnails and len(thumbnails) == restoration.face_count:
            if self.face_strip.count() != len(thumbnails) or self.face_strip.included() != item.include:
                self.face_strip.set_faces(thumbnails, item.include)
            self.face_strip.show()
        else:
            self.face_strip.hide()

    def _on_include_changed(self, included: list[bool]) -> None:
        item = self.current_item()
        if item is None:
            return
        item.include = included
        self.compare.set_faces([b for b in self.compare._boxes], included)
        self._request_preview(want_before=False)

    def _focus_face(self, index: int) -> None:
        item = self.current_item()
        restoration = self.results.get(item.id) if item is not None else None
        if restoration is not None and 0 <= index < restoration.face_count:
            self.compare.focus_on(restoration.faces[index].face.box)

    def set_mode(self, mode: CompareMode) -> None:
        self.compare.set_mode(mode)
        self.act_split.setChecked(mode == CompareMode.SPLIT)
        self.act_side.setChecked(mode == CompareMode.SIDE_BY_SIDE)

    def _mode_toggled(self, mode: CompareMode, on: bool) -> None:
        if on:
            self.set_mode(mode)
        elif self.compare.mode == mode:
            self.set_mode(mode)  # keep one mode checked: unchecking the current one does nothing

    def toggle_mode(self) -> None:
        self.set_mode(CompareMode.SIDE_BY_SIDE if self.compare.mode == CompareMode.SPLIT else CompareMode.SPLIT)

    def set_boxes(self, shown: bool) -> None:
        self.compare.show_boxes = shown
        self.compare.update()

    def _on_zoom(self, zoom: float) -> None:
        self.zoom_label.setText(f"{zoom * 100:.0f} %")

    # -- run events ----------------------------------------------------------------------------

    def _on_item_done(self, item_id: int) -> None:
        if item_id == self._preview_item:
            self._show_current()
        current = self.current_item()
        if current is not None and current.id == item_id:
            return
        self._update_status_idle()

    def _on_data_changed(self, *_: object) -> None:
        item = self.current_item()
        if item is not None and item.id == self._preview_item:
            message = self._message_for(item)
            if message != self.compare.message and item.status != Status.DONE:
                self.compare.message = message
                self.compare.update()

    def _on_progress(self, progress: RunProgress) -> None:
        if progress.running and progress.total:
            self.progress_bar.show()
            self.progress_bar.setRange(0, progress.total)
            self.progress_bar.setValue(progress.done)
            self.progress_bar.setFormat(f"{progress.done} / {progress.total}")
            parts = []
            if progress.eta is not None:
                parts.append(f"ETA {_format_duration(progress.eta)}")
            if progress.elapsed > 0 and progress.done:
                parts.append(f"{progress.faces_per_second:.2f} faces/s")
            self.stats_label.setText("  ·  ".join(parts))
            self.status_text.setText("Restoring…")
        self._update_actions()

    def _on_run_finished(self) -> None:
        self.progress_bar.hide()
        counts = self.model.counts()
        self.stats_label.setText("")
        summary = f"Finished: {counts[Status.DONE]} done"
        if counts[Status.ERROR]:
            summary += f", {counts[Status.ERROR]} failed"
        if counts[Status.SKIPPED]:
            summary += f", {counts[Status.SKIPPED]} skipped"
        self.status_text.setText(summary)
        self.log("info", summary)
        self._update_actions()

    def _on_run_failed(self, error: Exception) -> None:
        hint = ""
        if "model" in describe_error(error).lower():
            hint = "\n\nOpen Tools → Models… to import or check the model files."
        self.show_error("Cannot start", describe_error(error) + hint)
        self._update_actions()

    def _on_rows_changed(self, *_: object) -> None:
        self._update_actions()
        self._update_status_idle()
        if not self.model.items:
            self.compare.clear()
            self.face_strip.hide()

    def _update_status_idle(self) -> None:
        count = len(self.model.items)
        noun = "photo" if count == 1 else "photos"
        self.queue_title.setText(f"Queue · {count} {noun}" if count else "Queue")
        if self.runner.active or self._saves_pending:
            return
        counts = self.model.counts()
        if count == 0:
            self.status_text.setText("Ready: drop photos or a folder on the window")
        else:
            self.status_text.setText(
                f"{count} {noun} · {counts[Status.QUEUED]} queued · {counts[Status.DONE]} done"
                + (f" · {counts[Status.ERROR]} failed" if counts[Status.ERROR] else ""))

    def _update_actions(self) -> None:
        counts = self.model.counts()
        selected = self._selected_items()
        active = self.runner.active
        self.act_start.setEnabled(counts[Status.QUEUED] > 0 and not self.runner.running)
        self.act_cancel.setEnabled(active or self._saves_pending > 0)
        self.act_cancel_selected.setEnabled(any(self.runner.is_busy(i.id) for i in selected))
        self.act_save.setEnabled(any(i.status == Status.DONE for i in selected))
        self.act_save_all.setEnabled(counts[Status.DONE] > 0)
        self.act_remove.setEnabled(bool(selected))
        self.act_clear_done.setEnabled(counts[Status.DONE] + counts[Status.SKIPPED] > 0)
        self.act_retry.setEnabled(counts[Status.ERROR] > 0)
        self.act_rerun.setEnabled(any(i.status in (Status.DONE, Status.ERROR, Status.SKIPPED) for i in selected))
        self.act_up.setEnabled(len(selected) == 1)
        self.act_down.setEnabled(len(selected) == 1)

    # -- output --------------------------------------------------------------------------------

    def save_selected(self) -> None:
        self.save_items([i for i in self._selected_items() if i.status == Status.DONE])

    def save_all_done(self) -> None:
        self.save_items([i for i in self.model.items if i.status == Status.DONE])

    def save_items(self, items: list[QueueItem]) -> None:
        if not items:
            self.status_text.setText("Nothing to save: restore some photos first")
            return
        settings = self.settings
        try:
            targets = plan_targets(self.model.items, settings)
        except OutputError as error:
            self.show_error("Cannot save", error)
            return
        if not self._saves_pending:
            self._save_token = CancelToken()
            self._saves_done = 0
            self._saves_failed = []
        for item in items:
            request = SaveRequest(item.id, item.path, settings, tuple(item.include) if item.include else None,
                                  self.results.get(item.id), targets[item.id], self._save_token, DEFAULT_MAX_PIXELS)
            self._saves_pending += 1
            self.save_pool.start(SaveJob(request, self.engine, self.events))
        self.status_text.setText(f"Saving {self._saves_pending} photo{'s' if self._saves_pending != 1 else ''}…")
        self._update_actions()

    def _on_saved(self, item_id: int, path: Path) -> None:
        item = self.model.find(item_id)
        if item is not None:
            item.output, item.note = path, "saved"
            self.model.refresh(item_id)
        self.log("info", f"Saved {path}")
        self._saves_done += 1
        self._save_settled()

    def _on_save_failed(self, item_id: int, error: Exception) -> None:
        item = self.model.find(item_id)
        name = item.name if item is not None else "photo"
        message = describe_error(error)
        if not isinstance(error, CancelledError):
            self._saves_failed.append(f"{name}: {message}")
            self.log("error", f"{name}: not saved: {message}")
        self._save_settled()

    def _save_settled(self) -> None:
        self._saves_pending -= 1
        if self._saves_pending > 0:
            self.status_text.setText(f"Saving… {self._saves_pending} left")
            return
        folder = self.settings.output_path
        self.status_text.setText(f"Saved {self._saves_done} photo{'s' if self._saves_done != 1 else ''} to {folder}")
        if self._saves_failed and not self._closing:
            QMessageBox.warning(self, "Some photos were not saved", "\n".join(self._saves_failed[:20]))
        self._update_actions()
        self.saves_finished.emit(self._saves_done, len(self._saves_failed))

    def open_output_folder(self) -> None:
        folder = self.settings.output_path
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            self.show_error("Cannot open the output folder", describe_error(error))
            return
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder)))

    # -- settings, models, about -----------------------------------------------------------------

    def _on_settings_changed(self, settings: AppSettings) -> None:
        theme_changed = settings.theme != self.app_settings.theme
        colour_changed = settings.color_correction != self.app_settings.color_correction
        self.app_settings = settings
        self._persist_timer.start()
        if theme_changed:
            from gui.app import apply_theme

            apply_theme(settings.theme)
            self._sync_theme_actions()
        if colour_changed:
            self._request_preview(want_before=False)

    def _persist_settings(self) -> None:
        save_settings(self.settings, self.store_settings)

    def set_theme(self, theme: str) -> None:
        self.settings_panel.set_theme_value(theme)
        self._sync_theme_actions()

    def _sync_theme_actions(self) -> None:
        for theme, action in self.theme_actions.items():
            action.setChecked(theme == self.app_settings.theme)

    def show_models(self) -> None:
        try:
            store = self.engine.store
        except Exception as error:
            self.show_error("Models", error)
            return
        dialog = ModelDialog(store, self.task_pool, self)
        dialog.store_changed.connect(self._on_store_changed)
        dialog.exec()

    def _on_store_changed(self, store: ModelStore) -> None:
        self.engine.set_store(store)
        self.settings_panel.set_store(store)

    def show_about(self) -> None:
        from gui.app import AboutDialog

        AboutDialog(self.settings, self.engine, self).exec()

    # -- keys, window state ----------------------------------------------------------------------

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        # Hold Space anywhere in the window (except while typing) to see the original.
        kind = event.type()
        if kind in (QEvent.Type.KeyPress, QEvent.Type.KeyRelease) and isinstance(event, QKeyEvent) \
                and event.key() == Qt.Key.Key_Space and self.isActiveWindow():
            focus = QApplication.focusWidget()
            if not isinstance(focus, TEXT_INPUTS):
                if not event.isAutoRepeat():
                    self.compare.set_showing_original(kind == QEvent.Type.KeyPress)
                return True
        return super().eventFilter(watched, event)

    def _restore_window_state(self) -> None:
        store = self.store_settings
        geometry = store.value("window/geometry")
        if isinstance(geometry, QByteArray) and not geometry.isEmpty():
            self.restoreGeometry(geometry)
        else:
            self.resize(1400, 860)
        state = store.value("window/state")
        if isinstance(state, QByteArray) and not state.isEmpty():
            self.restoreState(state)
        splitter = store.value("window/splitter")
        if isinstance(splitter, QByteArray) and not splitter.isEmpty():
            self.splitter.restoreState(splitter)
        mode = store.value("view/mode", CompareMode.SPLIT.value)
        self.set_mode(CompareMode(mode) if mode in {m.value for m in CompareMode} else CompareMode.SPLIT)
        self.act_boxes.setChecked(str(store.value("view/boxes", "false")).lower() == "true")

    def closeEvent(self, event: QCloseEvent) -> None:
        self._closing = True
        self.runner.cancel_all()
        self._save_token.cancel()
        store = self.store_settings
        store.setValue("window/geometry", self.saveGeometry())
        store.setValue("window/state", self.saveState())
        store.setValue("window/splitter", self.splitter.saveState())
        store.setValue("view/mode", self.compare.mode.value)
        store.setValue("view/boxes", self.act_boxes.isChecked())
        self._persist_timer.stop()
        save_settings(self.settings, store)
        # Jobs report to this window: let them finish (each stops at its next step) before it goes.
        for pool in (self.runner.pool, self.preview_pool, self.save_pool, self.thumbnail_pool, self.task_pool):
            pool.clear()
            pool.waitForDone(30_000)
        app = QApplication.instance()
        if app is not None:
            app.removeEventFilter(self)
        super().closeEvent(event)
