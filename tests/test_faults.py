"""The fault table: every fault a user can cause, through the public CLI, with what fgar promises.

Each row of FAULTS runs one command against a fault and checks the promise of docs/RELIABILITY.md:
the exit code, no traceback, one line that names the file and says what is wrong, and no temporary
or half-written file left behind; a row may check more (nothing written, the old run intact). The
read-only and the full file system are real (small tmpfs mounts) when the tests run as root, and an
`OSError` raised at the same system calls otherwise. Signals and kills run the real `fgar` in a
subprocess (`test_signals`, `test_kill_then_resume_is_bit_identical`).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from fgar_cli.checkpoints import load_checkpoint

from helpers import CLIP, encoders, evil_pickle, fgar, make_diving48, make_finediving, write_video

# --------------------------------------------------------------------------- file systems that fail


def _mount_tmpfs(folder: Path, options: str) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None or os.environ.get("FGAR_TESTS_NO_MOUNT"):
        return False  # FGAR_TESTS_NO_MOUNT=1 exercises the mocked file systems on a machine that can mount
    return (
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True).returncode
        == 0
    )


def _umount(folder: Path) -> None:
    subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def _inside(path: object, folder: Path) -> bool:
    try:
        return Path(os.fsdecode(path)).resolve().is_relative_to(folder.resolve())
    except (TypeError, ValueError):
        return False


@pytest.fixture
def readonly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder on a read-only file system."""
    folder = tmp_path / "readonly"
    if _mount_tmpfs(folder, "ro,size=64k"):
        yield folder
        _umount(folder)
        return
    real_open, real_mkdir = os.open, Path.mkdir

    def refuse_open(path: object, flags: int, *args: object, **kwargs: object) -> int:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and _inside(path, folder):
            raise OSError(errno.EROFS, "Read-only file system", os.fsdecode(path))
        return real_open(path, flags, *args, **kwargs)

    def refuse_mkdir(self: Path, *args: object, **kwargs: object) -> None:
        if _inside(self, folder) and self.resolve() != folder.resolve():
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse_open)
    monkeypatch.setattr(Path, "mkdir", refuse_mkdir)
    yield folder


@pytest.fixture
def full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder on a file system with 16 KiB of space: room for run.json, not for a checkpoint."""
    folder = tmp_path / "full"
    if _mount_tmpfs(folder, "size=16k"):
        yield folder
        _umount(folder)
        return
    real_open, real_write, inside = os.open, os.write, set()

    def tracking_open(path: object, flags: int, *args: object, **kwargs: object) -> int:
        fd = real_open(path, flags, *args, **kwargs)
        (inside.add if _inside(path, folder) else inside.discard)(fd)
        return fd

    def limited_write(fd: int, data: bytes) -> int:
        if fd in inside and len(data) > 4096:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "open", tracking_open)
    monkeypatch.setattr(os, "write", limited_write)
    yield folder


# --------------------------------------------------------------------------- the table


@dataclass
class Context:
    tiny: Path  # the shared tiny pipeline (read only)
    tmp: Path  # this row's own folder
    fs: Path | None  # the failing file system, for rows that ask for one


@dataclass(frozen=True)
class Fault:
    name: str
    command: Callable[[Context], list[object]]  # sets the fault up, returns the fgar arguments
    code: int
    says: tuple[str, ...]  # fragments of the one error line ({tmp} and {fs} are filled in)
    fs: str | None = None  # "readonly" or "full"
    check: Callable[[Context], None] | None = None  # what else must hold afterwards


def _copy_checkpoint(ctx: Context, name: str, edit: Callable[[dict], None]) -> Path:
    ckpt = load_checkpoint(ctx.tiny / "fit" / name)
    edit(ckpt)
    path = ctx.tmp / f"edited_{name}"
    torch.save(ckpt, path)
    return path


def _gallery(ctx: Context, edit: Callable[[dict], None]) -> Path:
    """A gallery.h5 of the tiny run's encoders, then edited."""
    out = ctx.tmp / "pl"
    assert fgar("pseudolabel", *encoders(ctx.tiny), "--out-dir", out) == 0
    path = out / "gallery.h5"
    with h5py.File(path, "r+") as f:
        data = {k: f[k][()] for k in f}
        edit(data)
        for key in list(f):
            del f[key]
        for key, value in data.items():
            f.create_dataset(key, data=value)
    return path


