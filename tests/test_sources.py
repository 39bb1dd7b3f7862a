import importlib.util
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from a4g.errors import ConfigError, DataError
from a4g.sources import SOURCES, build_source
from a4g.sources.synthetic import MANIFEST, SHAPES, make_synthetic_dataset, synthetic_frames
from a4g.store.schema import video_list_hash
from a4g.video import rgb_to_yuv420


def _decoded_count(path: Path) -> int:
    import av

    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


@pytest.fixture
def messy_folder(tmp_path: Path, real_clips: Path, synthetic_clip) -> Path:
    """Class folders with real clips, a synthetic clip, and every kind of bad file."""
    root = tmp_path / "videos"
    (root / "real").mkdir(parents=True)
    (root / "synth").mkdir()
    for name in ("bikes.mp4", "carphone_pristine.mp4"):
        shutil.copyfile(real_clips / name, root / "real" / name)
    shutil.copyfile(synthetic_clip[0], root / "synth" / "circle.mp4")
    data = (real_clips / "bikes.mp4").read_bytes()
    (root / "real" / "truncated.mp4").write_bytes(data[: len(data) // 3])
    (root / "synth" / "fake.mp4").write_bytes(b"this is not a video" * 50)
    (root / "synth" / "empty.avi").write_bytes(b"")
    (root / "synth" / "notes.txt").write_text("hello")
    return root


def test_folder_source_counts_real_frames_and_skips_bad_files(messy_folder: Path):
    src = build_source(str(messy_folder))
    assert src.name == "folder"
    scan = src.scan()
    assert scan.classes == ["real", "synth"]
    got = {v.video_id: (v.label, v.num_frames) for v in scan.videos}
    expected = {
        "real/bikes.mp4": (0, _decoded_count(messy_folder / "real/bikes.mp4")),
        "real/carphone_pristine.mp4": (0, _decoded_count(messy_folder / "real/carphone_pristine.mp4")),
        "synth/circle.mp4": (1, 10),
    }
    assert got == expected
    assert expected["real/bikes.mp4"][1] == 250
    reasons = {Path(s.path).name: s.reason for s in scan.skipped}
    assert set(reasons) == {"truncated.mp4", "fake.mp4", "empty.avi", "notes.txt"}
    assert "extension" in reasons["notes.txt"]
    assert "decod" in reasons["fake.mp4"]


def test_truncated_file_with_header_first_is_skipped(tmp_path: Path):
    """A faststart mp4 keeps its index up front: the header promises frames the file lacks."""
    import av

    frames = synthetic_frames("square", 1, 40, 64, 64)
    path = tmp_path / "c" / "fs.mp4"
    path.parent.mkdir()
    with av.open(str(path), "w", options={"movflags": "faststart"}) as out:
        st = out.add_stream("libx264", rate=25)
        st.width = st.height = 64
        st.pix_fmt = "yuv420p"
        st.options = {"g": "5"}
        for f in frames:
            for p in st.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(p)
        for p in st.encode():
            out.mux(p)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])
    scan = build_source("folder", tmp_path).scan()
    assert scan.videos == []
    assert len(scan.skipped) == 1 and Path(scan.skipped[0].path).name == "fs.mp4"
    assert scan.skipped[0].reason.startswith("truncated")


def test_read_frames_matches_written_frames(synthetic_clip):
    path, frames = synthetic_clip
    src = build_source(str(path.parent))
    video = src.scan().videos[0]
    got = src.read(video.path, [0, 3, 9])
    assert got.shape == (3, 48, 64, 3) and got.dtype == np.uint8
    # lossy but near-lossless encoding (qp 10, 4:2:0 chroma): close to what was written
    assert np.abs(got.astype(int) - frames[[0, 3, 9]].astype(int)).mean() < 4


