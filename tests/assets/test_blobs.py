"""Two processes writing the same blobs into one folder at once (engine.assets.blobs): for each digest
exactly one is told it created the blob, every blob holds the bytes its name hashes to (blake3 computed
here), a reader never finds a partial one, and no temporary file is left behind."""

from __future__ import annotations

import multiprocessing
import threading
from multiprocessing.synchronize import Barrier
from pathlib import Path

import blake3

from engine.assets.blobs import PARTIAL_PREFIX, BlobFolder

ROUNDS = 25
SIZE = 256 * 1024
WRITERS = 2


def content(round_number: int) -> bytes:
    return bytes([round_number % 251]) * SIZE


def digest_of(data: bytes) -> str:
    return blake3.blake3(data).hexdigest()


def write_rounds(root: str, barrier: Barrier, results: multiprocessing.Queue[list[bool]]) -> None:
    """One writer process: every round, the same bytes as the other writer, committed at the same moment."""
    folder = BlobFolder(Path(root))
    created = []
    for number in range(ROUNDS):
        data = content(number)
        upload = folder.start_upload()
        for start in range(0, SIZE, 16 * 1024):
            upload.write(data[start : start + 16 * 1024])
        digest = upload.finish()
        barrier.wait(30)
        created.append(folder.commit(upload, digest))
    results.put(created)


def test_two_processes_writing_the_same_blobs(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    folder = BlobFolder(root)
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(WRITERS)
    results: multiprocessing.Queue[list[bool]] = context.Queue()
    writers = [
        context.Process(target=write_rounds, args=(str(root), barrier, results)) for _ in range(WRITERS)
    ]
    wanted = {digest_of(content(number)): content(number) for number in range(ROUNDS)}
    seen_partial: list[str] = []
    done = threading.Event()

    def read_while_they_write() -> None:
        while not done.is_set():
            for digest, data in wanted.items():
                path = folder.path(digest)
                try:
                    found = path.read_bytes()
                except FileNotFoundError:
                    continue
                if found != data:
                    seen_partial.append(digest)

    reader = threading.Thread(target=read_while_they_write)
    reader.start()
    try:
        for writer in writers:
            writer.start()
        created = [results.get(timeout=120) for _ in writers]
        for writer in writers:
            writer.join(30)
            assert writer.exitcode == 0
    finally:
        done.set()
        reader.join()

    assert seen_partial == []
    for number in range(ROUNDS):  # exactly one writer created each blob; the other dropped its copy
        assert sum(rounds[number] for rounds in created) == 1, number
    for digest, data in wanted.items():
        assert folder.path(digest).read_bytes() == data
        assert digest_of(folder.path(digest).read_bytes()) == digest
    assert [entry.name for entry in root.iterdir() if entry.name.startswith(PARTIAL_PREFIX)] == []
    assert sorted(path.name for path in root.rglob("*") if path.is_file()) == sorted(wanted)