def _edited_index(ctx: Context, field: str, value: object) -> Path:
    index = json.loads((ctx.tiny / "index.json").read_text())
    index["entries"][1][field] = value
    path = ctx.tmp / "index.json"
    path.write_text(json.dumps(index))
    return path


def _selftrain_args(ctx: Context, out: Path, theta: str = "0.4") -> list[object]:
    return ["selftrain", *encoders(ctx.tiny), "--theta", theta, "--rounds", "1", "--epochs", "1", "--out-dir", out]


def _finished_selftrain(ctx: Context) -> Path:
    out = ctx.tmp / "st"
    assert fgar(*_selftrain_args(ctx, out)) == 0
    return out


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _training_never_started(monkeypatch: pytest.MonkeyPatch) -> None:
    import fgar_cli.engine as engine

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("training started before the outputs were checked")

    monkeypatch.setattr(engine, "train_one_epoch", refuse)


def _split(ctx: Context, out: object, index: object = None) -> list[object]:
    return ["data", "split", "--index", index or ctx.tiny / "index.json", "--fraction", "0.5", "--out", out]


def _index(root: object, out: object, *extra: object) -> list[object]:
    return ["data", "index", "--format", "diving48", "--root", root, "--out", out, *extra]


def _fit(ctx: Context, out: object, *extra: object) -> list[object]:
    data = ["--index", ctx.tiny / "index.json", "--split", ctx.tiny / "split.json", "--out-dir", out]
    return ["fit-labeled", *data, "--arch-e", "small3d", "--epochs-e", "1", "--epochs-a", "1", *CLIP, *extra]


def _tiny_data(ctx: Context) -> list[object]:
    return ["--index", ctx.tiny / "index.json", "--split", ctx.tiny / "split.json"]


def _tclr_like_file(path: Path) -> Path:
    """Weights laid out as TCLR's releases are ('module.0.<torchvision name>', its head 'module.1.*')."""
    import torchvision

    trunk = torchvision.models.video.r3d_18(weights=None)
    state = {f"module.0.{k}": v for k, v in trunk.state_dict().items() if not k.startswith("fc.")}
    torch.save({"state_dict": state | {"module.1.fc1.weight": torch.zeros(2, 2)}}, path)
    return path


# Setups: each makes the fault and returns the command that meets it.


def output_under_a_file(c: Context) -> list[object]:
    (c.tmp / "a_file").write_text("")
    return _split(c, c.tmp / "a_file" / "s.json")


def out_is_a_folder(c: Context) -> list[object]:
    (c.tmp / "d").mkdir()
    return _split(c, c.tmp / "d")


def out_dir_is_a_file(c: Context) -> list[object]:
    (c.tmp / "f").write_text("")
    return ["pseudolabel", *encoders(c.tiny), "--out-dir", c.tmp / "f"]


def stale_temporary(c: Context) -> list[object]:
    (c.tmp / "pl").mkdir()
    (c.tmp / "pl" / f".pseudo.h5.{_dead_pid()}.0bad.tmp").write_text("half a file of a killed run")
    return ["pseudolabel", *encoders(c.tiny), "--out-dir", c.tmp / "pl"]


def fresh_run_into_a_finished_folder(c: Context) -> list[object]:
    return _selftrain_args(c, _finished_selftrain(c), theta="0.5")


def resume_with_other_theta(c: Context) -> list[object]:
    return [*_selftrain_args(c, _finished_selftrain(c), theta="0.5"), "--resume"]


def resume_with_another_source(c: Context) -> list[object]:
    return [*_selftrain_args(c, _finished_selftrain(c)), "--source", "action", "--resume"]


def resume_a_moved_run_folder(c: Context) -> list[object]:
    moved = c.tmp / "moved"
    shutil.move(_finished_selftrain(c), moved)
    return [*_selftrain_args(c, moved), "--resume"]


def folder_of_another_stage(c: Context) -> list[object]:
    (c.tmp / "pre").mkdir()
    shutil.copy(c.tiny / "pre" / "run.json", c.tmp / "pre" / "run.json")
    return _fit(c, c.tmp / "pre")