def test_empty_folder_is_a_clear_error(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no video files"):
        build_source("folder", tmp_path / "empty").scan()
    with pytest.raises(ConfigError, match="neither a known source"):
        build_source(str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="needs --data-root"):
        build_source("ucf101")


@pytest.fixture
def ucf_root(tmp_path: Path, synthetic_clip) -> Path:
    root = tmp_path / "ucf"
    classes = ["ApplyEyeMakeup", "Basketball", "YoYo"]
    for c in classes:
        for g in (1, 2):
            dst = root / "UCF-101" / c / f"v_{c}_g0{g}_c01.avi"
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(synthetic_clip[0], dst)
    lists = root / "ucfTrainTestlist"
    lists.mkdir()
    # classInd order deliberately not alphabetical for one class, to prove labels come from it
    (lists / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 YoYo\n3 Basketball\n")
    (lists / "trainlist01.txt").write_text(
        "".join(f"{c}/v_{c}_g01_c01.avi {i + 1}\n" for i, c in enumerate(classes))
    )
    (lists / "testlist01.txt").write_text("".join(f"{c}/v_{c}_g02_c01.avi\n" for c in classes))
    return root


def test_ucf101_labels_from_classind_and_split(ucf_root: Path):
    scan = build_source("ucf101", ucf_root, split="train", fold=1).scan()
    assert scan.classes == ["ApplyEyeMakeup", "YoYo", "Basketball"]
    assert {v.video_id: v.label for v in scan.videos} == {
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi": 0,
        "Basketball/v_Basketball_g01_c01.avi": 2,
        "YoYo/v_YoYo_g01_c01.avi": 1,
    }
    test = build_source("ucf101", ucf_root, split="test", fold=1).scan()
    assert all("_g02_" in v.video_id for v in test.videos) and len(test.videos) == 3
    everything = build_source("ucf101", ucf_root).scan()
    assert len(everything.videos) == 6
    with pytest.raises(DataError, match="testlist02"):
        build_source("ucf101", ucf_root, split="test", fold=2).scan()


def test_frames_source(tmp_path: Path):
    frames = synthetic_frames("circle", 3, 5, 32, 40)
    for vid in ("a", "b/c"):
        d = tmp_path / "frames" / vid
        d.mkdir(parents=True)
        for i, f in enumerate(frames):
            Image.fromarray(f).save(d / f"{i:04d}.png")
    src = build_source(str(tmp_path / "frames"))
    assert src.name == "frames"
    scan = src.scan()
    assert [(v.video_id, v.num_frames) for v in scan.videos] == [("a", 5), ("b/c", 5)]
    np.testing.assert_array_equal(src.read(scan.videos[1].path, [1, 4]), frames[[1, 4]])


def test_webdataset_source(tmp_path: Path, synthetic_clip, real_clips: Path):
    tar_path = tmp_path / "shard-000.tar"
    with tarfile.open(tar_path, "w") as tar:
        tar.add(synthetic_clip[0], arcname="s1.mp4")
        info = tarfile.TarInfo("s1.json")
        payload = json.dumps({"class": "circle"}).encode()
        info.size = len(payload)
        import io

        tar.addfile(info, io.BytesIO(payload))
        tar.add(real_clips / "carphone_pristine.mp4", arcname="s2.mp4")
        info = tarfile.TarInfo("s2.json")
        payload = json.dumps({"class": "phone"}).encode()
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
        info = tarfile.TarInfo("s3.json")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"{}"))
    src = build_source(str(tar_path))
    assert src.name == "webdataset"
    scan = src.scan()
    assert scan.classes == ["circle", "phone"]
    assert [(v.video_id, v.label, v.num_frames) for v in scan.videos] == [
        ("shard-000.tar/s1", 0, 10),
        ("shard-000.tar/s2", 1, 120),
    ]
    assert [s.reason for s in scan.skipped] == ["sample has no video member"]
    assert src.read(scan.videos[1].path, [0, 119]).shape == (2, 144, 176, 3)


def test_synthetic_is_deterministic(tmp_path: Path):
    a = synthetic_frames("stripes", 1, 4, 30, 40)
    np.testing.assert_array_equal(a, synthetic_frames("stripes", 1, 4, 30, 40))
    assert not np.array_equal(a, synthetic_frames("stripes", 2, 4, 30, 40))
    src = build_source("synthetic", tmp_path / "syn")
    scan = src.scan()
    assert scan.classes == list(sorted(SHAPES))
    assert len(scan.videos) == 2 * len(SHAPES) and all(v.num_frames == 24 for v in scan.videos)


def test_demo_has_real_and_synthetic_clips(tmp_path: Path):
    scan = build_source("demo", tmp_path / "demo").scan()
    ids = [v.video_id for v in scan.videos]
    assert "real/bikes.mp4" in ids and "circle/circle_00.mp4" in ids
    assert scan.skipped == []
    assert set(SOURCES) == {"ucf101", "folder", "frames", "webdataset", "synthetic", "demo"}


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _list_hash(root: Path) -> str:
    scan = build_source("folder", root).scan()
    return video_list_hash((v.video_id, v.num_frames, v.size_bytes) for v in scan.videos)


def test_materializations_are_byte_identical(tmp_path: Path):
    """Two materializations (here and in a fresh process) hold the same bytes, so the video list hash
    and a store's fingerprint match across machines. Before: 4 of 6 clips differed."""
    make_synthetic_dataset(tmp_path / "a")
    code = f"from a4g.sources.synthetic import make_synthetic_dataset; make_synthetic_dataset({str(tmp_path / 'b')!r})"
    subprocess.run([sys.executable, "-c", code], check=True)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert len(a) == 2 * len(SHAPES) + 1 and a.keys() == b.keys()  # the clips and the manifest
    assert [name for name in a if a[name] != b[name]] == []
    assert _list_hash(tmp_path / "a") == _list_hash(tmp_path / "b")
    # the synthetic clips are lossless: they decode to exactly the generated frames' YUV planes
    import av

    with av.open(str(tmp_path / "a" / "circle" / "circle_00.mp4")) as c:
        yuv = np.stack([f.to_ndarray(format="yuv420p") for f in c.decode(video=0)])
    np.testing.assert_array_equal(yuv, rgb_to_yuv420(synthetic_frames("circle", 0, 24, 120, 160)))


