"""The scan done once: the same items, errors and counts with or without the cache and with any number of worker
processes; a new scan whenever a data file, the tokenizer or an option that changes the result changes; an entry
that only ever appears complete; one scan under torchrun, read by both ranks."""

from __future__ import annotations

import gc
import hashlib
import io
import json
import os
import pickle
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import qwenvl_train.data.engine as engine
import qwenvl_train.data.engine.pipeline as pipeline
from qwenvl_train.data import DataOptions, scan
from qwenvl_train.data.check import check_data
from qwenvl_train.data.engine.cache import SCAN_MODULES, code_fingerprint
from qwenvl_train.data.engine.result import META_FILE
from qwenvl_train.tokenizer import QwenVLTokenizer
from scan_fixtures import read_file
from train_fixtures import cpu_args, cpu_env, free_port, write_dataset

ROOT = Path(__file__).resolve().parents[1]
NQ = 16


@pytest.fixture(scope="module")
def tok(vocab_file) -> QwenVLTokenizer:
    return QwenVLTokenizer(vocab_file=str(vocab_file))


def conv(*values: str) -> list[dict]:
    return [{"from": ("user", "assistant")[i % 2], "value": v} for i, v in enumerate(values)]


def write_data(folder: Path) -> list[Path]:
    """Three files with a bit of everything: images (one missing), duplicate ids, a sample too long, bad markup,
    a JSON Lines line that is not JSON, a system turn, and a JSON list that turns out broken at its end."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(3):
        Image.new("RGB", (8 + i, 8), (40 * i, 90, 200)).save(folder / f"{i}.png")
    samples = []
    for i in range(14):
        sample = {
            "id": f"s{i}",
            "conversations": conv(f"Picture: <img>{i % 3}.png</img>What is {i}?", f"It is {i}."),
        }
        samples.append(sample)
    samples[3]["conversations"] = conv("<img>missing.png</img>q", "a")
    samples[5]["conversations"] = conv("<ref>open", "a")
    samples[6]["id"] = "s1"  # a duplicate
    samples[8]["conversations"] = conv("q", "a", "word " * 80, "b")  # over the maximum length
    samples[9] = {"conversations": [{"from": "system", "value": "Be brief."}, *conv("hi", "hello")]}
    first = folder / "a.json"
    first.write_text(json.dumps(samples, indent=1))
    lines = [json.dumps({"id": f"l{i}", "conversations": conv(f"line {i}", "ok")}) for i in range(5)]
    lines.insert(2, '{"id": "broken", oops}')
    second = folder / "b.jsonl"
    second.write_text("\n".join(lines) + "\n")
    broken = folder / "c.json"
    good = [{"id": f"c{i}", "conversations": conv("q", "a")} for i in range(6)]
    broken.write_text(json.dumps(good)[:-1] + ', {"id": "c9" "conversations": []}]')
    return [first, second, broken]


def options(**overrides) -> DataOptions:
    return DataOptions(**{"on_error": "skip", "model_max_length": 64, "truncation": "cut_turns", **overrides})


def everything(result) -> dict:
    """All a scan found, as plain values."""
    items = result.items
    return {
        "columns": {
            name: np.asarray(getattr(items, name)).tolist()
            for name in (
                "input_ids",
                "trained",
                "offsets",
                "item_lengths",
                "file_index",
                "lines",
                "image_turns",
                "image_offsets",
            )
        },  # fmt: skip
        "ids": list(items.ids),
        "images": list(items.images),
        "files": items.files,
        "items": [
            (it.id, it.file, it.line, it.input_ids.tolist(), it.labels.tolist(), it.images) for it in items
        ],
        "summary": result.summary.to_json(),
        "errors": [str(e) for e in result.summary.errors],
        "lengths": np.asarray(result.lengths).tolist(),
        "str": str(result.summary),
    }


class Scans:
    """Counts the scans really done (not read from the cache)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        original = engine.scan_files

        def counting(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            self.count += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(engine, "scan_files", counting)


def test_the_same_items_errors_and_counts_with_or_without_cache_and_workers(tok, tmp_path, monkeypatch):
    files = write_data(tmp_path / "data")
    monkeypatch.setattr(pipeline, "CHUNK_RECORDS", 2)  # several chunks per file, in flight at once
    scans = Scans(monkeypatch)
    reference = scan(files, tok, options(data_cache="off", preprocessing_num_workers=1), n_queries=NQ)
    expected = everything(reference)
    # the data has what it was written to have
    summary = reference.summary
    assert (summary.samples_read, summary.skipped, summary.kept, summary.duplicate_ids) == (20, 3, 17, 1)
    assert (summary.unreadable_files, summary.cut, summary.system_turns, summary.image_errors) == (1, 1, 1, 1)
    assert expected["errors"][0].startswith(f"{files[2]}:1:") and "bad JSON" in expected["errors"][0]
    assert not any(
        i.startswith("c") for i in expected["ids"]
    )  # the broken file gave nothing, not its first part
    raws = read_file(files[0]).samples
    assert summary.duplicate_examples == [
        f"'s1' at {files[0]}:{raws[6].line}, first at {files[0]}:{raws[1].line}"
    ]
    for workers in (2, 3):
        result = scan(files, tok, options(data_cache="off", preprocessing_num_workers=workers), n_queries=NQ)
        assert everything(result) == expected, workers
    monkeypatch.setattr(pipeline, "IN_PROCESS_BELOW", 0)  # as large data: scanned in a forked process (which
    # counts its scan in its own copy of `scans`)
    for workers in (1, 2):
        result = scan(files, tok, options(data_cache="off", preprocessing_num_workers=workers), n_queries=NQ)
        assert everything(result) == expected, workers
        assert f"pid {os.getpid()} " in result.provenance  # the caller says it scanned (with its children)
    monkeypatch.setattr(pipeline, "IN_PROCESS_BELOW", 4 << 20)
    cache = tmp_path / "cache"
    first = scan(files, tok, options(data_cache=str(cache), preprocessing_num_workers=2), n_queries=NQ)
    assert scans.count == 4 and "scanned 20 samples" in first.provenance and str(cache) in first.provenance
    again = scan(files, tok, options(data_cache=str(cache), on_error="raise"), n_queries=NQ)
    assert (
        scans.count == 4
        and again.provenance.startswith("pid ")
        and " read the scan from " in again.provenance
    )
    assert everything(first) == everything(again) == expected
    assert (
        again.options.on_error == "raise"
    )  # the caller's options, not those of the scan that made the entry


def test_a_failure_in_the_forked_scan_is_raised_in_the_caller(tok, tmp_path, monkeypatch):
    data = write_dataset(tmp_path / "data", n_samples=2)
    monkeypatch.setattr(pipeline, "IN_PROCESS_BELOW", 0)

    def broken(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise ValueError("something in the scan went wrong")

    monkeypatch.setattr(engine, "scan_files", broken)
    with pytest.raises(ValueError, match="something in the scan went wrong"):
        scan(data, tok, DataOptions(data_cache=str(tmp_path / "cache")), n_queries=NQ)
    assert [p.name for p in (tmp_path / "cache").iterdir() if p.is_dir()] == []  # nothing left behind
    monkeypatch.setattr(engine, "scan_files", lambda *args, **kwargs: os._exit(9))
    with pytest.raises(RuntimeError, match=r"the scan process died \(exit code 9\)"):
        scan(data, tok, DataOptions(data_cache="off"), n_queries=NQ)


def test_check_data_reports_a_cached_scan_exactly_as_a_fresh_one(tok, model_dir, tmp_path, monkeypatch):
    files = write_data(tmp_path / "data")
    scans = Scans(monkeypatch)
    reports = []
    for _ in range(2):
        out = io.StringIO()
        code = check_data([str(f) for f in files], model_dir, out=out, tokenizer=tok, verify_images="header")
        reports.append((code, out.getvalue().split("\n", 1)))
    assert scans.count == 1
    (code, (fresh_line, fresh)), (cached_code, (cached_line, cached)) = reports
    assert fresh_line.startswith("scan: pid ") and " scanned 20 samples in " in fresh_line
    assert cached_line.startswith("scan: pid ") and " read the scan from " in cached_line
    assert (code, fresh) == (cached_code, cached) and "errors: 4\n" in fresh and code == 1


@pytest.mark.parametrize("change", ["data_same_size", "data_appended", "policy", "truncation", "max_length",
                                    "n_queries", "tokenizer", "allow_bare_boxes"])  # fmt: skip
def test_a_changed_input_or_setting_scans_again(change, tok, vocab_file, tmp_path, monkeypatch):
    data = tmp_path / "d.json"
    samples = [{"id": "a", "conversations": conv("question", "an answer that is long enough")}]
    data.write_text(json.dumps(samples))
    scans = Scans(monkeypatch)
    kwargs = {"n_queries": NQ}
    before = scan(data, tok, options(), **kwargs)
    assert (
        scan(data, tok, options(), **kwargs).items[0].input_ids.tolist() == before.items[0].input_ids.tolist()
    )
    assert scans.count == 1
    opts = options()
    if change == "data_same_size":  # same size, same inode, same modification time: only the content differs
        st = data.stat()
        with open(data, "r+b") as fh:
            fh.write(data.read_bytes().replace(b'"question"', b'"QUESTION"'))
        os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert (data.stat().st_size, data.stat().st_mtime_ns, data.stat().st_ino) == (
            st.st_size,
            st.st_mtime_ns,
            st.st_ino,
        )
    elif change == "data_appended":
        data.write_text(json.dumps(samples * 2))
    elif change == "policy":
        opts = options(label_policy="reference")
    elif change == "truncation":
        opts = options(truncation="drop")
    elif change == "max_length":
        opts = options(model_max_length=65)
    elif change == "n_queries":
        kwargs = {"n_queries": NQ + 1}
    elif change == "allow_bare_boxes":
        opts = options(allow_bare_boxes=True)
    else:  # the same kind of tokenizer over another vocabulary: two BPE ranks swapped
        vocab = vocab_file.read_bytes().split(b"\n")
        first, second = vocab[0].split(), vocab[1].split()
        vocab[0], vocab[1] = first[0] + b" " + second[1], second[0] + b" " + first[1]
        (tmp_path / "qwen.tiktoken").write_bytes(b"\n".join(vocab))
        tok = QwenVLTokenizer(vocab_file=str(tmp_path / "qwen.tiktoken"))
    after = scan(data, tok, opts, **kwargs)
    assert scans.count == 2 and "scanned" in after.provenance
    if change == "data_same_size":
        assert tok.encode_text("QUESTION")[0] in after.items[0].input_ids.tolist()
    if change == "data_appended":
        assert len(after.items) == 2
    assert scan(data, tok, opts, **kwargs).provenance.split(" read the scan from ")[1]  # cached in turn
    assert scans.count == 2


def test_the_code_fingerprint_covers_every_engine_module():
    """A change to any module of the engine is a new key: each one is listed in SCAN_MODULES, and every name
    listed is a module that exists (code_fingerprint raises otherwise)."""
    folder = Path(engine.__file__).parent
    modules = {
        "data.engine" if p.stem == "__init__" else f"data.engine.{p.stem}" for p in folder.glob("*.py")
    }
    assert modules <= set(SCAN_MODULES)
    assert len(code_fingerprint()) == 64


def test_the_image_check_level(tok, tmp_path, monkeypatch):
    """A result made with a stronger check serves a weaker one when it found no image error; an image the scan
    found bad and that is fixed since makes the next run scan again."""
    good = tmp_path / "good.png"
    Image.new("RGB", (4, 4)).save(good)
    buf = io.BytesIO()
    Image.effect_noise((64, 64), 50).convert("RGB").save(buf, "PNG")
    (tmp_path / "cut.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    clean = tmp_path / "clean.json"
    clean.write_text(json.dumps([{"id": "a", "conversations": conv("<img>good.png</img>q", "a")}]))
    cut = tmp_path / "cut.json"
    cut.write_text(json.dumps([{"id": "b", "conversations": conv("<img>cut.png</img>q", "a")}]))
    scans = Scans(monkeypatch)
    full = scan(clean, tok, options(verify_images="full"), n_queries=NQ)
    header = scan(clean, tok, options(verify_images="header"), n_queries=NQ)
    assert scans.count == 1 and header.provenance.split(" read the scan from ")[1].split(" ")[0].endswith(
        "-full"
    )
    assert everything(header) == everything(full)
    scan(clean, tok, options(verify_images="none"), n_queries=NQ)
    assert scans.count == 1
    # the full check finds the truncated image; the header check would not: not served by the full entry
    assert scan(cut, tok, options(verify_images="full"), n_queries=NQ).summary.image_errors == 1
    assert scan(cut, tok, options(verify_images="header"), n_queries=NQ).summary.image_errors == 0
    assert scans.count == 3
    # a weaker entry never serves a stronger check
    scan(clean, tok, options(verify_images="full", model_max_length=99), n_queries=NQ)
    scan(clean, tok, options(verify_images="header", model_max_length=100), n_queries=NQ)
    scan(clean, tok, options(verify_images="full", model_max_length=100), n_queries=NQ)
    assert scans.count == 6
    # a missing image, then put in place: scanned again
    missing = tmp_path / "missing.json"
    missing.write_text(json.dumps([{"id": "c", "conversations": conv("<img>later.png</img>q", "a")}]))
    assert scan(missing, tok, options(), n_queries=NQ).summary.image_errors == 1
    assert scan(missing, tok, options(), n_queries=NQ).summary.image_errors == 1
    assert scans.count == 7
    Image.new("RGB", (4, 4)).save(tmp_path / "later.png")
    assert scan(missing, tok, options(), n_queries=NQ).summary.image_errors == 0
    assert scans.count == 8


def test_a_killed_scan_leaves_no_entry(tok, tmp_path):
    """A scan killed (SIGKILL) while writing leaves only a hidden temporary folder; the next run scans, and the
    entries for the old content of a data file go when its new content is cached."""
    data = write_dataset(tmp_path / "data", n_samples=4)
    cache = tmp_path / "cache"
    code = (
        "import sys, time\n"
        "import qwenvl_train.data.engine.pipeline as pipeline\n"
        "from qwenvl_train.data import DataOptions, scan\n"
        "from qwenvl_train.data.engine.chunks import Assembler\n"
        "from qwenvl_train.tokenizer import QwenVLTokenizer\n"
        "pipeline.CHUNK_RECORDS = 1\n"
        "add = Assembler.add\n"
        "def slow(self, chunk):\n"
        "    add(self, chunk)\n"
        "    print('merged', flush=True)\n"
        "    time.sleep(60)\n"
        "Assembler.add = slow\n"
        f"scan({str(data)!r}, QwenVLTokenizer(vocab_file={tok.vocab_file!r}),"
        f" DataOptions(data_cache={str(cache)!r}), n_queries={NQ})\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline() == "merged\n"  # mid-scan: one chunk merged and written
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    left = [p.name for p in cache.iterdir() if p.is_dir()]
    assert len(left) == 1 and left[0].startswith(".tmp-") and not (cache / left[0] / META_FILE).exists()
    first = scan(data, tok, DataOptions(data_cache=str(cache)), n_queries=NQ)
    assert "scanned 5 samples" in first.provenance
    entries = sorted(p.name for p in cache.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert len(entries) == 1 and first.folder == cache / entries[0]
    data.write_text(data.read_text().replace("What colour", "Which colour"))
    scan(data, tok, DataOptions(data_cache=str(cache)), n_queries=NQ)
    after = sorted(p.name for p in cache.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert len(after) == 1 and after != entries  # the entry of the old content is gone


def test_items_pickle_as_a_reference_and_off_leaves_nothing(tok, tmp_path):
    data = write_dataset(tmp_path / "data", n_samples=4)
    result = scan(data, tok, DataOptions(data_cache=str(tmp_path / "cache")), n_queries=NQ)
    payload = pickle.dumps(result.items)
    assert len(payload) < 2000  # the folder and the column lengths, not the columns
    again = pickle.loads(payload)
    assert [tuple(map(str, it)) for it in again] == [tuple(map(str, it)) for it in result.items]
    off = scan(data, tok, DataOptions(data_cache="off"), n_queries=NQ)
    folder = off.items.folder
    assert folder is not None and folder.is_dir() and "not cached (--data_cache off)" in off.provenance
    del off
    gc.collect()
    assert not folder.exists()


def test_an_unusable_cache_folder_falls_back_to_scanning(tok, tmp_path, caplog):
    data = write_dataset(tmp_path / "data", n_samples=2)
    (tmp_path / "file").write_text("not a folder")
    result = scan(data, tok, DataOptions(data_cache=str(tmp_path / "file" / "cache")), n_queries=NQ)
    assert len(result.items) == 3 and "not cached" in result.provenance
    assert "cannot be used" in caplog.text


def test_progress_bar_shows_samples_per_second(tok, tmp_path, capsys):
    data = write_dataset(tmp_path / "data", n_samples=2)
    scan(data, tok, DataOptions(data_cache="off"), n_queries=NQ, progress=True)
    err = capsys.readouterr().err
    assert "scanning data" in err and "3 samples" in err and "samples/s" in err


WORKER = Path(__file__).with_name("train_scan_worker.py")


@pytest.mark.slow
def test_torchrun_scans_once_and_both_ranks_read_the_same_items(tiny_model_dir, tmp_path):
    data = write_dataset(tmp_path / "data", n_samples=6)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           str(WORKER), *cpu_args(tiny_model_dir, data, tmp_path / "out"), "--ddp_backend", "gloo",
           "--data_cache", str(tmp_path / "cache")]  # fmt: skip
    proc = subprocess.run(cmd, env=cpu_env(), cwd=ROOT, capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-5000:]
    scanned = [line for line in output.splitlines() if " scanned 7 samples in " in line]
    read = [line for line in output.splitlines() if " read the scan from " in line]
    assert len(scanned) == 1 and len(read) == 1, output[-5000:]
    scanner = scanned[0].split("qwenvl-train: ")[1].split(" scanned")[0]
    assert scanner.startswith("rank ") and f"(scanned by {scanner} in " in read[0]
    digests = [json.loads(found) for found in re.findall(r"ITEMS (\{[^}]*\})", output)]
    assert sorted(d["rank"] for d in digests) == [0, 1]
    assert digests[0]["digest"] == digests[1]["digest"] and digests[0]["samples"] == 7
    expected = hashlib.sha256()
    for item in scan(data, QwenVLTokenizer(vocab_file=str(tiny_model_dir / "qwen.tiktoken")),
                     DataOptions(data_cache="off"), n_queries=16).items:  # fmt: skip
        expected.update(
            json.dumps([item.id, item.input_ids.tolist(), item.labels.tolist(), item.images]).encode()
        )
    assert digests[0]["digest"] == expected.hexdigest()