def checkpoint_missing_everything(c: Context) -> list[object]:
    def strip(ckpt: dict) -> None:
        for key in ("arch", "state_dict", "config", "class_names"):
            ckpt.pop(key)

    return ["evaluate", "--ckpt-e", _copy_checkpoint(c, "E.pt", strip), "--out-dir", c.tmp / "e"]


def checkpoint_config_as_a_string(c: Context) -> list[object]:
    def stringify(ckpt: dict) -> None:
        ckpt["config"] = json.dumps(ckpt["config"])

    return ["evaluate", "--ckpt-e", _copy_checkpoint(c, "E.pt", stringify), "--out-dir", c.tmp / "e"]


def checkpoint_that_is_not_torch(c: Context) -> list[object]:
    (c.tmp / "junk.pt").write_bytes(np.random.default_rng(0).bytes(256))
    return ["evaluate", "--ckpt-e", c.tmp / "junk.pt", "--out-dir", c.tmp / "e"]


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def checkpoint_that_runs_code(c: Context) -> list[object]:
    torch.save({"format": "fgar.checkpoint", "x": _Evil(c.tmp / "pwned")}, c.tmp / "evil.pt")
    return ["evaluate", "--ckpt-e", c.tmp / "evil.pt", "--out-dir", c.tmp / "e"]


def _with_gallery(c: Context, edit: Callable[[dict], None]) -> list[object]:
    return ["pseudolabel", *encoders(c.tiny), "--gallery", _gallery(c, edit), "--out-dir", c.tmp / "pl2"]


def gallery_label_out_of_range(c: Context) -> list[object]:
    return _with_gallery(c, lambda d: d["labels"].__setitem__(0, 7))


def gallery_of_another_feature_size(c: Context) -> list[object]:
    return _with_gallery(c, lambda d: d.__setitem__("embeddings", d["embeddings"][..., :64]))


def gallery_of_another_clip_length(c: Context) -> list[object]:
    return _with_gallery(c, lambda d: d.__setitem__("embeddings", d["embeddings"][:, :4]))


def gallery_all_nan(c: Context) -> list[object]:
    return _with_gallery(c, lambda d: d["embeddings"].fill(np.nan))


def pseudo_labels_of_another_split(c: Context) -> list[object]:
    out = _finished_selftrain(c)
    with h5py.File(out / "round_1" / "pseudo.h5", "r+") as f:
        ids = f["video_ids"][()]
        ids[0] = b"not_a_clip_of_this_split"
        del f["video_ids"]
        f.create_dataset("video_ids", data=ids)
    (out / "round_1" / "E.pt").unlink()  # the round is unfinished, so --resume reads its pseudo.h5
    return [*_selftrain_args(c, out), "--resume"]


def config_not_utf8(c: Context) -> list[object]:
    (c.tmp / "c.yaml").write_bytes(b"theta: \xff\xfe")
    return ["pseudolabel", *encoders(c.tiny), "--config", c.tmp / "c.yaml"]


def index_label_is_a_string(c: Context) -> list[object]:
    return _split(c, c.tmp / "s.json", _edited_index(c, "label", "Back"))


def index_num_frames_not_a_number(c: Context) -> list[object]:
    return _split(c, c.tmp / "s.json", _edited_index(c, "num_frames", "many"))


def shared_config_without_the_stage_table(c: Context) -> list[object]:
    demo = Path(__file__).parents[1] / "examples" / "demo.yaml"
    return ["pseudolabel", *encoders(c.tiny), "--config", demo, "--out-dir", c.tmp / "pl"]


def init_a_given_an_action_checkpoint(c: Context) -> list[object]:
    return _fit(c, c.tmp / "fit", "--init-a", c.tiny / "fit" / "E.pt")


def _outside_root(c: Context) -> Path:
    root = make_diving48(c.tmp / "d48", train=[("a", 0, 0, 5), ("../../elsewhere", 1, 0, 5)], test=[], videos=False)
    write_video(root / "rgb" / "a.mp4", 5)
    write_video(c.tmp / "elsewhere.mp4", 5)  # rgb/../../elsewhere.mp4, beside the dataset root
    return root


def video_outside_the_root(c: Context) -> list[object]:
    return _index(_outside_root(c), c.tmp / "index.json")