def test_generated_sets_never_write_into_a_persons_folder(tmp_path: Path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    for name in ("demo", "synthetic"):
        with pytest.raises(ConfigError, match=f"--data-root {mine} is not empty and a4g did not make it"):
            build_source(name, mine)
    assert _files(mine) == {"notes.txt": b"keep me"}  # nothing written, nothing removed
    (tmp_path / "empty").mkdir()
    build_source("synthetic", tmp_path / "empty")
    first = _files(tmp_path / "empty")
    assert MANIFEST in first and "circle/circle_00.mp4" in first
    # an earlier materialization is reused; a damaged clip of it is made again, identical
    (tmp_path / "empty" / "circle" / "circle_00.mp4").write_bytes(b"damaged")
    build_source("synthetic", tmp_path / "empty")
    assert _files(tmp_path / "empty") == first
    with pytest.raises(ConfigError, match="holds a4g's 'synthetic' dataset, not 'demo'"):
        build_source("demo", tmp_path / "empty")


VIDEO_BAD_INPUTS = [  # (name, extract flags, env, what the one error line names)
    ("demo into a person's folder", ["--dataset", "demo", "--data-root", "{mine}"], {}, "--data-root {mine}"),
    ("only garbage videos", ["--dataset", "{garbage}"], {}, "not a decodable video"),
    ("a video file as --dataset", ["--dataset", "{garbage}/a/noise.mp4"], {}, "--dataset"),
    ("unknown decoder", ["--dataset", "synthetic"], {"A4G_DECODER": "banana"}, "A4G_DECODER"),
    ("--size 0", ["--dataset", "synthetic", "--size", "0"], {}, "--size"),
]


@pytest.mark.parametrize(
    "flags,env,needle", [c[1:] for c in VIDEO_BAD_INPUTS], ids=[c[0] for c in VIDEO_BAD_INPUTS]
)
def test_video_side_bad_inputs_end_in_one_error_line(tmp_path: Path, monkeypatch, flags, env, needle):
    from conftest import check_one_error_line
    from typer.testing import CliRunner

    from a4g.cli import app

    paths = {"mine": tmp_path / "mine", "garbage": tmp_path / "garbage"}
    paths["mine"].mkdir()
    (paths["mine"] / "a.txt").write_text("x")
    (paths["garbage"] / "a").mkdir(parents=True)
    (paths["garbage"] / "a" / "noise.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    monkeypatch.setenv("A4G_CACHE", str(tmp_path / "cache"))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    args = ["extract", *(f.format(**paths) for f in flags), "--out", str(tmp_path / "s")]
    result = CliRunner().invoke(app, [*args, "--vae", "tiny", "--random-init", "--no-progress"])
    check_one_error_line(result.exit_code, result.stderr, needle.format(**paths))
    assert sorted(p.name for p in paths["mine"].iterdir()) == ["a.txt"]  # nothing written into it


def test_garbage_video_is_skipped_with_a_reason_and_a_file_dataset_is_refused(tmp_path: Path, synthetic_clip):
    root = tmp_path / "videos"
    (root / "a").mkdir(parents=True)
    shutil.copyfile(synthetic_clip[0], root / "a" / "good.mp4")
    (root / "a" / "noise.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    (root / "a" / "link.mp4").symlink_to(tmp_path / "moved-away.mp4")
    scan = build_source(str(root)).scan()
    assert [v.video_id for v in scan.videos] == ["a/good.mp4"]
    assert [(Path(s.path).name, s.reason) for s in scan.skipped] == [
        ("link.mp4", "broken link"),
        ("noise.mp4", "not a decodable video (InvalidDataError)"),
    ]
    with pytest.raises(ConfigError, match="--dataset .*good.mp4 is a file"):
        build_source(str(root / "a" / "good.mp4"))


@pytest.mark.skipif(
    not importlib.util.find_spec("decord"), reason="decord not installed (pip install .[fast])"
)
def test_store_is_the_same_from_either_decoder(tmp_path: Path, monkeypatch):
    """A store extracted with PyAV equals one extracted with decord, real clips included: same arrays,
    same fingerprint (the decoder is recorded in the schema but is not content)."""
    from conftest import EXTRACT_TINY
    from typer.testing import CliRunner

    from a4g.cli import app
    from a4g.store import FeatureStore

    monkeypatch.setenv("A4G_CACHE", str(tmp_path / "cache"))
    stores = {}
    for decoder in ("pyav", "decord"):
        monkeypatch.setenv("A4G_DECODER", decoder)
        args = ["extract", *EXTRACT_TINY, "--out", str(tmp_path / decoder)]
        args[args.index("synthetic")] = "demo"
        result = CliRunner().invoke(app, [*args, "--limit-videos", "3", "--every", "10"])
        assert result.exit_code == 0, result.output
        stores[decoder] = FeatureStore.open(tmp_path / decoder)
        assert stores[decoder].schema.preprocess.decoder == decoder
    a, b = stores["pyav"], stores["decord"]
    assert "real/bikes.mp4" in a.index.ids
    assert a.schema.fingerprint == b.schema.fingerprint
    for name in a.array_names:
        assert np.array_equal(a.array(name)[:], b.array(name)[:]), name