def video_outside_the_root_allowed(c: Context) -> list[object]:
    return _index(_outside_root(c), c.tmp / "index.json", "--allow-outside-root")


def _broken_videos(c: Context) -> Path:
    train = [("a", 0, 0, 5), ("gone", 1, 0, 5), ("zero", 1, 0, 5)]
    root = make_diving48(c.tmp / "d48", train=train, test=[], frames=5)
    (root / "rgb" / "gone.mp4").unlink()
    (root / "rgb" / "zero.mp4").write_bytes(b"")
    return root


def unreadable_videos(c: Context) -> list[object]:
    return _index(_broken_videos(c), c.tmp / "index.json")


def unreadable_videos_strict(c: Context) -> list[object]:
    return _index(_broken_videos(c), c.tmp / "index.json", "--strict")


def malformed_annotations(c: Context) -> list[object]:
    root = make_diving48(c.tmp / "d48", train=[("a", 0, 0, 5)], test=[], videos=False)
    (root / "Diving48_V2_train.json").write_text('[{"vid_name": "a", ')
    return _index(root, c.tmp / "index.json")


def annotation_pickle_that_runs_code(c: Context) -> list[object]:
    root = make_finediving(c.tmp / "fd", {("ev", 1): "101b"}, train=[("ev", 1)], test=[], frames=False)
    evil_pickle(root / "Annotations" / "train_split.pkl", c.tmp / "command_ran")
    return ["data", "index", "--format", "finediving", "--root", root, "--out", c.tmp / "index.json"]


def split_of_another_index(c: Context) -> list[object]:
    split = json.loads((c.tiny / "split.json").read_text())
    split["labeled"].append("a_clip_of_another_dataset")
    (c.tmp / "foreign_split.json").write_text(json.dumps(split))
    return ["fit-labeled", "--index", c.tiny / "index.json", "--split", c.tmp / "foreign_split.json", "--out-dir",
            c.tmp / "fit"]  # fmt: skip


# Checks: what else must hold after the command.


def _nothing_half_written(c: Context) -> None:
    assert not (c.fs / "E_last.pt").exists() and not (c.fs / "E.pt").exists()


def _written(name: str) -> Callable[[Context], None]:
    def check(c: Context) -> None:
        assert (c.tmp / name).exists()

    return check


def _not_written(name: str) -> Callable[[Context], None]:
    def check(c: Context) -> None:
        assert not (c.tmp / name).exists()

    return check


def _mode_follows_the_umask(c: Context) -> None:
    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(c.tmp / "s.json").st_mode & 0o777 == 0o666 & ~mask


def _old_run_kept(c: Context) -> None:
    assert json.loads((c.tmp / "st" / "run.json").read_text())["config"]["pseudo_labeling"]["theta"] == 0.4


def _two_skipped(c: Context) -> None:
    assert len(json.loads((c.tmp / "index.json").read_text())["skipped"]) == 2


FAULTS: list[Fault] = [
    # ---- write errors
    Fault("split_readonly", lambda c: _split(c, c.fs / "s.json"), 1, ("{fs}", "read-only file system"), "readonly"),
    Fault(
        "index_readonly",
        lambda c: _index(c.tiny / "data", c.fs / "index.json"),
        1,
        ("{fs}", "read-only file system"),
        "readonly",
    ),
    Fault(
        "pseudolabel_readonly",
        lambda c: ["pseudolabel", *encoders(c.tiny), "--out-dir", c.fs / "pl"],
        1,
        ("read-only file system",),
        "readonly",
    ),
    Fault("fit_readonly", lambda c: _fit(c, c.fs), 1, ("{fs}", "read-only file system"), "readonly"),
    Fault(
        "evaluate_readonly",
        lambda c: ["evaluate", *encoders(c.tiny), "--out-dir", c.fs / "eval"],
        1,
        ("read-only file system",),
        "readonly",
    ),
    Fault(
        "fit_full_disk", lambda c: _fit(c, c.fs), 1, ("{fs}/E_last.pt", "no space left"), "full", _nothing_half_written
    ),
    Fault(
        "pseudolabel_full_disk",
        lambda c: ["pseudolabel", *encoders(c.tiny), "--out-dir", c.fs],
        1,
        ("{fs}/gallery.h5", "no space left"),
        "full",
    ),
    Fault("output_under_a_file", output_under_a_file, 1, ("{tmp}/a_file", "is a file")),
    Fault("out_is_a_folder", out_is_a_folder, 1, ("{tmp}/d", "is a folder")),
    Fault("out_dir_is_a_file", out_dir_is_a_file, 1, ("{tmp}/f", "is a file")),
    Fault("stale_temporaries_are_swept", stale_temporary, 0, (), check=_written("pl/pseudo.h5")),
    Fault("files_get_the_umask", lambda c: _split(c, c.tmp / "s.json"), 0, (), check=_mode_follows_the_umask),
    # ---- run folders
    Fault(
        "fresh_run_into_a_finished_folder",
        fresh_run_into_a_finished_folder,
        1,
        ("{tmp}/st", "already holds a selftrain run", "--resume", "--force"),
        check=_old_run_kept,
    ),
    Fault("resume_with_other_options", resume_with_other_theta, 1, ("{tmp}/st/run.json", "theta: 0.4 -> 0.5")),
    Fault("resume_with_another_source", resume_with_another_source, 1, ("run.json", "'collab' -> 'action'")),
    Fault("resume_a_moved_run_folder", resume_a_moved_run_folder, 0, (), check=_written("moved/selftrain.json")),
    Fault("a_folder_of_another_stage", folder_of_another_stage, 1, ("{tmp}/pre", "holds a pretrain run")),
    # ---- artifacts checked on load
    Fault(
        "checkpoint_missing_everything",
        checkpoint_missing_everything,
        1,
        ("edited_E.pt", "no architecture", "no weights", "no config", "no class names"),
    ),
    Fault("checkpoint_config_as_a_string", checkpoint_config_as_a_string, 1, ("edited_E.pt", "no config")),
    Fault(
        "checkpoint_that_is_not_torch", checkpoint_that_is_not_torch, 1, ("junk.pt", "not a loadable fgar checkpoint")
    ),
    Fault(
        "checkpoint_that_runs_code",
        checkpoint_that_runs_code,
        1,
        ("evil.pt", "never unpickles code"),
        check=_not_written("pwned"),
    ),
    Fault("gallery_label_out_of_range", gallery_label_out_of_range, 1, ("gallery.h5", "labels must lie in 0..2")),
    Fault("gallery_of_another_feature_size", gallery_of_another_feature_size, 1, ("gallery.h5", "8 x 128")),
    Fault("gallery_of_another_clip_length", gallery_of_another_clip_length, 1, ("gallery.h5", "4 frames")),
    Fault("gallery_all_nan", gallery_all_nan, 1, ("gallery.h5", "NaN")),
    Fault(
        "pseudo_labels_of_another_split",
        pseudo_labels_of_another_split,
        1,
        ("round_1/pseudo.h5", "is not one of the"),
    ),
    # ---- inputs
    Fault("config_not_utf8", config_not_utf8, 1, ("c.yaml", "not a UTF-8 text file")),
    Fault(
        "index_label_is_a_string",
        index_label_is_a_string,
        1,
        ("{tmp}/index.json", "entry 1", "'label' must be an integer"),
    ),
    Fault(
        "index_num_frames_not_a_number",
        index_num_frames_not_a_number,
        1,
        ("{tmp}/index.json", "'num_frames' must be an integer"),
    ),
    Fault("shared_config_file_without_the_stage_table", shared_config_without_the_stage_table, 0, ()),
    Fault(
        "init_a_given_an_action_checkpoint",
        init_a_given_an_action_checkpoint,
        1,
        ("E.pt", "'action' checkpoint, but a 'alignability' checkpoint is needed"),
        check=_not_written("fit/E_last.pt"),
    ),
    Fault(
        "theta_nan",
        lambda c: ["pseudolabel", *encoders(c.tiny), "--theta", "nan"],
        1,
        ("pseudo_labeling.theta", "finite number"),
    ),
    Fault(
        "theta_above_one",
        lambda c: ["pseudolabel", *encoders(c.tiny), "--theta", "1.5"],
        1,
        ("pseudo_labeling.theta", "less than or equal to 1"),
    ),
    Fault(
        "video_outside_the_dataset_root",
        video_outside_the_root,
        1,
        ("{tmp}/d48", "'../../elsewhere' lies outside the dataset root", "--allow-outside-root"),
        check=_not_written("index.json"),
    ),
    Fault("video_outside_the_root_when_allowed", video_outside_the_root_allowed, 0, (), check=_written("index.json")),
    # ---- what fgar already handled, kept in the table
    Fault("unreadable_videos_are_skipped", unreadable_videos, 0, (), check=_two_skipped),
    Fault("unreadable_videos_with_strict", unreadable_videos_strict, 1, ("2 unreadable videos", "--strict")),
    Fault("malformed_annotations", malformed_annotations, 1, ("Diving48_V2_train.json", "malformed JSON")),
    Fault(
        "annotation_pickle_that_runs_code",
        annotation_pickle_that_runs_code,
        1,
        ("train_split.pkl", "refusing to unpickle"),
        check=_not_written("command_ran"),
    ),
    Fault("split_of_another_index", split_of_another_index, 1, ("foreign_split.json", "not in the index")),
    Fault(
        "pretrain_action_too_few_frames",
        lambda c: [
            "pretrain",
            "--encoder",
            "action",
            *_tiny_data(c),
            "--arch-e",
            "small3d",
            *CLIP,
            "--out-dir",
            c.tmp / "pre",
        ],
        1,
        ("8 frames leave 2 time steps", "fewer than the 4 local clips"),
        check=_not_written("pre/E0.pt"),
    ),
    Fault(
        "init_e_tclr_weights_without_tclr_flags",
        lambda c: _fit(c, c.tmp / "fit", "--arch-e", "r3d_18", "--init-e", _tclr_like_file(c.tmp / "tclr.pth")),
        1,
        ("tclr.pth", "TCLR weights", "--bgr --raw-input --dilated-layer4"),
        check=_not_written("fit/E.pt"),
    ),
    Fault(
        "init_e_from_an_alignability_checkpoint",
        lambda c: _fit(c, c.tmp / "fit", "--init-e", c.tiny / "pre" / "A0.pt"),
        1,
        ("A0.pt", "'alignability' checkpoint cannot start f_E"),
    ),
    Fault(
        "checkpoint_of_the_wrong_kind",
        lambda c: ["pseudolabel", "--ckpt-a", c.tiny / "fit" / "A.pt", "--ckpt-e", c.tiny / "fit" / "A.pt"],
        1,
        ("A.pt", "'alignability' checkpoint, but a 'action' checkpoint is needed"),
    ),
]


@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
def test_fault(fault: Fault, tiny_run: Path, tmp_path: Path, request: pytest.FixtureRequest, capsys) -> None:
    fs = request.getfixturevalue(fault.fs) if fault.fs else None
    if fault.fs == "readonly" or fault.name.startswith("fit_readonly"):
        _training_never_started(request.getfixturevalue("monkeypatch"))
    ctx = Context(tiny_run, tmp_path, fs)
    args = fault.command(ctx)
    capsys.readouterr()
    code = fgar(*args)
    out, err = capsys.readouterr()
    text = out + err
    assert code == fault.code, text
    assert "Traceback" not in text, text
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    if fault.code == 0:
        assert not errors, text
    else:
        assert len(errors) == 1, text
        for fragment in fault.says:
            assert fragment.format(tmp=tmp_path, fs=fs) in errors[0], errors[0]
    leftovers = [p for p in tmp_path.rglob("*.tmp")]
    assert not leftovers, leftovers
    if fault.check is not None:
        fault.check(ctx)


def test_every_row_is_in_the_reliability_page() -> None:
    page = (Path(__file__).parents[1] / "docs" / "RELIABILITY.md").read_text()
    missing = [f.name for f in FAULTS if f"`{f.name}`" not in page]
    assert not missing, missing


# --------------------------------------------------------------------------- signals and kills, in a subprocess


def _fgar_process(*args: object) -> subprocess.Popen[str]:
    script = Path(sys.executable).with_name("fgar")
    command = [str(script)] if script.exists() else [sys.executable, "-c", "from fgar_cli.entry import main; main()"]
    env = {**os.environ, "FGAR_NO_PROGRESS": "1"}
    return subprocess.Popen(
        [*command, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def _wait_for(path: Path, process: subprocess.Popen[str], epoch: int = 1, timeout: float = 120) -> None:
    """Until `path` is a checkpoint of at least `epoch` epochs (the process is training)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if process.poll() is not None:
            pytest.fail(f"fgar ended early: {process.communicate()}")
        if path.exists():
            try:
                if load_checkpoint(path)["epoch"] >= epoch:
                    return
            except Exception:  # noqa: BLE001 (being renamed into place)
                pass
        time.sleep(0.05)
    pytest.fail(f"{path} did not appear")


def _fit_args(tiny: Path, out: Path) -> list[object]:
    data = ["--index", tiny / "index.json", "--split", tiny / "split.json", "--out-dir", out]
    return ["fit-labeled", *data, "--arch-e", "small3d", "--epochs-e", "25", "--epochs-a", "1", *CLIP]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_during_training_keeps_the_epochs_and_resumes(signum: int, tiny_run: Path, tmp_path: Path) -> None:
    process = _fgar_process(*_fit_args(tiny_run, tmp_path))
    _wait_for(tmp_path / "E_last.pt", process)
    process.send_signal(signum)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1].startswith("interrupted in epoch") and "E_last.pt keeps epoch" in lines[-1], err
    assert "rerun with --resume" in lines[-1]
    assert not list(tmp_path.rglob("*.tmp"))
    assert fgar(*_fit_args(tiny_run, tmp_path), "--resume") == 0
    assert load_checkpoint(tmp_path / "E.pt")["epoch"] == 25


@pytest.mark.parametrize("delay", [0.3, 1.5], ids=["while_starting", "while_importing_torch"])
def test_signal_before_any_work_is_one_line(delay: float, tiny_run: Path, tmp_path: Path) -> None:
    process = _fgar_process(*_fit_args(tiny_run, tmp_path))
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    if process.returncode == 0:
        pytest.skip("fgar finished before the signal")
    assert process.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("interrupted"), err


def test_signal_outside_an_epoch_is_one_line(tmp_path: Path) -> None:
    out = tmp_path / "synth"
    process = _fgar_process("synth", "--out-dir", out, "--classes", "4", "--videos-per-class", "40", "--size", "32")
    start = time.monotonic()
    while not list((out / "rgb").glob("*.mp4")) and time.monotonic() - start < 60:  # rendering has begun
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("interrupted"), err
    assert not list(out.rglob("*.tmp"))


def test_kill_then_resume_is_bit_identical(tiny_run: Path, tmp_path: Path) -> None:
    assert fgar(*_fit_args(tiny_run, tmp_path / "whole")) == 0
    process = _fgar_process(*_fit_args(tiny_run, tmp_path / "killed"))
    _wait_for(tmp_path / "killed" / "E_last.pt", process, epoch=3)
    process.kill()
    process.wait()
    assert fgar(*_fit_args(tiny_run, tmp_path / "killed"), "--resume") == 0
    for name in ("E.pt", "A.pt"):
        whole = load_checkpoint(tmp_path / "whole" / name)["state_dict"]
        resumed = load_checkpoint(tmp_path / "killed" / name)["state_dict"]
        for key in whole:
            torch.testing.assert_close(resumed[key], whole[key], rtol=0, atol=0, msg=f"{name} {key}")


def test_forced_run_keeps_the_old_run_until_its_first_result(
    tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = Context(tiny_run, tmp_path, None)
    out = _finished_selftrain(ctx)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    import fgar_cli.stages.selftrain as selftrain

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(selftrain, "pseudo_label", interrupted)  # Ctrl-C before the new run's first file
    assert fgar(*_selftrain_args(ctx, out, theta="0.5"), "--force") == 130
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    monkeypatch.undo()
    assert fgar(*_selftrain_args(ctx, out, theta="0.5"), "--force") == 0
    record = json.loads((out / "run.json").read_text())
    assert record["config"]["pseudo_labeling"]["theta"] == 0.5
    summary = json.loads((out / "selftrain.json").read_text())
    pl = load_checkpoint(out / "E.pt")["config"]["pseudo_labeling"]["theta"]
    assert pl == 0.5 and summary["rounds"][0]["round"] == 1
